"""engine=sim's two shortcuts change nothing but its speed (docs/simulator.md, "Speed"):

- a step's sizes (`harness.batch.StepShape`, from `step_shape`) instead of a batch of token
  arrays: equal, on every step, to the sizes of the batch `build_batch` lays out;
- a steady decision applied again (`engine.replay_steady_decodes`) instead of asking a policy
  that declares `steady_decodes`: the same requests, token times and step records as asking it.
"""

from __future__ import annotations

import pandas as pd
import pytest

import harness.engine
from harness.batch import StepShape, step_shape
from harness.executors.sim import SimExecutor
from harness.run import run
from policies.base import Decision, Policy
from policies.fcfs import FcfsPolicy

QUIET = ("engine=sim", "engine.progress=false", "logger=none")
# bursty under KV pressure (preemptions, recomputes or swaps), and multi-turn sessions with the
# prefix cache (cached prefixes, evictions): steady decode stretches between arrivals in both
PRESSURE = ("workload=bursty", "workload.num_requests=60", "workload.arrival.rate=30",
            "budget.num_gpu_blocks=160", "budget.num_cpu_blocks=64", "budget.max_num_seqs=32",
            "seed=3")  # fmt: skip
SESSIONS = ("workload=multi_turn", "workload.num_sessions=12", "workload.arrival.rate=4",
            "budget.num_gpu_blocks=400", "budget.max_num_seqs=64", "seed=5")  # fmt: skip
# all at once, long outputs, a cache too small for them all: blocks run out in decode stretches
GROWTH = ("workload=poisson", "workload.num_requests=16", "workload.arrival.rate=1e6",
          "workload.prompt_len.kind=fixed", "+workload.prompt_len.value=40",
          "workload.output_len.kind=fixed", "+workload.output_len.value=200",
          "budget.num_gpu_blocks=150", "budget.num_cpu_blocks=64", "budget.max_num_seqs=16")  # fmt: skip
PROFILES = ("engine.profile=cpu_tiny", "engine.profile=h200_llama3_8b")  # plain; pipelined + load


def _same_run(a, b) -> None:
    pd.testing.assert_frame_equal(a.requests, b.requests, check_exact=True)
    pd.testing.assert_frame_equal(a.steps, b.steps, check_exact=True)
    sa = {k: v for k, v in a.summary.items() if k != "num_steps_replayed"}
    sb = {k: v for k, v in b.summary.items() if k != "num_steps_replayed"}
    assert sa == sb


# the policies that declare `steady_decodes`; decode_priority reserving blocks only for what it
# computes now, so that the KV cache runs out under it too
DECLARING = {"fcfs": ["policy=fcfs"], "chunked_prefill": ["policy=chunked_prefill"],
             "prefill_priority": ["policy=prefill_priority"], "preempt_cpu": ["policy=preempt_cpu"],
             "decode_priority": ["policy=decode_priority", "policy.reserve_full_length=false"]}  # fmt: skip


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("policy", DECLARING)
@pytest.mark.parametrize("workload", [PRESSURE, SESSIONS, GROWTH],
                         ids=["pressure", "sessions", "growth"])  # fmt: skip
def test_replaying_steady_decisions_changes_nothing(compose_cfg, policy, workload, profile):
    args = (*QUIET, profile, *DECLARING[policy], *workload)
    fast = run(compose_cfg(*args), None)
    slow = run(compose_cfg(*args, "engine.replay_steady_decodes=false"), None)
    _same_run(fast, slow)
    assert "num_steps_replayed" not in slow.summary
    # the shortcut is taken (under KV pressure requests wait on most steps: fewer steady ones),
    # and the runs did what they were meant to
    assert fast.summary["num_steps_replayed"] > len(fast.steps) // 10, fast.summary
    assert fast.summary["num_finished"] == len(fast.requests)
    if workload is not SESSIONS:
        assert fast.steps.num_preempted.sum() > 0
    else:
        assert fast.steps.num_cached_tokens.sum() > 0


# the declaring policies' options that bear on a step: swaps, aging, a prefill cap, a token budget
# below the number of running requests (no step is steady then), whole prompts under preempt_cpu
OPTIONS = {
    "fcfs_swap_aging": ["policy=fcfs", "policy.preemption=swap", "policy.max_wait_s=0.5"],
    "chunked_prefill_capped": ["policy=chunked_prefill", "budget.max_num_prefill_tokens=64",
                               "policy.long_prefill_token_threshold=32"],  # fmt: skip
    "chunked_prefill_small_budget": ["policy=chunked_prefill", "budget.max_num_batched_tokens=8"],
    "prefill_priority_swap": ["policy=prefill_priority", "policy.preemption=swap"],
    "preempt_cpu_whole": ["policy=preempt_cpu", "policy.chunked=false"],
    "decode_priority_skip": ["policy=decode_priority", "policy.skip_ahead=true",
                             "policy.reserve_full_length=false", "policy.preemption=swap"],  # fmt: skip
}


