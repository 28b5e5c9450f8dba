"""Shared building blocks: victim order, preemption kind, swap-in before admissions."""

from __future__ import annotations

from policies.base import Preemption
from policies.batching import StepPlan, pick_victim, schedule_running, whole
from tests.policies.conftest import make_decode, make_view


def test_victim_is_lowest_priority_then_latest_arrival():
    a = make_decode("a", arrival_s=0.0, priority=1)
    b = make_decode("b", arrival_s=1.0, priority=1)
    c = make_decode("c", arrival_s=0.5, priority=0)
    assert pick_victim([a, b, c]).request_id == "c"
    assert pick_victim([a, b]).request_id == "b"


def test_swap_falls_back_to_recompute_when_cpu_pool_is_full():
    a, b = make_decode("a", num_blocks=3), make_decode("b", num_blocks=3)
    plan = StepPlan(make_view(running=[a, b], num_free_cpu_blocks=4), Preemption.SWAP)
    assert plan.preempt_request(a) is Preemption.SWAP
    assert plan.preempt_request(b) is Preemption.RECOMPUTE
    assert plan.num_free_cpu_blocks == 1


def test_running_request_without_victims_preempts_itself():
    # 'a' needs a new block (32 computed tokens fill 2 blocks exactly), none is free.
    a = make_decode("a", num_prompt_tokens=29, outputs=4)
    plan = StepPlan(make_view(running=[a], num_free_blocks=0))
    schedule_running(plan, [a], whole)
    assert plan.preempt == {"a": Preemption.RECOMPUTE} and not plan.scheduled


def test_starving_requests_are_victims_only_when_nothing_else_is_left():
    old = make_decode("old", arrival_s=0.0)
    starving = make_decode("starving", arrival_s=9.0, num_preemptions=8)
    assert pick_victim([old, starving]).request_id == "starving"  # no threshold: latest arrival
    assert pick_victim([old, starving], protect_at=8).request_id == "old"
    assert pick_victim([starving], protect_at=8).request_id == "starving"
