"""Attention over a paged KV cache: varlen extend (chunked prefill) and single-token decode."""

from __future__ import annotations

import torch

# The Triton versions, defined against the references below (re-exported for callers).
from kernels.paged_decode import paged_decode_attention
from kernels.paged_extend import paged_extend_attention

__all__ = [
    "paged_decode_attention",
    "paged_decode_attention_ref",
    "paged_extend_attention",
    "paged_extend_attention_ref",
    "warmup",
]


def warmup(
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    page_size: int,
    dtype: torch.dtype,
    device: torch.device,
    max_query_len: int,
) -> int:
    """Compile every variant of the attention kernels that batches up to `max_query_len` query
    tokens per sequence can launch (decode with and without splits, each split-merge width,
    each extend tile), on tiny inputs, so none compiles while a run is being measured.
    Returns the number of launches."""
    from kernels.decode_splits import MAX_SPLITS
    from kernels.paged_extend import _extend_block_q

    group = num_heads // num_kv_heads
    n_blocks = 4
    k_cache = torch.zeros(n_blocks, page_size, num_kv_heads, head_dim, dtype=dtype, device=device)
    v_cache = torch.zeros_like(k_cache)
    tables = torch.arange(n_blocks, dtype=torch.int32, device=device).view(1, -1)
    seq_len = torch.tensor([page_size], dtype=torch.int32, device=device)
    launches = 0
    splits, s = [1], 2
    while s <= MAX_SPLITS:
        splits.append(s)
        s *= 2
    q1 = torch.zeros(1, num_heads, head_dim, dtype=dtype, device=device)
    for num_splits in splits:
        paged_decode_attention(q1, k_cache, v_cache, tables, seq_len, 1.0, page_size,
                               num_splits=num_splits)  # fmt: skip
        launches += 1
    tiles, m = {}, 1
    while m <= max(1, max_query_len):
        tiles.setdefault(_extend_block_q(m, group, dtype), m)
        m *= 2
    for m in tiles.values():
        q = min(m, n_blocks * page_size)
        query = torch.zeros(q, num_heads, head_dim, dtype=dtype, device=device)
        qsl = torch.tensor([0, q], dtype=torch.int32, device=device)
        lens = torch.tensor([q], dtype=torch.int32, device=device)
        paged_extend_attention(query, k_cache, v_cache, tables, qsl, lens, m, 1.0)
        launches += 1
    return launches


def _gather_context(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The first `seq_len` tokens of one sequence's paged cache: [seq_len, num_kv_heads, head_dim]."""
    block_size = cache.shape[1]
    num_blocks = -(-seq_len // block_size)
    # [num_blocks, block_size, num_kv_heads, head_dim]
    blocks = cache[block_table[:num_blocks].long()]
    return blocks.reshape(-1, *cache.shape[2:])[:seq_len]


def paged_extend_attention_ref(
    query: torch.Tensor,  # [num_tokens, num_heads, head_dim], sequences concatenated
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [num_seqs, max_num_blocks] int
    query_start_loc: torch.Tensor,  # [num_seqs + 1] int, cumulative query lengths
    seq_lens: torch.Tensor,  # [num_seqs] int, context length incl. this step's tokens
    scale: float,
) -> torch.Tensor:
    """Reference: each sequence's query chunk attends causally to its whole paged context.

    A sequence's `q_len` query tokens are its last `q_len` positions (`seq_len - q_len ..
    seq_len - 1`); their K/V must already be in the cache. Computed in float32.
    Returns [num_tokens, num_heads, head_dim] in the query's dtype.
    """
    num_heads = query.shape[1]
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.empty_like(query)
    starts = query_start_loc.tolist()
    lens = seq_lens.tolist()
    for i, seq_len in enumerate(lens):
        q = query[starts[i] : starts[i + 1]].float()  # [q_len, num_heads, head_dim]
        q_len = q.shape[0]
        if q_len == 0:
            continue
        k = _gather_context(k_cache, block_tables[i], seq_len).float()
        v = _gather_context(v_cache, block_tables[i], seq_len).float()
        k = k.repeat_interleave(group, dim=1)  # [seq_len, num_heads, head_dim]
        v = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale  # [num_heads, q_len, seq_len]
        q_pos = torch.arange(seq_len - q_len, seq_len).unsqueeze(1)
        k_pos = torch.arange(seq_len).unsqueeze(0)
        scores.masked_fill_(k_pos > q_pos, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[starts[i] : starts[i + 1]] = torch.einsum("hqk,khd->qhd", probs, v).to(query.dtype)
    return out


def paged_decode_attention_ref(
    query: torch.Tensor,  # [num_seqs, num_heads, head_dim], one token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [num_seqs, max_num_blocks] int
    seq_lens: torch.Tensor,  # [num_seqs] int, context length incl. the query token
    scale: float,
) -> torch.Tensor:
    """Reference: one query token per sequence against its paged context (extend with q_len 1)."""
    query_start_loc = torch.arange(query.shape[0] + 1, dtype=torch.int32)
    return paged_extend_attention_ref(
        query, k_cache, v_cache, block_tables, query_start_loc, seq_lens.cpu(), scale
    )
