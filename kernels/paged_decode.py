"""Paged decode attention (Triton): one query token per sequence, GQA-packed, split-KV.

Each program loads a K/V tile once for every query head of its KV group and covers one split of
the context; a second kernel merges the splits by their log-sum-exp (flash-decoding).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.decode_splits import decode_num_splits
from kernels.launch import AttentionPlan, KernelLaunch
from kernels.paged_common import (
    LOG2E,
    check_common,
    dot_precision,
    load_kv_tile,
    num_sms,
    online_softmax_step,
)


# Not specialised on the per-batch ints and offsets (see paged_extend.py); `warmup` compiles
# the SPLIT and BLOCK_S variants.
@triton.jit(
    do_not_specialize=["num_splits", "stride_bt"],
    do_not_specialize_on_alignment=["block_tables_ptr", "seq_lens_ptr"],
)
def _paged_decode_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, out_ptr,
    part_out_ptr, part_lse_ptr,  # [num_seqs, num_heads, num_splits, head_dim], [.., num_splits]
    qk_scale, num_splits,
    stride_qs, stride_qh, stride_os, stride_oh, stride_bt,
    stride_cb, stride_ct, stride_ch,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PAGE_SIZE: tl.constexpr, SPLIT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    # One program per (sequence, KV head, split): the GROUP query heads sharing this KV head are
    # the rows of one tile, so each K/V tile is loaded once for all of them.
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    split_len = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, seq_len)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    mask_g = offs_g < GROUP
    mask_d = offs_d < HEAD_DIM
    heads = kv_head * GROUP + offs_g
    q_mask = mask_g[:, None] & mask_d[None, :]
    q = tl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + offs_d[None, :], mask=q_mask)

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    bt_ptr = block_tables_ptr + seq * stride_bt
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        k, v = load_kv_tile(
            k_cache_ptr, v_cache_ptr, bt_ptr, offs_n, mask_n, kv_head, offs_d, mask_d,
            stride_cb, stride_ct, stride_ch, PAGE_SIZE,
        )  # fmt: skip
        acc, m_i, l_i = online_softmax_step(
            q, k, v, acc, m_i, l_i, mask_n[None, :], qk_scale, DOT_PRECISION
        )

    nonempty = l_i > 0
    o = acc / tl.where(nonempty, l_i, 1.0)[:, None]
    if SPLIT:
        lse = tl.where(nonempty, m_i + tl.math.log2(tl.where(nonempty, l_i, 1.0)), float("-inf"))
        row = (seq * tl.num_programs(1) * GROUP + heads) * num_splits + split
        tl.store(part_lse_ptr + row, lse, mask=mask_g)
        tl.store(part_out_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], o, mask=q_mask)
    else:
        o_ptr = out_ptr + seq * stride_os + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=q_mask)


@triton.jit(do_not_specialize=["num_splits"])
def _paged_decode_attention_reduce_kernel(
    part_out_ptr, part_lse_ptr, out_ptr, num_splits, stride_os, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    # One program per (sequence, query head): merge the splits' partial outputs by their LSE.
    seq = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    row = seq * tl.num_programs(1) + head
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_s = offs_s < num_splits
    mask_d = offs_d < HEAD_DIM
    lse = tl.load(part_lse_ptr + row * num_splits + offs_s, mask=mask_s, other=float("-inf"))
    lse_max = tl.max(lse, 0)
    safe_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)
    w = tl.math.exp2(lse - safe_max)  # 0 for empty splits
    part = tl.load(
        part_out_ptr + (row * num_splits + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
        mask=mask_s[:, None] & mask_d[None, :],
        other=0.0,
    )
    w_sum = tl.sum(w, 0)
    o = tl.sum(part * w[:, None], 0) / tl.where(w_sum > 0, w_sum, 1.0)
    tl.store(
        out_ptr + seq * stride_os + head * stride_oh + offs_d,
        o.to(out_ptr.dtype.element_ty),
        mask=mask_d,
    )


def _decode_num_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, device) -> int:
    """The split count for this launch (kernels/decode_splits.py)."""
    return decode_num_splits(num_seqs, num_kv_heads, max_seq_len, num_sms(device))


def paged_decode_attention(
    query: torch.Tensor,  # [num_seqs, num_heads, head_dim], one token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [num_seqs, max_num_blocks] int
    seq_lens: torch.Tensor,  # [num_seqs] int, context length incl. the query token
    scale: float,
    max_seq_len: int,  # host-side upper bound on seq_lens: picks the split count only
    out: torch.Tensor | None = None,  # [num_seqs, num_heads, head_dim]
    **launch,  # num_splits, block_n, num_warps, num_stages (plan_decode_attention)
) -> torch.Tensor:
    """Decode attention over the paged cache (Triton): GQA-packed, split-KV with an LSE merge.

    CUDA-graph capturable: no host sync, the grid and the scratch buffers depend only on shapes
    and the Python ints `max_seq_len` / `num_splits`. A sequence with seq_len 0 gets zeros.
    """
    plan = plan_decode_attention(query, k_cache, v_cache, block_tables, seq_lens, scale,
                                 max_seq_len, out, **launch)  # fmt: skip
    return plan(k_cache, v_cache)


def plan_decode_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    max_seq_len: int,
    out: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,  # override the heuristic (tests, benchmarks)
    block_n: int | None = None,
    num_warps: int = 4,
    num_stages: int = 3,
) -> AttentionPlan:
    """`paged_decode_attention`'s launches for this batch, for any layer's caches of the shape
    of `k_cache` (kernels/launch.py): checks, split count and scratch buffers done once."""
    out = torch.empty_like(query) if out is None else out
    num_seqs, num_heads, head_dim = query.shape
    check_common(query, k_cache, v_cache, block_tables, seq_lens, out, num_seqs)
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
    if num_seqs == 0:
        return AttentionPlan([], out)
    group = num_heads // num_kv_heads
    if num_splits is None:
        num_splits = _decode_num_splits(num_seqs, num_kv_heads, max_seq_len, query.device)
    if block_n is None:
        block_n = 32 if query.dtype == torch.float32 else 64
    part_out = part_lse = out  # unused placeholders when there is one split
    if num_splits > 1:
        part_out = torch.empty(
            (num_seqs, num_heads, num_splits, head_dim), dtype=torch.float32, device=query.device
        )
        part_lse = torch.empty((num_seqs, num_heads, num_splits), dtype=torch.float32,
                               device=query.device)  # fmt: skip
    block_d = max(16, triton.next_power_of_2(head_dim))
    launches = [KernelLaunch(_paged_decode_attention_kernel, (num_seqs, num_kv_heads, num_splits), dict(
        q_ptr=query, k_cache_ptr=k_cache, v_cache_ptr=v_cache, block_tables_ptr=block_tables,
        seq_lens_ptr=seq_lens, out_ptr=out, part_out_ptr=part_out, part_lse_ptr=part_lse,
        qk_scale=scale * LOG2E, num_splits=num_splits,
        stride_qs=query.stride(0), stride_qh=query.stride(1), stride_os=out.stride(0),
        stride_oh=out.stride(1), stride_bt=block_tables.stride(0),
        stride_cb=k_cache.stride(0), stride_ct=k_cache.stride(1), stride_ch=k_cache.stride(2),
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_D=block_d, BLOCK_N=block_n, PAGE_SIZE=page_size, SPLIT=num_splits > 1,
        DOT_PRECISION=dot_precision(query.dtype),
    ), dict(num_warps=num_warps, num_stages=num_stages))]  # fmt: skip
    if num_splits > 1:
        launches.append(KernelLaunch(_paged_decode_attention_reduce_kernel, (num_seqs, num_heads), dict(
            part_out_ptr=part_out, part_lse_ptr=part_lse, out_ptr=out, num_splits=num_splits,
            stride_os=out.stride(0), stride_oh=out.stride(1),
            HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_S=triton.next_power_of_2(num_splits),
        )))  # fmt: skip
    return AttentionPlan(launches, out)
