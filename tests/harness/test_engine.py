"""The engine validates every decision, rejects impossible requests, and records each step."""

from __future__ import annotations

import pytest

from harness.batch import PLACEHOLDER_TOKEN
from harness.engine import DecisionError, Limits
from harness.request import RequestStatus
from harness.run import run
from policies.base import Decision, Policy, Preemption, SchedulerView
from policies.fcfs import FcfsPolicy
from tests.conftest import CONF_DIR, make_engine, make_specs, run_to_completion


class Scripted(Policy):
    """Returns whatever decision the test hands it."""

    chunks_prefills = True

    def __init__(self, decide) -> None:
        self.decide = decide

    def schedule(self, view: SchedulerView) -> Decision:
        return self.decide(view)


def _engine_with(decide, **kw):
    engine = make_engine(Scripted(decide), **kw)
    for s in make_specs([20, 20, 20], [4, 4, 4]):
        engine.add_request(s)
    return engine


@pytest.mark.parametrize(
    "decide, bound",
    [
        (lambda v: Decision({"r0": 20, "r1": 20}), "max_num_batched_tokens"),
        (lambda v: Decision({"r0": 1, "r1": 1, "r2": 1}), "max_num_seqs"),
        (lambda v: Decision({"r0": 21}), "token count"),
        (lambda v: Decision({"nope": 1}), "request state"),
        (lambda v: Decision({"r0": 20, "r1": 2}), "KV blocks"),
        (lambda v: Decision({}, preempt={"r0": Preemption.SWAP}), "preemption"),
        (lambda v: Decision({}, swap_in=("r0",)), "swap_in"),
    ],
)
def test_violating_decision_names_policy_and_bound(decide, bound):
    engine = _engine_with(decide, max_num_batched_tokens=32, max_num_seqs=2, num_gpu_blocks=2)
    with pytest.raises(DecisionError, match=f"policy Scripted broke .*{bound}"):
        engine.step()
    # A rejected decision changes nothing.
    assert all(r.status is RequestStatus.WAITING for r in engine.requests.values())
    assert engine.kv.gpu.num_free_blocks == 2


def test_requests_that_can_never_fit_are_rejected_at_arrival():
    """Only what no policy could serve is rejected: a sequence beyond the KV cache. A whole
    prompt longer than the step budget is served (alone in its step), not rejected."""
    engine = make_engine(FcfsPolicy(), num_gpu_blocks=8, block_size=16, max_num_batched_tokens=64)
    too_long_for_budget, too_big_for_cache, fine = make_specs([70, 30, 10], [10, 120, 5])
    for spec in (too_long_for_budget, too_big_for_cache, fine):
        engine.add_request(spec)
    r = engine.requests
    assert r["r0"].status is RequestStatus.WAITING
    assert r["r1"].status is RequestStatus.REJECTED and r["r1"].reason.startswith("kv_capacity:")
    assert r["r2"].status is RequestStatus.WAITING
    while engine.has_unfinished:
        assert engine.step()
    assert r["r0"].status is RequestStatus.FINISHED and r["r2"].status is RequestStatus.FINISHED
    steps = engine.recorder.steps_frame()
    alone = steps[steps["num_prefill_tokens"] == 70]
    assert len(alone) == 1 and alone["num_scheduled_seqs"].iloc[0] == 1


def test_fcfs_preempts_latest_arrival_by_recompute_and_still_finishes():
    # 6 blocks of 4 tokens: three requests growing to 4 blocks each cannot all stay resident.
    engine = make_engine(FcfsPolicy(), num_gpu_blocks=6, block_size=4, max_num_seqs=6)
    specs = make_specs([6, 6, 6], [10, 10, 10], arrivals=[0.0, 0.1, 0.2])
    run_to_completion(engine, specs)
    reqs = engine.requests
    assert all(r.status is RequestStatus.FINISHED for r in reqs.values())
    assert reqs["r0"].num_preemptions == 0  # the oldest is never the victim
    assert reqs["r2"].num_preemptions > 0
    steps = engine.recorder.steps_frame()
    assert steps["num_preempted"].sum() == sum(r.num_preemptions for r in reqs.values())
    assert engine.kv.gpu.num_free_blocks == 6


def test_token_times_and_step_records():
    engine = make_engine(FcfsPolicy())
    specs = make_specs([8, 30], [5, 3])
    run_to_completion(engine, specs)
    for spec in specs:
        r = engine.requests[spec.request_id]
        assert len(r.output_ids) == len(r.token_times_s) == spec.max_output_tokens
        assert r.token_times_s == sorted(r.token_times_s)
        assert r.first_scheduled_s <= r.token_times_s[0] == min(r.token_times_s)
    steps = engine.recorder.steps_frame()
    assert steps["num_prefill_tokens"].sum() == 38
    assert steps["num_decode_tokens"].sum() == (5 - 1) + (3 - 1)
    assert (steps["num_prefill_tokens"] + steps["num_decode_tokens"] <= 512).all()


