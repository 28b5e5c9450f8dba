"""Priority: highest priority first; a waiting request preempts running ones of lower priority."""

from __future__ import annotations

import dataclasses

from policies.base import Preemption
from policies.fcfs import FcfsPolicy
from policies.priority import PriorityPolicy
from tests.policies.conftest import make_decode, make_request_view, make_view, tiny_specs


def test_waiting_admitted_highest_priority_first():
    low = make_request_view("low", 0.0, 100)
    high = make_request_view("high", 1.0, 100, priority=1)
    view = make_view(waiting=[low, high], max_num_batched_tokens=150)
    assert PriorityPolicy().schedule(view).num_scheduled_tokens == {"high": 100}
    assert FcfsPolicy().schedule(view).num_scheduled_tokens == {"low": 100}


def test_a_blocked_waiting_request_preempts_the_fewest_lower_priority_runners():
    # Block size 16: each decode holds 2 blocks and needs a 3rd; 'high' needs 2; 2 are free.
    # Decoding both leaves none for 'high': preempting the latest low arrival is enough.
    lo1 = make_decode("lo1", 0.0, num_prompt_tokens=28, outputs=5)
    lo2 = make_decode("lo2", 1.0, num_prompt_tokens=28, outputs=5)
    high = make_request_view("high", 2.0, 32, priority=1)
    view = make_view(running=[lo1, lo2], waiting=[high], num_free_blocks=2)
    d = PriorityPolicy().schedule(view)
    assert d.preempt == {"lo2": Preemption.RECOMPUTE}
    assert d.num_scheduled_tokens == {"lo1": 1, "high": 32}
    assert PriorityPolicy(preemption="swap").schedule(view).preempt == {"lo2": Preemption.SWAP}
    # Without the rule, or against an equal priority, 'high' waits and nobody is preempted.
    assert not PriorityPolicy(preempt_for_waiting=False).schedule(view).preempt
    equal = make_view(running=[lo1, lo2], waiting=[dataclasses.replace(high, priority=0)],
                      num_free_blocks=2)  # fmt: skip
    assert PriorityPolicy().schedule(equal).num_scheduled_tokens == {"lo1": 1, "lo2": 1}


def test_as_many_victims_as_the_blocks_need_and_no_more():
    # Four low decodes of 2 blocks each (none needs a new one); no block is free; 'high' needs 5.
    low = [make_decode(f"lo{i}", float(i), num_prompt_tokens=20, outputs=5) for i in range(4)]
    high = make_request_view("high", 9.0, 80, priority=1)
    d = PriorityPolicy().schedule(make_view(running=low, waiting=[high], num_free_blocks=0))
    assert set(d.preempt) == {"lo3", "lo2", "lo1"}  # latest arrivals first, 6 blocks
    assert d.num_scheduled_tokens == {"lo0": 1, "high": 80}


def test_victims_lowest_priority_first_and_only_if_they_make_room():
    mid = make_decode("mid", 1.0, num_prompt_tokens=28, outputs=5, priority=1)
    low = make_decode("low", 0.0, num_prompt_tokens=28, outputs=5)
    high = make_request_view("high", 2.0, 32, priority=2)
    d = PriorityPolicy().schedule(make_view(running=[low, mid], waiting=[high], num_free_blocks=2))
    assert d.preempt == {"low": Preemption.RECOMPUTE}  # the earlier arrival, but lower priority
    # 'high' needs 7 blocks: preempting both lower ones frees 4 + 2 free: not enough, so none.
    huge = make_request_view("huge", 2.0, 112, priority=2)
    view = make_view(running=[low, mid], waiting=[huge], num_free_blocks=2)
    assert PriorityPolicy().schedule(view).preempt == {}


def test_a_swapped_request_of_higher_rank_comes_back_before_any_priority_preemption():
    low = make_decode("low", 0.0, num_prompt_tokens=28, outputs=5)
    swapped = make_decode("s", 0.5, priority=2, num_blocks=3)
    high = make_request_view("high", 2.0, 32, priority=1)
    view = make_view(running=[low], swapped=[swapped], waiting=[high], num_free_blocks=2)
    d = PriorityPolicy(preemption="swap").schedule(view)
    assert d.preempt == {} and d.swap_in == ()


def test_a_high_priority_arrival_preempts_when_the_kv_cache_is_full(scenario):
    # 20 blocks of 16. Two low-priority requests (100 + 40 tokens: 7 blocks now, 9 at the end)
    # fill 14; 'r2' (high priority, 100-token prompt: 7 blocks) arrives while they decode.
    # fcfs makes it wait for a low one to finish; priority preempts the latest low one at once.
    specs = tiny_specs([100, 100, 100], [40, 40, 8], arrivals=[0.0, 0.0, 0.01])
    specs[2] = dataclasses.replace(specs[2], priority=1)
    kw = dict(num_gpu_blocks=20, max_num_batched_tokens=256)
    _, fcfs, _ = scenario(FcfsPolicy(), specs, **kw)
    _, prio, steps = scenario(PriorityPolicy(), specs, **kw)
    assert fcfs.loc["r2", "first_scheduled_s"] > fcfs.loc[["r0", "r1"], "finish_s"].min()
    assert prio.loc["r2", "first_scheduled_s"] < prio.loc[["r0", "r1"], "finish_s"].min()
    assert prio.num_preemptions.to_dict() == {"r0": 0, "r1": 1, "r2": 0}
    assert prio.loc["r2", "ttft_s"] < fcfs.loc["r2", "ttft_s"] / 4
    assert (prio.status == "finished").all()
    assert prio.output_ids.to_dict() == fcfs.output_ids.to_dict()  # same tokens, other order
    assert steps.num_kv_blocks_used.max() <= 20
