"""Honest clocks, equal request sets and the run's utilisation figures (docs/methodology.md)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.loggers.local import NoLogger
from harness.run import run
from policies.static import StaticPolicy
from tests.conftest import make_engine, make_specs, run_to_completion

CPU = ("engine=cpu", "model=tiny", "engine.progress=false", "logger=none")


class SlowStartLogger(NoLogger):
    """A logger whose start-up takes as long as W&B's can (a second and more)."""

    def __init__(self, print_table: bool = False, delay_s: float = 0.6) -> None:
        super().__init__(print_table)
        self.delay_s = delay_s

    def start(self, cfg, resolved, output_dir) -> None:
        time.sleep(self.delay_s)
        super().start(cfg, resolved, output_dir)


def _isolated_specs(n: int = 4, gap_s: float = 0.4):
    return make_specs([300] * n, [6] * n, vocab_size=2048, arrivals=[i * gap_s for i in range(n)])


def test_an_isolated_requests_gaps_each_match_its_steps_duration(compose_cfg):
    """Default CPU wall clock, asynchronous scheduling on (the default): a request alone in the
    engine computes one token per step, and each token is stamped at the end of the step that
    computed it, not after the next step has run; so each gap is one step's span."""
    cfg = compose_cfg(*CPU, "policy=fcfs")
    assert cfg.engine.async_scheduling  # the default the bug hid behind
    specs = _isolated_specs()
    result = run(cfg, None, specs=specs)
    steps = result.steps.sort_values("step")
    starts, ends = steps["start_s"].to_numpy(), (steps["start_s"] + steps["duration_s"]).to_numpy()
    requests = result.requests.set_index("request_id")
    for spec in specs:
        times = np.asarray(requests.loc[spec.request_id, "token_times_s"])
        assert len(times) == 6
        first = int(np.searchsorted(starts, spec.arrival_s))  # its prefill step
        mine = ends[first : first + 6]  # prefill, then 5 decodes, nothing else in the engine
        assert np.allclose(times, mine, rtol=0, atol=1e-6), (times, mine)
        assert (steps["num_scheduled_seqs"].to_numpy()[first : first + 6] == 1).all()
        assert np.allclose(np.diff(times), np.diff(mine), rtol=0, atol=1e-6)


def test_logger_start_up_is_not_inside_any_latency(compose_cfg):
    target = f"logger._target_={__name__}.SlowStartLogger"
    cfg = compose_cfg(*CPU, "policy=fcfs", target)
    result = run(cfg, None, specs=_isolated_specs(3))
    assert result.summary["ttft_s"]["p99"] < 0.3  # the 0.6 s start-up is not in it


def test_wandb_start_up_leaves_a_virtual_run_unchanged(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    common = (*CPU[:-1], "engine.clock=virtual", "workload.num_requests=12", "policy=fcfs")
    local = run(compose_cfg(*common, "logger=local"), tmp_path / "local").summary
    wandb = run(compose_cfg(*common, "logger=wandb"), tmp_path / "wandb").summary
    assert local == wandb


@pytest.mark.parametrize(
    "policy", ["fcfs", "prefill_priority", "decode_priority", "static", "chunked_prefill"]
)
def test_every_policy_serves_prompts_up_to_max_model_len_at_the_default_budget(compose_cfg, policy):
    """Prompts longer than the continuous-batching default of 2048 tokens but within
    max_model_len: every policy serves every one of them."""
    cfg = compose_cfg(
        *CPU, f"policy={policy}", "engine.max_model_len=2200", "workload.num_requests=3",
        "workload.arrival.rate=50", "workload.prompt_len.kind=uniform",
        "+workload.prompt_len.min=2060", "workload.prompt_len.max=2190",
        "workload.output_len.min=2", "workload.output_len.max=6",
    )  # fmt: skip
    s = run(cfg, None).summary
    assert (s["num_finished"], s["num_rejected"]) == (3, 0), s


def test_an_explicit_budget_is_honoured_and_a_longer_whole_prompt_runs_alone(compose_cfg):
    cfg = compose_cfg(
        *CPU, "policy=fcfs", "budget.max_num_batched_tokens=256",
        "workload.num_requests=12", "workload.arrival.rate=100",
        "workload.prompt_len.max=600", "workload.output_len.min=2", "workload.output_len.max=8",
    )  # fmt: skip
    result = run(cfg, None)
    s, steps = result.summary, result.steps
    assert s["num_finished"] == 12 and s["num_rejected"] == 0
    tokens = steps["num_prefill_tokens"] + steps["num_decode_tokens"]
    over = steps[tokens > 256]
    assert len(over) > 0 and (over["num_scheduled_seqs"] == 1).all()
    assert s["num_oversized_steps"] == len(over)


def test_static_runs_eight_simultaneous_300_token_prompts_as_one_batch():
    """8 x 300 padded prompt tokens exceed a 2048-token continuous-batching budget; a static
    engine runs its padded batch in one pass all the same."""
    engine = make_engine(
        StaticPolicy(batch_size=8), num_gpu_blocks=256, max_num_batched_tokens=2048,
        max_num_seqs=16,
    )  # fmt: skip
    specs = make_specs([300] * 8, [5] * 8)
    run_to_completion(engine, specs)
    steps = engine.recorder.steps_frame()
    assert steps["num_prefill_tokens"].iloc[0] == 2400
    assert steps["num_scheduled_seqs"].iloc[0] == 8
    assert len(steps) == 5  # one prefill pass, then 4 decode steps of the whole batch
    assert all(r.status.value == "finished" for r in engine.requests.values())


def test_summary_reports_utilisation_and_kv_pressure(compose_cfg):
    cfg = compose_cfg(
        *CPU, "policy=static", "workload.num_requests=8", "workload.prompt_len.max=160",
        "workload.output_len.max=24", "budget.num_gpu_blocks=300",
    )  # fmt: skip
    result = run(cfg, None)
    s, steps = result.summary, result.steps
    computed = steps["num_prefill_tokens"] + steps["num_decode_tokens"]
    assert s["useful_token_share"] == pytest.approx(
        computed.sum() / (computed.sum() + steps["num_padding_tokens"].sum())
    )
    assert 0 < s["useful_token_share"] < 1  # static pads
    assert s["busy_share"] == pytest.approx(steps["device_time_s"].sum() / s["duration_s"])
    assert 0 < s["busy_share"] <= 1
    usage = steps["num_kv_blocks_used"] / 300
    assert s["kv_usage_peak"] == pytest.approx(usage.max())
    assert 0 < s["kv_usage_mean"] <= s["kv_usage_peak"] <= 1
    assert len(s["workload_fingerprint"]) == 16


def test_a_virtual_step_of_zero_cost_records_zero_device_time(compose_cfg):
    """Under the virtual clock a step's device time is its modelled cost, even when that is 0
    (the measured cpu time must not stand in for it)."""
    zero = [f"engine.virtual_cost.{k}=0" for k in ("step_s", "per_token_s", "per_context_token_s")]
    cfg = compose_cfg(*CPU, "policy=fcfs", "engine.clock=virtual", "workload.num_requests=3", *zero)
    steps = run(cfg, None).steps
    assert len(steps) > 0 and (steps["device_time_s"] == 0).all()
