"""Preemption to CPU: victims swap out under KV pressure, come back first, nothing recomputed."""

from __future__ import annotations

from policies.base import Preemption
from policies.fcfs import FcfsPolicy
from policies.preempt_cpu import PreemptCpuPolicy
from tests.policies.conftest import (
    make_decode,
    make_request_view,
    make_view,
    recording,
    tiny_specs,
)


def test_victims_lowest_priority_then_latest_arrival_swap_out():
    running = [
        make_decode("hi_old", 0.0, priority=1, num_prompt_tokens=29, outputs=4),
        make_decode("hi_new", 2.0, priority=1, num_prompt_tokens=29, outputs=4),
        make_decode("lo", 1.0, priority=0, num_prompt_tokens=29, outputs=4),
    ]
    d = PreemptCpuPolicy().schedule(make_view(running=running, num_free_blocks=0))
    assert d.preempt == {"lo": Preemption.SWAP}  # not the latest arrival: the lowest priority
    assert d.num_scheduled_tokens == {"hi_old": 1, "hi_new": 1}


def test_full_cpu_pool_falls_back_to_recompute():
    running = [make_decode(r, t, num_prompt_tokens=29, outputs=4) for r, t in (("a", 0), ("b", 1))]
    d = PreemptCpuPolicy().schedule(
        make_view(running=running, num_free_blocks=0, num_free_cpu_blocks=1)
    )
    assert d.preempt == {"b": Preemption.RECOMPUTE}


def test_swapped_return_in_arrival_order_before_admissions():
    swapped = [make_decode("s2", 2.0, num_blocks=3), make_decode("s1", 1.0, num_blocks=3)]
    waiting = [make_request_view("w", 0.5)]
    d = PreemptCpuPolicy().schedule(make_view(swapped=swapped, waiting=waiting, num_free_blocks=4))
    assert d.swap_in == ("s1",) and d.num_scheduled_tokens == {"s1": 1}


def test_no_swap_in_when_the_step_has_no_token_left_for_it():
    # The running prefill's chunk takes the 63 tokens the decode leaves: the swapped decode 's'
    # stays out (back, it would hold blocks and a seat and compute nothing), and so does the
    # admission behind it.
    p = make_request_view("p", 0.0, num_prompt_tokens=300, num_computed_tokens=64)
    s = make_decode("s", 0.5, num_blocks=3)
    w = make_request_view("w", 2.0, 8)
    running = [make_decode("a", 1.0), p]
    view = make_view(running=running, swapped=[s], waiting=[w], max_num_batched_tokens=64)
    d = PreemptCpuPolicy().schedule(view)
    assert d.swap_in == () and d.num_scheduled_tokens == {"a": 1, "p": 63}
    # A swapped prefill coming back first takes the budget: the decode behind it waits.
    q = make_request_view("q", 0.0, num_prompt_tokens=300, num_computed_tokens=64)
    d = PreemptCpuPolicy().schedule(make_view(swapped=[q, s], max_num_batched_tokens=64))
    assert d.swap_in == ("q",) and d.num_scheduled_tokens == {"q": 64}


def _pressure_specs():
    # Up to 8 blocks of 4 tokens each, 5 requests: 40 blocks wanted, 16 on the "GPU".
    return tiny_specs([12, 14, 16, 12, 10], [20] * 5, arrivals=[0, 0, 0, 0.005, 0.01])


PRESSURE = dict(block_size=4, num_gpu_blocks=16)


def test_swaps_under_pressure_with_zero_recomputation(scenario):
    specs = _pressure_specs()
    policy = recording(PreemptCpuPolicy())
    _, requests, steps = scenario(policy, specs, **PRESSURE)
    assert steps.num_swapped_out_blocks.sum() > 0
    for _, d in policy.log:  # a request swapped in computes in the step it returns
        assert set(d.swap_in) <= d.num_scheduled_tokens.keys()
    assert steps.num_swapped_in_blocks.sum() == steps.num_swapped_out_blocks.sum()
    assert (requests.num_preemptions == requests.num_swaps).all()  # every preemption a swap
    assert steps.num_prefill_tokens.sum() == sum(s.num_prompt_tokens for s in specs)
    assert (requests.status == "finished").all()
    assert steps.swap_time_s.sum() > 0
    _, reference, _ = scenario(FcfsPolicy(), specs, block_size=4)
    assert requests.output_ids.to_list() == reference.output_ids.to_list()


def test_small_cpu_pool_falls_back_to_recompute_in_the_engine(scenario):
    specs = _pressure_specs()
    _, requests, steps = scenario(PreemptCpuPolicy(), specs, **PRESSURE, num_cpu_blocks=4)
    num_recomputed = (requests.num_preemptions - requests.num_swaps).sum()
    assert num_recomputed > 0
    assert steps.num_prefill_tokens.sum() > sum(s.num_prompt_tokens for s in specs)
    assert (requests.status == "finished").all()
