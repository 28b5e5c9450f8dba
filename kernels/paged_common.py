"""Pieces shared by the paged attention kernels: Triton tile helpers and input checks."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LOG2E = 1.4426950408889634


@triton.jit
def online_softmax_step(q, k, v, acc, m_i, l_i, keep, qk_scale, DOT_PRECISION: tl.constexpr):
    """One flash-attention step over a KV tile; `keep` masks scores (rows x keys) to -inf."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [M, N], log2 units
    s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def load_kv_tile(
    k_cache_ptr, v_cache_ptr, block_table_ptr, offs_n, mask_n, kv_head, offs_d, mask_d,
    stride_cb, stride_ct, stride_ch, PAGE_SIZE: tl.constexpr,
):  # fmt: skip
    """Gather K and V rows of tokens `offs_n` through the block table: two [N, D] tiles."""
    page = tl.load(block_table_ptr + offs_n // PAGE_SIZE, mask=mask_n, other=0).to(tl.int64)
    row = page * stride_cb + (offs_n % PAGE_SIZE) * stride_ct + kv_head * stride_ch
    ptr_off = row[:, None] + offs_d[None, :]
    mask = mask_n[:, None] & mask_d[None, :]
    k = tl.load(k_cache_ptr + ptr_off, mask=mask, other=0.0)
    v = tl.load(v_cache_ptr + ptr_off, mask=mask, other=0.0)
    return k, v


@functools.cache
def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 8  # interpreter: any small number exercises the split path


def check_common(query, k_cache, v_cache, block_tables, seq_lens, out, num_seqs) -> None:
    if query.dim() != 3:
        raise ValueError(f"query must be [tokens, num_heads, head_dim], got {tuple(query.shape)}")
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must both be [num_blocks, block_size, num_kv_heads, head_dim], "
            f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    num_heads, head_dim = query.shape[1:]
    num_kv_heads = k_cache.shape[2]
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"query head_dim {head_dim} != cache head_dim {k_cache.shape[3]}")
    if num_heads % num_kv_heads != 0:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    if head_dim > 256:
        raise ValueError(f"head_dim {head_dim} > 256 is not supported")
    if query.dtype not in DTYPES:
        raise ValueError(f"query dtype {query.dtype} not supported (fp32, bf16, fp16)")
    if k_cache.dtype != query.dtype or v_cache.dtype != query.dtype:
        raise ValueError(f"cache dtype {k_cache.dtype} must equal query dtype {query.dtype}")
    if k_cache.stride() != v_cache.stride():
        raise ValueError("k_cache and v_cache must have the same strides")
    for name, t in (("query", query), ("k_cache", k_cache), ("out", out)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must have a unit stride on head_dim, got {t.stride()}")
    if out.shape != query.shape or out.dtype != query.dtype:
        raise ValueError(f"out must be {tuple(query.shape)} {query.dtype}, got "
                         f"{tuple(out.shape)} {out.dtype}")  # fmt: skip
    if block_tables.dim() != 2 or block_tables.shape[0] != num_seqs:
        raise ValueError(f"block_tables must be [{num_seqs}, max_num_blocks], "
                         f"got {tuple(block_tables.shape)}")  # fmt: skip
    if block_tables.stride(1) != 1:
        raise ValueError(
            f"block_tables must be contiguous along blocks, got {block_tables.stride()}"
        )
    if seq_lens.shape != (num_seqs,) or not seq_lens.is_contiguous():
        raise ValueError(f"seq_lens must be a contiguous [{num_seqs}], got {tuple(seq_lens.shape)}")
    for name, t in (("block_tables", block_tables), ("seq_lens", seq_lens)):
        if t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be int32 or int64, got {t.dtype}")
    tensors = (query, k_cache, v_cache, block_tables, seq_lens, out)
    if len({t.device for t in tensors}) != 1:
        raise ValueError(f"all tensors must be on one device, got {[t.device for t in tensors]}")


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 runs in true fp32 ("ieee"): tf32 would cost ~3e-4 relative error against the reference.
    return "ieee" if dtype == torch.float32 else "tf32"
