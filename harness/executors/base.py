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
