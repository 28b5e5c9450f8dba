"""Prefill priority: an admissible prompt makes a prefill-only step; decodes stall."""

from __future__ import annotations

import pytest

from policies.prefill_priority import PrefillPriorityPolicy
from tests.policies.conftest import make_decode, make_request_view, make_view


def test_admissible_prompt_stalls_running_decodes():
    view = make_view(running=[make_decode("a"), make_decode("b")], waiting=[make_request_view("c")])
    assert PrefillPriorityPolicy().schedule(view).num_scheduled_tokens == {"c": 32}


def test_decode_step_when_no_prompt_fits():
    # c's 600 tokens need 38 KV blocks; 10 are free
    waiting = [make_request_view("c", num_prompt_tokens=600)]
    view = make_view(running=[make_decode("a")], waiting=waiting, num_free_blocks=10)
    assert PrefillPriorityPolicy().schedule(view).num_scheduled_tokens == {"a": 1}


def test_a_prompt_longer_than_the_budget_is_a_prefill_step_of_its_own():
    waiting = [make_request_view("c", num_prompt_tokens=600)]
    view = make_view(running=[make_decode("a")], waiting=waiting, max_num_batched_tokens=512)
    assert PrefillPriorityPolicy().schedule(view).num_scheduled_tokens == {"c": 600}


def test_arrival_stalls_decodes_in_the_engine(scenario):
    # a, b decode; c arrives at 20 ms. Its prefill step runs alone.
    from tests.policies.conftest import tiny_specs

    specs = tiny_specs([24, 24, 40], [30, 30, 4], arrivals=[0.0, 0.0, 0.02])
    _, requests, steps = scenario(PrefillPriorityPolicy(), specs)
    c_step = steps[steps.num_prefill_tokens == 40].iloc[0]
    assert c_step.num_decode_tokens == 0
    assert (requests.loc[["r0", "r1"], "finish_s"] > c_step.start_s).all()  # a, b were live
    assert (requests.status == "finished").all()


def test_rejects_bad_knob():
    with pytest.raises(ValueError):
        PrefillPriorityPolicy(preemption="drop")