def test_swap_preemption_records_blocks_and_time_per_step_and_request():
    engine = make_engine(FcfsPolicy(preemption="swap"), num_gpu_blocks=6, num_cpu_blocks=16,
                         block_size=4, max_num_seqs=6)  # fmt: skip
    run_to_completion(engine, make_specs([6, 6, 6], [10, 10, 10], arrivals=[0.0, 0.1, 0.2]))
    steps = engine.recorder.steps_frame()
    reqs = list(engine.requests.values())
    assert all(r.status is RequestStatus.FINISHED for r in reqs)
    assert sum(r.num_swaps for r in reqs) > 0
    assert steps.num_swapped_out_blocks.sum() == steps.num_swapped_in_blocks.sum() > 0
    assert sum(r.swap_time_s for r in reqs) == pytest.approx(steps.swap_time_s.sum())
    assert all((r.swap_time_s > 0) == (r.num_swaps > 0) for r in reqs)
    assert engine.kv.cpu.num_free_blocks == 16


def test_greedy_sampling_of_bf16_logits_matches_their_float32_argmax():
    # The runner samples greedily from logits in the model's dtype (no float copy): the argmax
    # must be the one of the same values in float32, ties to the lowest index included.
    import torch

    from harness.executors.model_runner import sample

    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 1000, generator=gen) * 4).to(torch.bfloat16)
    logits[3, [10, 20]] = logits[3].max() + 1  # a tie
    got = sample(logits, 0.0, 1.0, gen)
    assert torch.equal(got, logits.float().argmax(dim=-1))
    assert got[3] == 10
    # sampling proper works in float32 and stays in range
    drawn = sample(logits, 0.7, 0.9, gen)
    assert drawn.dtype == torch.long and bool(((drawn >= 0) & (drawn < 1000)).all())


def test_a_request_is_finished_exactly_when_its_last_token_is_on_the_host():
    """Pipelined, a step's tokens reach the host one step later: until then its requests are
    not finished (their last output is a placeholder), and once finished nothing is pending."""
    engine = make_engine(FcfsPolicy(), num_gpu_blocks=32, max_num_seqs=4)
    engine.pipelined = True  # forced: the cpu runner would turn it off (it cannot overlap)
    for spec in make_specs([5, 9, 3], [3, 1, 4]):
        engine.add_request(spec)
    seen_pending_finish = False
    while engine.has_unfinished:
        assert engine.step()
        for r in engine.requests.values():
            pending = PLACEHOLDER_TOKEN in r.output_ids
            done = r.num_output_tokens == r.spec.max_output_tokens
            assert (r.status is RequestStatus.FINISHED) == (done and not pending)
            seen_pending_finish |= done and pending
    assert seen_pending_finish  # the pipelined window was exercised
    assert all(r.status is RequestStatus.FINISHED for r in engine.requests.values())


def test_a_decision_over_the_prefill_budget_names_it():
    engine = make_engine(Scripted(lambda v: Decision({"r0": 10, "r1": 10})), num_gpu_blocks=16)
    engine.limits = Limits(64, 4, 1024, None, max_num_prefill_tokens=16)
    for s in make_specs([10, 10], [2, 2]):
        engine.add_request(s)
    with pytest.raises(DecisionError, match="broke budget.max_num_prefill_tokens.*20 prefill"):
        engine.step()


BOUNDED = sorted(p.stem for p in (CONF_DIR / "policy").glob("*.yaml") if p.stem != "static")


@pytest.mark.parametrize("policy", BOUNDED)
def test_every_policy_keeps_the_prefill_budget(compose_cfg, policy):
    """budget.max_num_prefill_tokens=48 under a 256-token step: no step computes more than 48
    prompt tokens, with every prompt (up to 40 tokens) within it; the engine would stop the run
    on a decision over it. (Static batching is bound by memory only: its padded pass is one.)"""
    cfg = compose_cfg(
        "engine=cpu", "model=tiny", "engine.progress=false", "logger=none", f"policy={policy}",
        "engine.clock=virtual", "workload.num_requests=10", "workload.arrival.rate=500",
        "workload.prompt_len.max=40", "workload.output_len.min=2", "workload.output_len.max=6",
        "budget.max_num_batched_tokens=256", "budget.max_num_prefill_tokens=48",
    )  # fmt: skip
    result = run(cfg, None)
    assert result.summary["complete"] and result.summary["num_finished"] == 10
    assert result.steps["num_prefill_tokens"].max() <= 48
