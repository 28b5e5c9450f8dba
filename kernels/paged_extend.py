"""Paged extend attention (Triton): chunked prefill over a paged prefix, causal in the chunk.

Mixed batches that list their decode sequences first send those through the split-KV decode
kernel (`num_decode_seqs`): one kernel for both was measured slower (benchmarks/).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.launch import AttentionPlan, KernelLaunch
from kernels.paged_common import (
    LOG2E,
    check_common,
    dot_precision,
    load_kv_tile,
    online_softmax_step,
)
from kernels.paged_decode import plan_decode_attention


@triton.jit
def _find_seq(query_start_loc_ptr, q_block, num_seqs, BLOCK_Q: tl.constexpr):
    """Largest seq with query_start_loc[seq] // BLOCK_Q + seq <= q_block (its first q block)."""
    lo = num_seqs * 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        first = tl.load(query_start_loc_ptr + mid) // BLOCK_Q + mid
        if first <= q_block:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


# The per-batch ints and offset pointers are not specialised on (== 1, divisible by 16, aligned):
# otherwise each new combination compiles a new variant mid-run (seconds of stall in the
# measured latencies). The constexpr variants are compiled up front by `warmup`.
@triton.jit(
    do_not_specialize=["num_seqs", "stride_bt"],
    do_not_specialize_on_alignment=["block_tables_ptr", "query_start_loc_ptr", "seq_lens_ptr"],
)
def _paged_extend_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, query_start_loc_ptr, seq_lens_ptr, out_ptr,
    qk_scale, num_seqs,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_bt,
    stride_cb, stride_ct, stride_ch,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, PAGE_SIZE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    # One program per (query block of BLOCK_Q tokens of one sequence, KV head). Its tile rows are
    # (token, query head of the group) pairs, so one K/V tile load serves the whole group.
    # Last query blocks first: under the causal mask they have the most keys, so the long
    # programs start early and the short ones fill the tail.
    q_block = tl.num_programs(0) - 1 - tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = _find_seq(query_start_loc_ptr, q_block, num_seqs, BLOCK_Q)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    q_first = (q_block - (q_start // BLOCK_Q + seq)) * BLOCK_Q  # first token of the block
    if q_first >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    prefix_len = seq_len - q_len

    BLOCK_M: tl.constexpr = BLOCK_Q * BLOCK_G
    offs_m = tl.arange(0, BLOCK_M)
    q_idx = q_first + offs_m // BLOCK_G  # token index within the sequence's chunk
    g = offs_m % BLOCK_G
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    mask_m = (q_idx < q_len) & (g < GROUP)
    heads = kv_head * GROUP + g
    tokens = (q_start + q_idx).to(tl.int64)
    io_mask = mask_m[:, None] & mask_d[None, :]
    q = tl.load(
        q_ptr + tokens[:, None] * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
        mask=io_mask,
        other=0.0,
    )
    q_pos = prefix_len + q_idx  # [BLOCK_M] absolute positions

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    bt_ptr = block_tables_ptr + seq.to(tl.int64) * stride_bt
    # Keys before the block's first query position are visible to every row: no mask needed.
    kv_full = ((prefix_len + q_first + 1) // BLOCK_N) * BLOCK_N
    kv_end = tl.minimum(seq_len, prefix_len + q_first + BLOCK_Q)
    offs_n0 = tl.arange(0, BLOCK_N)
    all_n = offs_n0 >= 0
    for n0 in range(0, kv_full, BLOCK_N):
        k, v = load_kv_tile(
            k_cache_ptr, v_cache_ptr, bt_ptr, n0 + offs_n0, all_n, kv_head, offs_d, mask_d,
            stride_cb, stride_ct, stride_ch, PAGE_SIZE,
        )  # fmt: skip
        acc, m_i, l_i = online_softmax_step(
            q, k, v, acc, m_i, l_i, all_n[None, :], qk_scale, DOT_PRECISION
        )
    for n0 in range(kv_full, kv_end, BLOCK_N):
        offs_n = n0 + offs_n0
        mask_n = offs_n < kv_end
        k, v = load_kv_tile(
            k_cache_ptr, v_cache_ptr, bt_ptr, offs_n, mask_n, kv_head, offs_d, mask_d,
            stride_cb, stride_ct, stride_ch, PAGE_SIZE,
        )  # fmt: skip
        keep = mask_n[None, :] & (offs_n[None, :] <= q_pos[:, None])
        acc, m_i, l_i = online_softmax_step(q, k, v, acc, m_i, l_i, keep, qk_scale, DOT_PRECISION)

    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    o_ptr = out_ptr + tokens[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :]
    tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=io_mask)


def _extend_block_q(max_query_len: int, group: int, dtype: torch.dtype) -> int:
    """Query tokens per program: tiles of up to 128 (64 for fp32) rows of (token, head) pairs."""
    block_g = triton.next_power_of_2(group)
    max_rows = 64 if dtype == torch.float32 else 128
    rows = min(max_rows, max(16, block_g * triton.next_power_of_2(max_query_len)))
    return max(1, rows // block_g)


def _check_extend(query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
                  max_query_len: int, num_decode_seqs: int) -> None:  # fmt: skip
    num_seqs = seq_lens.shape[0]
    check_common(query, k_cache, v_cache, block_tables, seq_lens, out, num_seqs)
    if query_start_loc.shape != (num_seqs + 1,) or not query_start_loc.is_contiguous():
        raise ValueError(f"query_start_loc must be a contiguous [{num_seqs + 1}], "
                         f"got {tuple(query_start_loc.shape)}")  # fmt: skip
    if query_start_loc.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"query_start_loc must be int32 or int64, got {query_start_loc.dtype}")
    if query_start_loc.device != query.device:
        raise ValueError("query_start_loc must be on the query's device")
    if max_query_len < 1:
        raise ValueError(f"max_query_len must be >= 1, got {max_query_len}")
    if not 0 <= num_decode_seqs <= min(num_seqs, query.shape[0]):
        raise ValueError(f"num_decode_seqs {num_decode_seqs} not in [0, {num_seqs}]")


def _plan_extend(query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
                 max_query_len, scale, block_q, block_n, num_warps, num_stages) -> list:  # fmt: skip
    """The extend kernel's launch for this batch (none when it has no token)."""
    num_tokens, num_heads, head_dim = query.shape
    num_seqs = seq_lens.shape[0]
    if num_seqs == 0 or num_tokens == 0:
        return []
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    block_g = triton.next_power_of_2(group)
    fp32 = query.dtype == torch.float32
    block_q = block_q or _extend_block_q(max_query_len, group, query.dtype)
    if block_q * block_g < 16:
        raise ValueError(f"block_q * group must be >= 16 (tl.dot), got {block_q} * {block_g}")
    block_n = block_n or (32 if fp32 else 64)
    num_stages = num_stages or (2 if fp32 else 3)
    grid = (num_tokens // block_q + num_seqs, num_kv_heads)
    return [KernelLaunch(_paged_extend_attention_kernel, grid, dict(
        q_ptr=query, k_cache_ptr=k_cache, v_cache_ptr=v_cache, block_tables_ptr=block_tables,
        query_start_loc_ptr=query_start_loc, seq_lens_ptr=seq_lens, out_ptr=out,
        qk_scale=scale * LOG2E, num_seqs=num_seqs,
        stride_qt=query.stride(0), stride_qh=query.stride(1), stride_ot=out.stride(0),
        stride_oh=out.stride(1), stride_bt=block_tables.stride(0),
        stride_cb=k_cache.stride(0), stride_ct=k_cache.stride(1), stride_ch=k_cache.stride(2),
        GROUP=group, BLOCK_G=block_g, HEAD_DIM=head_dim,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)), BLOCK_Q=block_q, BLOCK_N=block_n,
        PAGE_SIZE=page_size, DOT_PRECISION=dot_precision(query.dtype),
    ), dict(num_warps=num_warps, num_stages=num_stages))]  # fmt: skip


def paged_extend_attention(
    query: torch.Tensor,  # [num_tokens, num_heads, head_dim], sequences concatenated
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [num_seqs, max_num_blocks] int
    query_start_loc: torch.Tensor,  # [num_seqs + 1] int, cumulative query lengths
    seq_lens: torch.Tensor,  # [num_seqs] int, context length incl. this step's tokens
    max_query_len: int,  # host-side upper bound on query lengths: picks the tile shape only
    scale: float,
    out: torch.Tensor | None = None,  # [num_tokens, num_heads, head_dim]
    **launch,  # num_decode_seqs, max_decode_seq_len, tile overrides (plan_extend_attention)
) -> torch.Tensor:
    """Chunked-prefill attention over the paged cache (Triton); also takes decode rows.

    Each sequence's query tokens are its last q_len positions and attend to the cached prefix
    plus themselves causally (their K/V must already be stored). Rows of `out` past
    query_start_loc[-1] (CUDA-graph padding) are left untouched. No host sync.

    Decode rows work either way, but a batch that lists its `num_decode_seqs` one-token
    sequences first runs them through the split-KV decode kernel: on an H200 this kernel taking
    them too was 1.3-1.5x slower on mixed batches and 2.9x on long-context decodes
    (benchmarks/kernels_h200_2026-11-22.md).
    """
    plan = plan_extend_attention(query, k_cache, v_cache, block_tables, query_start_loc,
                                 seq_lens, max_query_len, scale, out, **launch)  # fmt: skip
    return plan(k_cache, v_cache)


def plan_extend_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    max_query_len: int,
    scale: float,
    out: torch.Tensor | None = None,
    *,
    num_decode_seqs: int = 0,  # the first this many sequences have exactly 1 query token
    max_decode_seq_len: int | None = None,  # their host-side bound (default: table capacity)
    block_q: int | None = None,  # launch overrides (tests, benchmarks)
    block_n: int | None = None,
    num_warps: int = 4,
    num_stages: int | None = None,
) -> AttentionPlan:
    """`paged_extend_attention`'s launches for this batch, for any layer's caches of the shape
    of `k_cache` (kernels/launch.py): checks, slices and the decode rows' plan done once."""
    out = torch.empty_like(query) if out is None else out
    d = num_decode_seqs
    _check_extend(query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
                  max_query_len, d)  # fmt: skip
    tiles = (block_q, block_n, num_warps, num_stages)
    if d == 0:
        return AttentionPlan(_plan_extend(query, k_cache, v_cache, block_tables,
                                          query_start_loc, seq_lens, out, max_query_len, scale,
                                          *tiles), out)  # fmt: skip
    bound = max_decode_seq_len or block_tables.shape[1] * k_cache.shape[1]
    decode = plan_decode_attention(query[:d], k_cache, v_cache, block_tables[:d], seq_lens[:d],
                                   scale, max_seq_len=bound, out=out[:d])  # fmt: skip
    if d == seq_lens.shape[0]:
        return AttentionPlan(decode.launches, out)
    prefill_qsl = query_start_loc[d:] - d  # [num_seqs - d + 1], relative to row d
    extend = _plan_extend(query[d:], k_cache, v_cache, block_tables[d:], prefill_qsl,
                          seq_lens[d:], out[d:], max_query_len, scale, *tiles)  # fmt: skip
    return AttentionPlan(decode.launches + extend, out)
