"""Chunked prefill: decodes first, then prefill chunks within the budget, never stalling."""

from __future__ import annotations

import dataclasses

from policies.base import Preemption
from policies.chunked_prefill import ChunkedPrefillPolicy
from tests.policies.conftest import (
    make_decode,
    make_request_view,
    make_view,
    recording,
    tiny_specs,
)


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


def _needs_block(request_id: str, arrival_s: float, **kw):
    """A decode whose computed tokens fill its blocks exactly: its next token needs a new one."""
    return make_decode(request_id, arrival_s, num_prompt_tokens=29, outputs=4, **kw)


def test_a_decode_short_of_blocks_preempts_a_prefill_in_progress_before_a_later_decode():
    # 'old' needs a block, none is free. 'p' arrived before 'late' but is still prefilling:
    # preempting the latest arrival ('late', a decode) would hand its blocks to p's chunk.
    old, late = _needs_block("old", 0.0), make_decode("late", 2.0)
    p = make_request_view("p", 1.0, num_prompt_tokens=300, num_computed_tokens=64)
    view = make_view(running=[old, p, late], num_free_blocks=0)
    d = ChunkedPrefillPolicy().schedule(view)
    assert d.preempt == {"p": Preemption.RECOMPUTE}
    assert d.num_scheduled_tokens == {"old": 1, "late": 1}
    # Without a prefill in progress, the latest-arrived decode is the victim (vLLM v1's order).
    d = ChunkedPrefillPolicy().schedule(make_view(running=[old, late], num_free_blocks=0))
    assert d.preempt == {"late": Preemption.RECOMPUTE} and d.num_scheduled_tokens == {"old": 1}


def test_no_prefill_chunk_runs_in_a_step_that_preempts_a_decode():
    # 'p' is starving (preempted 8 times), so it is protected and 'late' (a decode) is the
    # victim: p's chunk must not take the blocks that preemption frees.
    old, late = _needs_block("old", 0.0), make_decode("late", 2.0)
    p = make_request_view(
        "p", 1.0, num_prompt_tokens=300, num_computed_tokens=64, num_preemptions=8
    )
    view = make_view(running=[old, p, late], num_free_blocks=0, starvation_threshold=8)
    d = ChunkedPrefillPolicy().schedule(view)
    assert d.preempt == {"late": Preemption.RECOMPUTE}
    assert d.num_scheduled_tokens == {"old": 1}


def test_a_prefill_without_free_blocks_waits_while_decodes_run():
    # 'p' fills its 4 blocks and none is free: it waits (the decode will free blocks or preempt
    # it when it needs them) instead of throwing its 64 computed tokens away.
    p = make_request_view("p", 0.0, num_prompt_tokens=300, num_computed_tokens=64)
    view = make_view(running=[make_decode("d", 1.0), p], num_free_blocks=0)
    d = ChunkedPrefillPolicy().schedule(view)
    assert d.num_scheduled_tokens == {"d": 1} and d.preempt == {}
    # With nothing else running it must make room: it is its own victim.
    d = ChunkedPrefillPolicy().schedule(make_view(running=[p], num_free_blocks=0))
    assert d.preempt == {"p": Preemption.RECOMPUTE}


def test_no_decode_is_preempted_to_make_room_for_a_prefill_chunk_in_the_engine(scenario):
    # r1's 40-token prompt is split into 8-token chunks; r2 (a short prompt) arrives while it is
    # prefilling and decodes beside r0. The 14 blocks of 4 tokens run out mid-prefill.
    specs = tiny_specs([9, 40, 8], [30, 4, 30], arrivals=[0.0, 0.001, 0.003])
    policy = recording(ChunkedPrefillPolicy(long_prefill_token_threshold=8))
    _, requests, steps = scenario(
        policy, specs, block_size=4, num_gpu_blocks=14, max_num_batched_tokens=32
    )
    assert steps.num_preempted.sum() > 0  # the KV cache did run out
    for view, d in policy.log:
        decodes = {r.request_id for r in view.running if r.is_decode}
        chunks = [rid for rid in d.num_scheduled_tokens if rid not in decodes]
        assert not (decodes & d.preempt.keys() and chunks), (d.preempt, chunks)
    first_victims = next(d.preempt for _, d in policy.log if d.preempt)
    assert first_victims.keys() == {"r1"}  # the prefill in progress, not the later decode r2
    assert (requests.status == "finished").all()


def test_a_waiting_prompt_with_a_cached_prefix_has_not_started():
    """Prefix caching: waiting requests whose prefix is cached (computed tokens > 0, none of
    them its own yet) are not partial prefills; counting them as such (max_num_partial_prefills
    reached) left every one waiting for ever with the whole cache free."""
    waiting = [
        dataclasses.replace(
            make_request_view(f"r{i}", float(i), 4096), num_computed_tokens=512,
            num_cached_tokens=512,
        )  # fmt: skip
        for i in range(3)
    ]
    view = make_view(waiting=waiting, num_free_blocks=5000, num_total_blocks=5000,
                     max_num_batched_tokens=2048)  # fmt: skip
    decision = ChunkedPrefillPolicy().schedule(view)
    assert decision.num_scheduled_tokens == {"r0": 2048}
