"""Attention over a paged KV cache: varlen extend (chunked prefill) and single-token decode."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_LOG2E = 1.4426950408889634


def _gather_context(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The first `seq_len` tokens of one sequence's paged cache: [seq_len, num_kv_heads, head_dim]."""
    block_size = cache.shape[1]
    num_blocks = -(-seq_len // block_size)
    blocks = cache[
        block_table[:num_blocks].long()
    ]  # [num_blocks, block_size, num_kv_heads, head_dim]
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


# ----------------------------------------------------------------------------- Triton kernels


@triton.jit
def _online_softmax_step(q, k, v, acc, m_i, l_i, keep, qk_scale, DOT_PRECISION: tl.constexpr):
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
def _load_kv_tile(
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


@triton.jit
def _paged_decode_kernel(
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
        k, v = _load_kv_tile(
            k_cache_ptr, v_cache_ptr, bt_ptr, offs_n, mask_n, kv_head, offs_d, mask_d,
            stride_cb, stride_ct, stride_ch, PAGE_SIZE,
        )  # fmt: skip
        acc, m_i, l_i = _online_softmax_step(
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


@triton.jit
def _paged_decode_reduce_kernel(
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


@triton.jit
def _paged_extend_kernel(
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
        k, v = _load_kv_tile(
            k_cache_ptr, v_cache_ptr, bt_ptr, n0 + offs_n0, all_n, kv_head, offs_d, mask_d,
            stride_cb, stride_ct, stride_ch, PAGE_SIZE,
        )  # fmt: skip
        acc, m_i, l_i = _online_softmax_step(
            q, k, v, acc, m_i, l_i, all_n[None, :], qk_scale, DOT_PRECISION
        )
    for n0 in range(kv_full, kv_end, BLOCK_N):
        offs_n = n0 + offs_n0
        mask_n = offs_n < kv_end
        k, v = _load_kv_tile(
            k_cache_ptr, v_cache_ptr, bt_ptr, offs_n, mask_n, kv_head, offs_d, mask_d,
            stride_cb, stride_ct, stride_ch, PAGE_SIZE,
        )  # fmt: skip
        keep = mask_n[None, :] & (offs_n[None, :] <= q_pos[:, None])
        acc, m_i, l_i = _online_softmax_step(q, k, v, acc, m_i, l_i, keep, qk_scale, DOT_PRECISION)

    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    o_ptr = out_ptr + tokens[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :]
    tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=io_mask)


# ----------------------------------------------------------------------------- host wrappers


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 8  # interpreter: any small number exercises the split path


def _check_common(query, k_cache, v_cache, block_tables, seq_lens, out, num_seqs) -> None:
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
    if query.dtype not in _DTYPES:
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


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 runs in true fp32 ("ieee"): tf32 would cost ~3e-4 relative error against the reference.
    return "ieee" if dtype == torch.float32 else "tf32"


def _decode_num_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, device) -> int:
    """Enough (sequence, KV head, split) programs to fill the GPU twice, >= 256 tokens a split."""
    programs = num_seqs * num_kv_heads
    by_len = triton.cdiv(max_seq_len, 256)
    by_fill = triton.cdiv(2 * _num_sms(device), programs)
    return max(1, min(by_len, by_fill, 64))


def paged_decode_attention(
    query: torch.Tensor,  # [num_seqs, num_heads, head_dim], one token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [num_seqs, max_num_blocks] int
    seq_lens: torch.Tensor,  # [num_seqs] int, context length incl. the query token
    scale: float,
    max_seq_len: int,  # host-side upper bound on seq_lens: picks the split count only
    out: torch.Tensor | None = None,  # [num_seqs, num_heads, head_dim]
    *,
    num_splits: int | None = None,  # override the heuristic (tests, benchmarks)
    block_n: int | None = None,
    num_warps: int = 4,
    num_stages: int = 3,
) -> torch.Tensor:
    """Decode attention over the paged cache (Triton): GQA-packed, split-KV with an LSE merge.

    CUDA-graph capturable: no host sync, the grid and the scratch buffers depend only on shapes
    and the Python ints `max_seq_len` / `num_splits`. A sequence with seq_len 0 gets zeros.
    """
    out = torch.empty_like(query) if out is None else out
    num_seqs, num_heads, head_dim = query.shape
    _check_common(query, k_cache, v_cache, block_tables, seq_lens, out, num_seqs)
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
    if num_seqs == 0:
        return out
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
    _paged_decode_kernel[(num_seqs, num_kv_heads, num_splits)](
        query, k_cache, v_cache, block_tables, seq_lens, out, part_out, part_lse,
        scale * _LOG2E, num_splits,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_D=block_d, BLOCK_N=block_n, PAGE_SIZE=page_size, SPLIT=num_splits > 1,
        DOT_PRECISION=_dot_precision(query.dtype), num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    if num_splits > 1:
        _paged_decode_reduce_kernel[(num_seqs, num_heads)](
            part_out, part_lse, out, num_splits, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_S=triton.next_power_of_2(num_splits),
        )  # fmt: skip
    return out


def _extend_block_q(max_query_len: int, group: int, dtype: torch.dtype) -> int:
    """Query tokens per program: tiles of up to 128 (64 for fp32) rows of (token, head) pairs."""
    block_g = triton.next_power_of_2(group)
    max_rows = 64 if dtype == torch.float32 else 128
    rows = min(max_rows, max(16, block_g * triton.next_power_of_2(max_query_len)))
    return max(1, rows // block_g)


def _check_extend(query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
                  max_query_len: int, num_decode_seqs: int) -> None:  # fmt: skip
    num_seqs = seq_lens.shape[0]
    _check_common(query, k_cache, v_cache, block_tables, seq_lens, out, num_seqs)
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


def _launch_extend(query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
                   max_query_len, scale, block_q, block_n, num_warps, num_stages) -> None:  # fmt: skip
    num_tokens, num_heads, head_dim = query.shape
    num_seqs = seq_lens.shape[0]
    if num_seqs == 0 or num_tokens == 0:
        return
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
    _paged_extend_kernel[grid](
        query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
        scale * _LOG2E, num_seqs,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        GROUP=group, BLOCK_G=block_g, HEAD_DIM=head_dim,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)), BLOCK_Q=block_q, BLOCK_N=block_n,
        PAGE_SIZE=page_size, DOT_PRECISION=_dot_precision(query.dtype),
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip


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
    *,
    num_decode_seqs: int = 0,  # the first this many sequences have exactly 1 query token
    max_decode_seq_len: int | None = None,  # their host-side bound (default: table capacity)
    block_q: int | None = None,  # launch overrides (tests, benchmarks)
    block_n: int | None = None,
    num_warps: int = 4,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Chunked-prefill attention over the paged cache (Triton); also takes decode rows.

    Each sequence's query tokens are its last q_len positions and attend to the cached prefix
    plus themselves causally (their K/V must already be stored). Rows of `out` past
    query_start_loc[-1] (CUDA-graph padding) are left untouched. No host sync.

    Decode rows work either way, but a batch that lists its `num_decode_seqs` one-token
    sequences first runs them through the split-KV decode kernel: measured 1.7-3x faster on
    mixed batches than this kernel taking them too (benchmarks/kernels_h200_*.md).
    """
    out = torch.empty_like(query) if out is None else out
    d = num_decode_seqs
    _check_extend(query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
                  max_query_len, d)  # fmt: skip
    launch = (block_q, block_n, num_warps, num_stages)
    if d == 0:
        _launch_extend(query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
                       max_query_len, scale, *launch)  # fmt: skip
        return out
    bound = max_decode_seq_len or block_tables.shape[1] * k_cache.shape[1]
    paged_decode_attention(query[:d], k_cache, v_cache, block_tables[:d], seq_lens[:d], scale,
                           max_seq_len=bound, out=out[:d])  # fmt: skip
    if d == seq_lens.shape[0]:
        return out
    prefill_qsl = query_start_loc[d:] - d  # [num_seqs - d + 1], relative to row d
    _launch_extend(query[d:], k_cache, v_cache, block_tables[d:], prefill_qsl, seq_lens[d:],
                   out[d:], max_query_len, scale, *launch)  # fmt: skip
    return out
