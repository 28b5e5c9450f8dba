"""The CUDA-graph bucket sizes of the cuda executor (harness/executors/cuda_graphs.py), in a
module without torch: the simulator sizes its graph buckets as the executor would
(harness/executors/sim.py) without importing it."""

from __future__ import annotations


def capture_sizes(max_num_seqs: int) -> list[int]:
    """vLLM-style buckets: 1, 2, 4, 8, then every 16 up to max_num_seqs (always included)."""
    sizes = [s for s in (1, 2, 4, 8) if s < max_num_seqs]
    sizes += list(range(16, max_num_seqs, 16)) + [max_num_seqs]
    return sorted(set(sizes))


def piece_sizes(max_tokens: int) -> list[int]:
    """Token buckets of the piecewise graphs: 8, every 16 up to 256, every 64 beyond, and
    `max_tokens` itself (none when it is 0). Up to 256 tokens a step reads the weights more than
    it computes, so 16 tokens of padding cost little; beyond, at most 63 tokens (< 20%)."""
    if max_tokens <= 0:
        return []
    sizes = [8, *range(16, 257, 16), *range(320, max_tokens, 64)]
    return sorted({s for s in sizes if s < max_tokens} | {max_tokens})
