"""`build_batch`'s fast paths give exactly the arrays of the straightforward construction (one
numpy fill per row, kept here as the reference) on random mixes of decodes, prefill chunks and
padding rows."""

from __future__ import annotations

from dataclasses import fields
from itertools import chain

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.batch import build_batch
from harness.request import Request, RequestSpec
from policies.base import Padding


def reference_build_batch(scheduled, padding, num_decode, block_tables, bs, temperature, top_p):
    lens = np.array([n for _, n in scheduled] + [p.num_tokens for p in padding], dtype=np.int64)
    num_seqs = len(lens)
    qsl = np.zeros(num_seqs + 1, dtype=np.int32)
    np.cumsum(lens, out=qsl[1:])
    num_tokens = int(qsl[-1])
    input_ids = np.zeros(num_tokens, dtype=np.int64)
    positions = np.empty(num_tokens, dtype=np.int64)
    slots = np.full(num_tokens, -1, dtype=np.int64)
    seq_lens = np.empty(num_seqs, dtype=np.int32)
    tables = [block_tables[r.request_id] for r, _ in scheduled]
    width = max([len(t) for t in tables] + [-(-p.context_len // bs) for p in padding])
    table_array = np.zeros((num_seqs, width), dtype=np.int32)
    for i, t in enumerate(tables):
        table_array[i, : len(t)] = t
    logits = []
    for i, (r, n) in enumerate(scheduled):
        a, b, start = qsl[i], qsl[i + 1], r.num_computed_tokens
        input_ids[a:b] = list(chain(r.spec.prompt_ids, r.output_ids))[start : start + n]
        pos = np.arange(start, start + n)
        positions[a:b] = pos
        slots[a:b] = table_array[i][pos // bs].astype(np.int64) * bs + pos % bs
        seq_lens[i] = start + n
        if start + n == r.num_tokens:
            logits.append(b - 1)
    for j, p in enumerate(padding, start=len(scheduled)):
        positions[qsl[j] : qsl[j + 1]] = np.arange(p.context_len - p.num_tokens, p.context_len)
        seq_lens[j] = p.context_len
    return dict(
        input_ids=input_ids, positions=positions, slot_mapping=slots, query_start_loc=qsl,
        seq_lens=seq_lens, block_tables=table_array,
        logits_indices=np.asarray(logits, dtype=np.int64), max_query_len=int(lens.max()),
        max_seq_len=int(seq_lens.max()), num_padding_tokens=sum(p.num_tokens for p in padding),
        num_decode_seqs=num_decode,
        max_decode_seq_len=int(seq_lens[:num_decode].max()) if num_decode else 0,
        temperature=temperature, top_p=top_p, feed=None,
    )  # fmt: skip


@st.composite
def steps(draw):
    bs = draw(st.sampled_from([1, 4, 16]))
    num_decode = draw(st.integers(0, 6))
    num_prefill = draw(st.integers(0 if num_decode else 1, 4))
    scheduled, tables, next_block = [], {}, 0
    for i in range(num_decode + num_prefill):
        prompt = draw(st.lists(st.integers(0, 999), min_size=1, max_size=40))
        if i < num_decode:  # computed all but its last sampled token
            out = draw(st.lists(st.integers(-1, 999), min_size=1, max_size=20))
            computed, n = len(prompt) + len(out) - 1, 1
        else:
            out = draw(st.lists(st.integers(0, 999), max_size=5))
            total = len(prompt) + len(out)
            computed = draw(st.integers(0, total - 1))
            n = draw(st.integers(1, total - computed))
        spec = RequestSpec(f"r{i}", 0.0, tuple(prompt), 64)
        r = Request(spec, output_ids=list(out), num_computed_tokens=computed)
        need = -(-(computed + n) // bs) + draw(st.integers(0, 2))  # spare blocks: wider rows
        tables[spec.request_id] = list(range(next_block, next_block + need))
        next_block += need
        scheduled.append((r, n))
    padding = tuple(
        Padding(q, q + c)
        for q, c in draw(st.lists(st.tuples(st.integers(1, 8), st.integers(0, 30)), max_size=3))
    )
    return scheduled, padding, num_decode, tables, bs


@settings(max_examples=300, deadline=None)
@given(steps(), st.sampled_from([0.0, 0.7]))
def test_build_batch_equals_the_reference(step, temperature):
    scheduled, padding, num_decode, tables, bs = step
    batch = build_batch(scheduled, padding, num_decode, tables, bs, temperature, 0.9)
    want = reference_build_batch(scheduled, padding, num_decode, tables, bs, temperature, 0.9)
    for f in fields(batch):
        got, exp = getattr(batch, f.name), want[f.name]
        if isinstance(exp, np.ndarray):
            assert got.dtype == exp.dtype and got.shape == exp.shape, f.name
            assert np.array_equal(got, exp), f.name
        else:
            assert got == exp and type(got) is type(exp), f.name
