"""Static batching: padded prefill, finished slots keep decoding, no joining mid-batch."""

from __future__ import annotations

from policies.base import Padding
from policies.static import StaticPolicy
from tests.policies.conftest import make_decode, make_request_view, make_view, tiny_specs


def test_batch_pads_prompts_to_the_longest():
    waiting = [make_request_view("a", 0, 10), make_request_view("b", 1, 30)]
    d = StaticPolicy().schedule(make_view(waiting=waiting))
    assert d.num_scheduled_tokens == {"a": 10, "b": 30}
    assert d.padding == (Padding(20, 30),)


def test_batch_reserves_kv_for_its_maximum_length():
    # Each slot reserves ceil((30 + 16 - 1) / 16) = 3 blocks: 7 free blocks hold two slots.
    waiting = [make_request_view(f"r{i}", i, 30) for i in range(4)]
    d = StaticPolicy().schedule(make_view(waiting=waiting, num_free_blocks=7))
    assert list(d.num_scheduled_tokens) == ["r0", "r1"]
    d = StaticPolicy(batch_size=3).schedule(make_view(waiting=waiting))
    assert list(d.num_scheduled_tokens) == ["r0", "r1", "r2"]


def test_no_admission_while_a_batch_is_in_flight():
    policy = StaticPolicy()
    policy.schedule(
        make_view(waiting=[make_request_view("a", 0, 10), make_request_view("b", 0, 20)])
    )
    running = [make_decode("b", num_prompt_tokens=20, outputs=3)]
    d = policy.schedule(make_view(running=running, waiting=[make_request_view("c", 1.0)]))
    assert d.num_scheduled_tokens == {"b": 1}
    assert d.padding == (Padding(1, 23),)  # a's finished slot decodes at the padded length


def test_pads_and_keeps_finished_slots_busy(scenario):
    specs = tiny_specs([10, 30, 20, 16], [2, 8, 5, 3], arrivals=[0, 0, 0, 0.002])
    _, requests, steps = scenario(StaticPolicy(), specs)
    first = steps.iloc[0]
    assert (first.num_prefill_tokens, first.num_padding_tokens) == (60, 30)
    batch = steps.iloc[1:8]  # 7 decode steps until the longest output (8 tokens) ends
    assert (batch.num_decode_tokens + batch.num_padding_tokens == 3).all()
    assert batch.num_padding_tokens.to_list() == [0, 1, 1, 1, 2, 2, 2]
    assert requests.loc["r3", "first_scheduled_s"] >= requests.loc["r1", "finish_s"]
    assert (requests.status == "finished").all()
