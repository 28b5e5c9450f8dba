"""What an executor receives (a flat varlen batch, no requests) and must provide."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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


class Executor(Protocol):
    """Runs batches and moves KV blocks between the device cache and the CPU swap pool."""

    def launch(self, batch: Batch, feed_from=None):
        """Queue one forward pass; returns a handle whose `result()` gives the sampled token id
        of each `logits_indices` row (and whose `device_time_s` is then set, if measured).
        `feed_from` is the previous step's handle when `batch.feed` refers to its ids."""

    def execute(self, batch: Batch) -> np.ndarray:
        """`launch(batch).result()`."""

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        """Copy (gpu_block, cpu_block) pairs of every layer from the device to the host pool."""

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        """Copy (cpu_block, gpu_block) pairs of every layer from the host pool to the device."""


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
