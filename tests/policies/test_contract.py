"""Contract: every `conf/policy/*.yaml`, run through the real config and engine on one workload
with a deliberately small KV cache, keeps every budget, leaks no block, finishes every request,
and generates the same greedy tokens as `fcfs` (scheduling must not change what is computed).

The wall clock is replaced by a manual one (1 ms per read) so that each run's batches, and so
its floating-point sums, are reproducible; the tiny preset's weights get std 0.1 so that greedy
choices are far from ties.
"""

from __future__ import annotations

import functools

import pytest
import torch

import harness.run
from harness.engine import Engine
from harness.models.llama import init_random_weights
from harness.models.loader import build_model
from tests.conftest import CONF_DIR, ManualClock

POLICIES = sorted(p.stem for p in (CONF_DIR / "policy").glob("*.yaml"))
VARIANTS = [(name, ()) for name in POLICIES] + [
    ("fcfs", ("policy.preemption=swap",)),
    ("prefill_priority", ("policy.preemption=swap",)),
    ("preempt_cpu", ("policy.chunked=false", "budget.num_cpu_blocks=4")),
    # the pipelined engine (default) feeds decode inputs from the device; the sync one does not
    ("fcfs", ("engine.async_scheduling=false",)),
    ("chunked_prefill", ("engine.async_scheduling=false",)),
]
BUDGET = dict(max_num_batched_tokens=256, max_num_seqs=6, num_gpu_blocks=14, num_cpu_blocks=32)
OVERRIDES = [
    "engine=cpu", "model=tiny", "engine.dtype=float32", "logger=none", "engine.progress=false",
    "workload=poisson", "workload.num_requests=14", "workload.arrival.rate=150",
    "workload.prompt_len.mean=48", "workload.prompt_len.max=150",
    "workload.output_len.min=4", "workload.output_len.max=24",
    *(f"budget.{k}={v}" for k, v in BUDGET.items()),
]  # fmt: skip


@functools.cache
def _model_std01():
    """The tiny preset with larger weights (std 0.1), so that greedy tokens differ clearly."""
    model = build_model("tiny", None, torch.device("cpu"), torch.float32, seed=0)
    init_random_weights(model, 0, std=0.1)
    return model


@functools.cache
def _run(policy: str, extra: tuple[str, ...]):
    """One run of `policy` (cached: fcfs is the reference of every other)."""
    from hydra import compose, initialize_config_dir

    from harness.config import register

    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[*OVERRIDES, f"policy={policy}", *extra])
    engines: list[Engine] = []
    step = Engine.step

    def checked_step(self: Engine) -> bool:
        if not engines:
            engines.append(self)
        progressed = step(self)
        self.kv.check_invariants()
        return progressed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Engine, "step", checked_step)  # checks the KV invariants after every step
        result = harness.run.run(cfg, None, model=_model_std01(), clock=ManualClock(1e-3))
    return result, engines[0]


@pytest.mark.parametrize("policy, extra", VARIANTS, ids=[" ".join((p, *e)) for p, e in VARIANTS])
def test_policy_contract(policy, extra):
    result, engine = _run(policy, extra)
    summary, steps, requests = result.summary, result.steps, result.requests
    assert summary["complete"] and summary["num_finished"] == summary["num_requests"]
    num_tokens = steps.num_prefill_tokens + steps.num_decode_tokens + steps.num_padding_tokens
    assert num_tokens.max() <= BUDGET["max_num_batched_tokens"]
    assert steps.num_running.max() <= BUDGET["max_num_seqs"]
    assert steps.num_kv_blocks_used.max() <= BUDGET["num_gpu_blocks"]
    kv = engine.kv
    assert kv.gpu.num_free_blocks == kv.gpu.num_blocks and not kv.block_tables  # nothing leaked
    assert kv.cpu.num_free_blocks == kv.cpu.num_blocks and not kv.cpu_block_tables
    reference, _ = _run("fcfs", ())
    assert summary_preempted(reference) > 0, "the KV cache should be small enough to preempt"
    ids = requests.set_index("request_id").output_ids
    expected = reference.requests.set_index("request_id").output_ids
    assert ids.to_dict() == expected.to_dict()


def summary_preempted(result) -> int:
    return int(result.summary["num_preemptions"])
