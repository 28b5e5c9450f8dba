"""FCFS: running first, strict arrival order for admissions, latest arrival preempted."""

from __future__ import annotations

from policies.base import Preemption
from policies.fcfs import FcfsPolicy
from tests.policies.conftest import make_decode, make_request_view, make_view


def test_running_decode_then_whole_prompts_in_order():
    view = make_view(
        running=[make_decode("a")],
        waiting=[make_request_view("b", 1.0, 100), make_request_view("c", 2.0, 50)],
    )
    d = FcfsPolicy().schedule(view)
    assert d.num_scheduled_tokens == {"a": 1, "b": 100, "c": 50}


def test_head_of_line_prompt_blocks_shorter_ones_behind_it():
    waiting = [make_request_view("b", 1.0, 400), make_request_view("c", 2.0, 50)]
    a = make_decode("a", 0.0, num_prompt_tokens=20, outputs=2)
    view = make_view(running=[a], waiting=waiting, max_num_batched_tokens=300)
    assert FcfsPolicy().schedule(view).num_scheduled_tokens == {"a": 1}  # c waits behind b
    # b is longer than any step: it runs alone once nothing else runs, c still behind it
    view = make_view(waiting=waiting, max_num_batched_tokens=300)
    assert FcfsPolicy().schedule(view).num_scheduled_tokens == {"b": 400}


def test_latest_arrival_preempted_when_kv_runs_out():
    # Both decodes need a new block (computed tokens fill their blocks); one block is free.
    a = make_decode("a", 0.0, num_prompt_tokens=29, outputs=4)
    b = make_decode("b", 1.0, num_prompt_tokens=29, outputs=4)
    c = make_decode("c", 2.0, num_prompt_tokens=29, outputs=4)
    view = make_view(running=[c, a, b], waiting=[make_request_view("w", 3.0)], num_free_blocks=1)
    d = FcfsPolicy().schedule(view)
    assert d.preempt == {"c": Preemption.RECOMPUTE}
    assert d.num_scheduled_tokens == {"a": 1, "b": 1}  # no admission in a preempting step
    d = FcfsPolicy(preemption="swap").schedule(view)
    assert d.preempt == {"c": Preemption.SWAP}


def test_swapped_come_back_before_new_admissions():
    s = make_decode("s", 0.5, num_blocks=3)
    view = make_view(swapped=[s], waiting=[make_request_view("w", 1.0)], num_free_blocks=3)
    d = FcfsPolicy(preemption="swap").schedule(view)
    assert d.swap_in == ("s",) and d.num_scheduled_tokens == {"s": 1}


def test_a_swapped_request_comes_back_only_in_a_step_that_computes_its_token():
    # The two running decodes take the whole 2-token budget: 's' back now would take its blocks
    # and a seat and compute nothing, so it stays swapped. With a third token it returns and
    # decodes in the same step.
    running = [make_decode("a", 0.0), make_decode("b", 1.0)]
    s = make_decode("s", 0.5, num_blocks=3)
    view = make_view(running=running, swapped=[s], max_num_batched_tokens=2)
    d = FcfsPolicy(preemption="swap").schedule(view)
    assert d.swap_in == () and d.num_scheduled_tokens == {"a": 1, "b": 1}
    view = make_view(running=running, swapped=[s], max_num_batched_tokens=3)
    d = FcfsPolicy(preemption="swap").schedule(view)
    assert d.swap_in == ("s",) and d.num_scheduled_tokens == {"a": 1, "b": 1, "s": 1}
