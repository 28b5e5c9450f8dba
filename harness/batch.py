"""The flat varlen batch a step executes, built from the applied decision: decode rows first,
then prefill chunks, then padding rows. The engine builds it; executors run it (and may split it
into several forward passes). Nothing here sees the policy or the clock."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from harness.request import Request
    from policies.base import Padding

PLACEHOLDER_TOKEN = -1  # an output token sampled on the device, not yet on the host


@dataclass
class Batch:
    """One step's tokens, flattened: sequences concatenated, no padding between them."""

    input_ids: np.ndarray  # [num_tokens] int64
    positions: np.ndarray  # [num_tokens] int64
    slot_mapping: np.ndarray  # [num_tokens] int64, flat cache slot of each token
    query_start_loc: np.ndarray  # [num_seqs + 1] int32, cumulative query lengths
    seq_lens: np.ndarray  # [num_seqs] int32, context length incl. this step's tokens
    block_tables: np.ndarray  # [num_seqs, max_num_blocks] int32 (0-padded)
    logits_indices: np.ndarray  # [num_sampled] int64, rows whose next token is sampled
    max_query_len: int
    max_seq_len: int
    num_padding_tokens: int = 0  # extra rows to execute and discard (static batching)
    num_decode_seqs: int = 0  # the first this many sequences are single-token decodes
    max_decode_seq_len: int = 0
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    # [num_tokens] int64 or None: for a row >= 0, its input id is row `feed[i]` of the previous
    # step's sampled ids, still on the device (pipelined engine); input_ids[i] is a placeholder
    feed: np.ndarray | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens)

    # -- its sizes, as a step-cost model reads them (`StepShape` holds the same without arrays)
    @property
    def num_sampled(self) -> int:
        return len(self.logits_indices)

    @property
    def context_tokens(self) -> int:
        """Context tokens of every row (their sequence lengths, padding rows' included)."""
        return int(self.seq_lens.sum())

    @property
    def decode_ctx(self) -> int:
        """Context tokens of the decode rows (their sequence lengths, summed)."""
        d = self.num_decode_seqs
        return int(self.seq_lens[:d].sum()) if d else 0

    @property
    def decode_max_ctx(self) -> int:
        d = self.num_decode_seqs
        return int(self.seq_lens[:d].max()) if d else 0

    @property
    def prefill_qk(self) -> int:
        """Over the other rows (prefill chunks, recomputes, padding): sum of query x context."""
        return int((self._other_queries() * self.seq_lens[self.num_decode_seqs :]).sum())

    @property
    def prefill_qq(self) -> int:
        """Over the other rows: sum of query x (query - 1)."""
        q = self._other_queries()
        return int((q * (q - 1)).sum())

    def _other_queries(self) -> np.ndarray:
        """The query lengths of the rows after the decodes (int64)."""
        d, qsl = self.num_decode_seqs, self.query_start_loc.astype(np.int64)
        return qsl[d + 1 :] - qsl[d:-1]


