"""How many splits the split-KV decode kernel (paged_decode.py) cuts one sequence's context into.

Plain Python (no torch, no Triton): the simulator's step model (harness/sim_model.py) computes
the same split count for the batches it never runs.
"""

from __future__ import annotations

MAX_SPLITS = 64  # splits of one sequence's context (`warmup` compiles a merge for each width)
MIN_SPLIT_TOKENS = 256


def decode_num_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int) -> int:
    """Enough (sequence, KV head, split) programs to fill the GPU twice, >= 256 tokens a split.

    `max_seq_len` is the host-side bound the launch is given (under a CUDA graph, the one it
    was captured with), not the batch's true longest context."""
    programs = num_seqs * num_kv_heads
    by_len = -(-max_seq_len // MIN_SPLIT_TOKENS)
    by_fill = -(-(2 * num_sms) // programs)
    return max(1, min(by_len, by_fill, MAX_SPLITS))