@pytest.mark.parametrize("options", OPTIONS)
def test_replaying_changes_nothing_under_the_policies_options(compose_cfg, options):
    args = (*QUIET, "engine.profile=cpu_tiny", *PRESSURE, *OPTIONS[options])
    fast = run(compose_cfg(*args), None)
    slow = run(compose_cfg(*args, "engine.replay_steady_decodes=false"), None)
    _same_run(fast, slow)
    assert fast.summary["num_finished"] == len(fast.requests)


def test_a_real_executor_on_a_virtual_clock_replays_exactly_too(compose_cfg):
    """engine=cpu on the virtual clock: real batches, real tokens, the replay on and off."""
    args = ("engine=cpu", "model=tiny", "engine.clock=virtual", "engine.progress=false",
            "logger=none", "policy=chunked_prefill", "workload=poisson",
            "workload.num_requests=12", "workload.arrival.rate=20", "workload.prompt_len.max=64",
            "workload.output_len.max=24", "budget.num_gpu_blocks=48", "budget.max_num_seqs=8")  # fmt: skip
    fast = run(compose_cfg(*args), None)
    slow = run(compose_cfg(*args, "engine.replay_steady_decodes=false"), None)
    _same_run(fast, slow)
    assert fast.summary["num_steps_replayed"] > 0
    assert all(len(ids) and min(ids) >= 0 for ids in fast.requests.output_ids)  # real tokens


def test_a_policy_that_does_not_declare_it_decides_every_step(compose_cfg, monkeypatch):
    calls = []

    class Counting(FcfsPolicy):  # inherits FcfsPolicy's rule, not its declaration
        def schedule(self, view):
            calls.append(view.now_s)
            return super().schedule(view)

    monkeypatch.setattr("policies.fcfs.FcfsPolicy", Counting)
    result = run(compose_cfg(*QUIET, "policy=fcfs", *PRESSURE), None)
    assert "num_steps_replayed" not in result.summary
    assert len(calls) >= len(result.steps)


def test_a_declaring_policy_is_asked_again_when_the_state_changes(compose_cfg, monkeypatch):
    """Every step the policy was not asked for is a decode of exactly the requests the previous
    decision scheduled, with nothing waiting or swapped when it started."""
    decisions: list[tuple[float, Decision]] = []
    original = FcfsPolicy.schedule

    def schedule(self, view):
        d = original(self, view)
        decisions.append((view.now_s, d, bool(view.waiting or view.swapped)))
        return d

    monkeypatch.setattr(FcfsPolicy, "schedule", schedule)
    result = run(compose_cfg(*QUIET, "policy=fcfs", *PRESSURE), None)
    asked = {s for s, _, _ in decisions}
    replayed = result.steps[~result.steps.start_s.isin(asked)]
    assert len(replayed) == result.summary["num_steps_replayed"] > 0
    assert (replayed.num_decode_tokens == replayed.num_scheduled_seqs).all()
    assert (replayed.num_prefill_tokens == 0).all() and (replayed.num_waiting == 0).all()
    assert (replayed.num_preempted == 0).all() and (replayed.num_swapped == 0).all()
    assert issubclass(FcfsPolicy, Policy) and FcfsPolicy.__dict__["steady_decodes"]


@pytest.mark.parametrize("policy", ["fcfs", "chunked_prefill", "static", "preempt_cpu"])
def test_a_steps_shape_is_the_shape_of_its_batch(compose_cfg, monkeypatch, policy):
    """With the batch built (as a real executor needs it), each step's `step_shape` equals the
    sizes of the batch; and the run is the same as one given only shapes."""
    built = harness.engine.build_batch
    checked = []

    def build_and_check(scheduled, padding, num_decode, *args):
        batch = built(scheduled, padding, num_decode, *args)
        assert step_shape(scheduled, padding, num_decode).sizes() == StepShape.of(batch).sizes()
        checked.append(batch.num_tokens)
        return batch

    # a small budget: prompts in several chunks, most of which sample nothing
    args = (*QUIET, "engine.profile=h200_llama3_8b", f"policy={policy}", *PRESSURE,
            "budget.max_num_batched_tokens=384")  # fmt: skip
    shapes = run(compose_cfg(*args), None)
    monkeypatch.setattr(SimExecutor, "needs_batch", True)
    monkeypatch.setattr(harness.engine, "build_batch", build_and_check)
    batches = run(compose_cfg(*args), None)
    assert len(checked) == len(batches.steps)
    _same_run(shapes, batches)
    if policy == "static":
        assert batches.steps.num_padding_tokens.sum() > 0
    assert batches.steps.num_prefill_tokens.sum() > 0 and batches.steps.num_decode_tokens.sum() > 0


def test_every_declaring_policy_is_held_to_its_declaration_here():
    """A policy that declares `steady_decodes` must be in DECLARING (the equality test above)."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from harness.config import CONF_DIR

    declaring = set()
    for path in sorted((CONF_DIR / "policy").glob("*.yaml")):
        cls = get_class(OmegaConf.load(path)["_target_"])
        if cls.__dict__.get("steady_decodes", False):
            declaring.add(path.stem)
    assert declaring == set(DECLARING)