class StepShape:
    """A step's sizes without its token arrays: what a step-cost model reads of a `Batch`
    (the same attribute names and values), for an executor that runs no tensors (engine=sim,
    `needs_batch = False`). `step_shape` builds it from the scheduled rows as `build_batch`
    lays them out."""

    __slots__ = ("num_tokens", "num_seqs", "num_decode_seqs", "num_sampled", "num_padding_tokens",
                 "max_query_len", "max_seq_len", "context_tokens", "decode_ctx", "decode_max_ctx",
                 "prefill_qk", "prefill_qq")  # fmt: skip

    def __init__(self, **sizes: int) -> None:
        for k in self.__slots__:
            setattr(self, k, sizes[k])

    @classmethod
    def of(cls, batch: Batch) -> StepShape:
        """The shape of a built batch (what `step_shape` must equal)."""
        return cls(**{k: getattr(batch, k) for k in cls.__slots__})

    def sizes(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def advanced(self) -> StepShape:
        """The shape of this decode-only step's rows one token later (every context one longer):
        the next step of a steady decode stretch (harness/engine.py `_replay_steady`)."""
        d = self.num_decode_seqs
        assert d == self.num_seqs and not self.num_padding_tokens, "a decode-only step"
        s = _new(StepShape)
        s.num_tokens = s.num_seqs = s.num_decode_seqs = s.num_sampled = d
        s.num_padding_tokens = s.prefill_qk = s.prefill_qq = 0
        s.max_query_len = 1
        s.max_seq_len = s.decode_max_ctx = self.decode_max_ctx + 1
        s.decode_ctx = s.context_tokens = self.decode_ctx + d
        return s


_new = object.__new__


class Rows(list):
    """Scheduled (request, tokens) rows, as the engine's `_apply` lists them; `num_decode`: when
    not None, they are all decodes, this many (most steps): `decode_first` has nothing to do."""

    num_decode: int | None = None


def decode_first(scheduled: list[tuple[Request, int]]) -> tuple[list[tuple[Request, int]], int]:
    """The scheduled (request, tokens) rows with single-token decodes first (the attention
    kernels take them as one cheap group), and how many decodes there are."""
    if type(scheduled) is Rows and scheduled.num_decode is not None:
        return scheduled, scheduled.num_decode
    is_decode = [n == 1 and len(r.output_ids) > 0
                 and len(r.spec.prompt_ids) + len(r.output_ids) - r.num_computed_tokens == 1
                 for r, n in scheduled]  # fmt: skip
    if all(is_decode):
        return scheduled, len(scheduled)  # already in order (most steps)
    decodes = [x for x, d in zip(scheduled, is_decode, strict=True) if d]
    return decodes + [x for x, d in zip(scheduled, is_decode, strict=True) if not d], len(decodes)


class _DecodeRows:
    """Decode-only steps (most steps), built in one pass over the rows, with the 2-D block table
    kept between steps: row i holds the table list it held last step (the same list object: a
    GPU table only grows while it exists) and only the blocks appended since are written; a row
    whose table is another list is rewritten. The caller gets a copy, so a batch is never
    changed by a later step."""

    def __init__(self) -> None:
        self.arr = np.zeros((0, 0), dtype=np.int32)
        self.tables: list[list[int] | None] = []  # row i: the table list it holds
        self.lens: list[int] = []  # row i: how many of its blocks are written (zeros after)

    def batch(
        self, scheduled: list[tuple[Request, int]], block_tables: dict[str, list[int]], bs: int,
        temperature: float, top_p: float,
    ) -> Batch:  # fmt: skip
        """The batch of `scheduled`, all single-token decodes: each row's one token at position
        num_computed_tokens (its last output token), sampled."""
        arr, held, held_lens = self.arr, self.tables, self.lens
        num_rows, width = arr.shape[0], 0
        ids, pos, slots, seq, stale = [], [], [], [], []
        for i, (r, _) in enumerate(scheduled):
            t = block_tables[r.spec.request_id]
            p, n = r.num_computed_tokens, len(t)
            if n > width:
                width = n
            if i >= num_rows or t is not held[i] or n != held_lens[i]:
                stale.append((i, t, n))  # a row to (re)write below
            ids.append(r.output_ids[-1])
            pos.append(p)
            slots.append(t[p // bs] * bs + p % bs)
            seq.append(p + 1)
        d = len(ids)
        if d > num_rows or width > arr.shape[1]:  # grow (rarely), every row rewritten
            arr = self.arr = np.zeros((max(d, num_rows) * 2, max(width, arr.shape[1]) * 2),
                                      dtype=np.int32)  # fmt: skip
            held, held_lens = self.tables, self.lens = [None] * len(arr), [0] * len(arr)
            tables = [block_tables[r.spec.request_id] for r, _ in scheduled]
            stale = [(i, t, len(t)) for i, t in enumerate(tables)]
        for i, t, n in stale:
            m = held_lens[i]
            if t is held[i]:  # grown (a shorter table is not expected: rewritten)
                if n < m:
                    arr[i, n:m] = 0
                arr[i, m:n] = t[m:n]
            else:
                arr[i, :n] = t
                if m > n:
                    arr[i, n:m] = 0
                held[i] = t
            held_lens[i] = n
        # ids, positions, slots and sequence lengths from one conversion, then slices of it
        flat = np.array(ids + pos + slots + seq, dtype=np.int64)
        max_seq_len = max(seq)
        return Batch(
            input_ids=flat[:d], positions=flat[d : 2 * d], slot_mapping=flat[2 * d : 3 * d],
            query_start_loc=np.arange(d + 1, dtype=np.int32),
            seq_lens=flat[3 * d :].astype(np.int32), block_tables=arr[:d, :width].copy(),
            logits_indices=np.arange(d, dtype=np.int64), max_query_len=1,
            max_seq_len=max_seq_len, num_padding_tokens=0, num_decode_seqs=d,
            max_decode_seq_len=max_seq_len, temperature=temperature, top_p=top_p,
        )  # fmt: skip


_DECODES = _DecodeRows()


def build_batch(
    scheduled: list[tuple[Request, int]],
    padding: tuple[Padding, ...],
    num_decode: int,
    block_tables: dict[str, list[int]],
    block_size: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> Batch:
    """Flatten the scheduled chunks (the first `num_decode` are decodes), then any padding
    rows, into one varlen batch.

    Padding rows are real work (token 0, slot -1 so nothing is stored, block table of block
    0 so their attention reads `context_len` cached positions) whose outputs are dropped.
    """
    bs = block_size
    d = num_decode
    if d == len(scheduled) and not padding and d:  # only decodes (most steps)
        return _DECODES.batch(scheduled, block_tables, bs, temperature, top_p)
    tables = [block_tables[r.request_id] for r, _ in scheduled]
    table_lens = [len(t) for t in tables]
    # Decode rows (first `num_decode`): one token at position num_computed_tokens, sampled.
    dec_pos = [r.num_computed_tokens for r, _ in scheduled[:d]]
    dec_ids = [r.output_ids[-1] for r, _ in scheduled[:d]]
    dec_slots = [t[p // bs] * bs + p % bs for t, p in zip(tables, dec_pos, strict=False)]
    lens = np.array([n for _, n in scheduled] + [p.num_tokens for p in padding], dtype=np.int64)
    num_seqs = len(lens)
    query_start_loc = np.zeros(num_seqs + 1, dtype=np.int32)
    np.cumsum(lens, out=query_start_loc[1:])
    num_tokens = int(query_start_loc[-1])
    input_ids = np.zeros(num_tokens, dtype=np.int64)
    positions = np.empty(num_tokens, dtype=np.int64)
    slot_mapping = np.full(num_tokens, -1, dtype=np.int64)
    seq_lens = np.empty(num_seqs, dtype=np.int32)
    width = max(table_lens + [-(-p.context_len // bs) for p in padding])
    table_array = np.zeros((num_seqs, width), dtype=np.int32)
    flat = np.fromiter(chain.from_iterable(tables), dtype=np.int32, count=sum(table_lens))
    rows = np.repeat(np.arange(len(tables)), table_lens)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(table_lens) - table_lens, table_lens)
    table_array[rows, cols] = flat
    positions[:d] = dec_pos
    input_ids[:d] = dec_ids
    slot_mapping[:d] = dec_slots
    seq_lens[:d] = positions[:d] + 1
    logits_indices = list(range(d))
    for i in range(d, len(scheduled)):  # prefill chunks (and recomputes)
        r, n = scheduled[i]
        a, b, start = query_start_loc[i], query_start_loc[i + 1], r.num_computed_tokens
        input_ids[a:b] = r.token_ids(start, start + n)
        pos = np.arange(start, start + n)
        positions[a:b] = pos
        slot_mapping[a:b] = table_array[i][pos // bs].astype(np.int64) * bs + pos % bs
        seq_lens[i] = start + n
        if start + n == r.num_tokens:  # the chunk reaches the end: sample the next token
            logits_indices.append(b - 1)
    for j, p in enumerate(padding, start=len(scheduled)):
        positions[query_start_loc[j] : query_start_loc[j + 1]] = np.arange(
            p.context_len - p.num_tokens, p.context_len
        )
        seq_lens[j] = p.context_len
    # Only decode rows can read a token still on the device: a preempted request is never
    # rescheduled in the step that preempts it, so a recomputed prompt's tokens are all known.
    assert not (input_ids[num_decode:] == PLACEHOLDER_TOKEN).any()
    return Batch(
        input_ids=input_ids, positions=positions, slot_mapping=slot_mapping,
        query_start_loc=query_start_loc, seq_lens=seq_lens, block_tables=table_array,
        logits_indices=np.asarray(logits_indices, dtype=np.int64),
        max_query_len=int(lens.max()), max_seq_len=int(seq_lens.max()),
        num_padding_tokens=int(sum(p.num_tokens for p in padding)),
        num_decode_seqs=num_decode,
        max_decode_seq_len=int(seq_lens[:num_decode].max()) if num_decode else 0,
        temperature=temperature, top_p=top_p,
    )  # fmt: skip


def step_shape(
    scheduled: list[tuple[Request, int]], padding: tuple[Padding, ...], num_decode: int
) -> StepShape:
    """The `StepShape` of `build_batch(scheduled, padding, num_decode, ...)`, from the rows'
    counts alone: a decode row computes 1 token at context num_computed_tokens + 1, a chunk of n
    tokens ends at num_computed_tokens + n and samples if that is the request's end, a padding
    row computes num_tokens at context_len."""
    sum_ctx = max_ctx = 0
    for i in range(num_decode):
        c = scheduled[i][0].num_computed_tokens + 1
        sum_ctx += c
        if c > max_ctx:
            max_ctx = c
    num_tokens, max_q, max_seq = num_decode, 1 if num_decode else 0, max_ctx
    sampled = qk = qq = 0
    ctx = sum_ctx
    for i in range(num_decode, len(scheduled)):
        r, n = scheduled[i]
        end = r.num_computed_tokens + n
        num_tokens += n
        qk += n * end
        qq += n * (n - 1)
        ctx += end
        max_q, max_seq = max(max_q, n), max(max_seq, end)
        sampled += end == r.num_tokens
    num_padding = 0
    for p in padding:
        n, c = p.num_tokens, p.context_len
        num_padding += n
        qk += n * c
        qq += n * (n - 1)
        ctx += c
        max_q, max_seq = max(max_q, n), max(max_seq, c)
    return StepShape(
        num_tokens=num_tokens + num_padding, num_seqs=len(scheduled) + len(padding),
        num_decode_seqs=num_decode, num_sampled=num_decode + sampled,
        num_padding_tokens=num_padding, max_query_len=max_q, max_seq_len=max_seq,
        context_tokens=ctx, decode_ctx=sum_ctx, decode_max_ctx=max_ctx, prefill_qk=qk,
        prefill_qq=qq,
    )  # fmt: skip


def feed_rows(
    batch: Batch, scheduled: list[tuple[Request, int]], prev_sampled: list[tuple[Request, int]]
) -> np.ndarray | None:
    """For a pipelined step: decode rows whose input is a token the previous step sampled and
    that is still on the device -> its row in that step's sampled ids (`Batch.feed`); those
    rows' input ids become 0 placeholders. None if no row needs one."""
    ids = batch.input_ids[: batch.num_decode_seqs]
    waiting = np.flatnonzero(ids == PLACEHOLDER_TOKEN)
    if not len(waiting):
        return None
    row_of = {r.request_id: k for k, (r, _) in enumerate(prev_sampled)}
    feed = np.full(batch.num_tokens, -1, dtype=np.int64)
    feed[waiting] = [row_of[scheduled[i][0].request_id] for i in waiting]
    ids[waiting] = 0
    return feed


def split_batch(batch: Batch, max_tokens: int | None) -> list[Batch]:
    """`batch` as consecutive pieces of at most `max_tokens` tokens, each one forward pass, run in
    order. A sequence cut between pieces continues in the next one over the K/V its first part
    stored (as a prefill chunk does), so the pieces compute exactly what the batch does; the
    sampled rows of the pieces, concatenated, are the batch's `logits_indices` in order.
    Padding rows (nothing stored) cut in two attend over unwritten slots in their second part:
    their outputs are discarded and their cost is the same."""
    if max_tokens is None or batch.num_tokens <= max_tokens:
        return [batch]
    qsl = batch.query_start_loc.astype(np.int64)
    pieces = []
    for a in range(0, batch.num_tokens, max_tokens):
        b = min(a + max_tokens, batch.num_tokens)
        first = int(np.searchsorted(qsl, a, side="right")) - 1  # sequence holding token a
        last = int(np.searchsorted(qsl, b, side="left"))  # one past the sequence holding b - 1
        starts = np.clip(qsl[first : last + 1], a, b) - a
        seq_lens = batch.seq_lens[first:last] - (qsl[first + 1 : last + 1] - b).clip(min=0)
        lens = np.diff(starts)
        rows = batch.logits_indices[(batch.logits_indices >= a) & (batch.logits_indices < b)]
        num_decode = max(0, min(batch.num_decode_seqs, last) - first)
        pieces.append(Batch(
            input_ids=batch.input_ids[a:b], positions=batch.positions[a:b],
            slot_mapping=batch.slot_mapping[a:b], query_start_loc=starts.astype(np.int32),
            seq_lens=seq_lens.astype(np.int32), block_tables=batch.block_tables[first:last],
            logits_indices=(rows - a).astype(np.int64), max_query_len=int(lens.max()),
            max_seq_len=int(seq_lens.max()), num_padding_tokens=batch.num_padding_tokens,
            num_decode_seqs=num_decode,
            max_decode_seq_len=int(seq_lens[:num_decode].max()) if num_decode else 0,
            temperature=batch.temperature, top_p=batch.top_p,
            feed=None if batch.feed is None else batch.feed[a:b],
        ))  # fmt: skip
    return pieces
