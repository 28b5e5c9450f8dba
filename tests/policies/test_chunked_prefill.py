"""Chunked prefill: decodes first, then prefill chunks within the budget, never stalling."""

from __future__ import annotations

from policies.chunked_prefill import ChunkedPrefillPolicy
from tests.policies.conftest import make_decode, make_request_view, make_view, tiny_specs


def test_decodes_then_partial_prefill_then_new_prompt_chunk():
    partial = make_request_view("p", 1.0, num_prompt_tokens=300, num_computed_tokens=100)
    view = make_view(
        running=[partial, make_decode("a"), make_decode("b")],
        waiting=[make_request_view("w", 2.0, 300)],
        max_num_batched_tokens=128,
    )
    d = ChunkedPrefillPolicy(max_num_partial_prefills=2).schedule(view)
    assert d.num_scheduled_tokens == {"a": 1, "b": 1, "p": 126}
    d = ChunkedPrefillPolicy(max_num_partial_prefills=2).schedule(
        make_view(running=view.running, waiting=view.waiting, max_num_batched_tokens=512)
    )
    assert d.num_scheduled_tokens == {"a": 1, "b": 1, "p": 200, "w": 300}


def test_partial_prefill_limit_and_long_prefill_threshold():
    partial = make_request_view("p", 1.0, num_prompt_tokens=300, num_computed_tokens=100)
    waiting = [make_request_view("long", 2.0, 400), make_request_view("short", 3.0, 20)]
    view = make_view(running=[partial], waiting=waiting, max_num_batched_tokens=150)
    # One partial prefill at a time: 'p' stays partial, so the long prompt cannot start (and
    # blocks the short one behind it).
    d = ChunkedPrefillPolicy().schedule(view)
    assert d.num_scheduled_tokens == {"p": 150}
    # A 64-token cap per request leaves room for both new prompts' chunks.
    d = ChunkedPrefillPolicy(max_num_partial_prefills=2, long_prefill_token_threshold=64).schedule(
        view
    )
    assert d.num_scheduled_tokens == {"p": 64, "long": 64, "short": 20}


def test_new_prompt_starts_only_if_it_can_finish_but_a_started_one_shrinks_to_free_blocks():
    waiting = make_request_view("w", 0.0, 300)  # 300 tokens: 19 blocks of 16
    assert (
        ChunkedPrefillPolicy()
        .schedule(make_view(waiting=[waiting], num_free_blocks=5))
        .num_scheduled_tokens
        == {}
    )
    assert ChunkedPrefillPolicy().schedule(
        make_view(waiting=[waiting], num_free_blocks=19)
    ).num_scheduled_tokens == {"w": 300}
    started = make_request_view("p", 0.0, 300, num_computed_tokens=32)  # holds 2 blocks
    view = make_view(running=[started], num_free_blocks=5)
    assert ChunkedPrefillPolicy().schedule(view).num_scheduled_tokens == {"p": 80}


def test_long_prompt_is_split_without_stalling_decodes(scenario):
    specs = tiny_specs([16, 16, 400], [20, 20, 4], arrivals=[0.0, 0.0, 0.01])
    _, requests, steps = scenario(ChunkedPrefillPolicy(), specs, max_num_batched_tokens=64)
    total = steps.num_prefill_tokens + steps.num_decode_tokens + steps.num_padding_tokens
    assert total.max() <= 64
    c_arrival, c_first = requests.loc["r2", ["arrival_s", "first_token_s"]]
    during = steps[(steps.start_s >= c_arrival) & (steps.start_s < c_first)]
    assert len(during) >= 7 and (during.num_prefill_tokens > 0).all()  # 400 tokens: 7+ chunks
    assert (during.num_decode_tokens == 2).all()  # a and b decode in every one of them
    assert steps.num_prefill_tokens.sum() == 16 + 16 + 400  # no recomputation
    assert (requests.status == "finished").all()
