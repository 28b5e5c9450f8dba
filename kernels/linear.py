"""Skinny linear layer (Triton): out = x @ weight.T (+ bias) for few rows, split over K.

A decode step multiplies a few hundred rows at most by each weight matrix, so the step is a
read of the weights. cuBLAS tiles such a GEMM over the output columns only: a [m, 4096] x
[4096, 6144] product gets 48 tiles for 132 SMs and reads the weights at about a third of the
copy bandwidth (`python -m harness.bench gemm`). Here each program takes a narrow column tile
and one slice of K; the slices' float32 partial sums are then added in a fixed order (no
atomics: the result is the same on every run) by a second kernel that also adds the bias.

`linear_ref` is the reference (torch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.paged_common import dot_precision, num_sms


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """Reference: torch's linear (x [m, k], weight [n, k], bias [n]) -> [m, n]."""
    return F.linear(x, weight, bias)


@triton.jit(do_not_specialize=["M", "k_per_split"])
def _skinny_linear_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, ws_ptr, M, N, K, k_per_split,
    stride_xm, stride_wn, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr,
    HAS_BIAS: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    # Row tiles vary fastest: programs that share a weight tile run together (L2 reuse).
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    k_start = pid_s * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_start, k_end, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        if EVEN_K:
            a = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None], other=0.0)
            if EVEN_N:
                b = tl.load(w_rows + offs_k[None, :])
            else:
                b = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None], other=0.0)
        else:
            mask_k = offs_k < k_end
            a = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            b = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=DOT_PRECISION)
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT:  # float32 partial sums: [num_splits, M, N]
        ws = ws_ptr + (pid_s * M + offs_m.to(tl.int64))[:, None] * N + offs_n[None, :]
        tl.store(ws, acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        out = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["M", "num_splits"])
def _split_sum_kernel(ws_ptr, b_ptr, out_ptr, M, N, num_splits, stride_om,
                      HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    # One program per (row, column block): the splits' partial sums in order, then the bias.
    m = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(num_splits):
        acc += tl.load(ws_ptr + (s * M + m) * N + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_om + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def skinny_config(m: int, n: int, k: int, dtype: torch.dtype, device) -> dict:
    """Tile sizes and K split for an [m, k] x [n, k]^T product (see `linear`)."""
    block_m = max(16, min(64, triton.next_power_of_2(m)))
    block_n = 64
    block_k = 64 if dtype == torch.float32 else 128
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    # Enough programs for ~2 per SM, each still looping over >= 4 K tiles.
    split = 1
    while tiles * split < 2 * num_sms(device) and k // (block_k * split * 2) >= 4:
        split *= 2
    return {"block_m": block_m, "block_n": block_n, "block_k": block_k, "split": split,
            "num_warps": 4, "num_stages": 3 if dtype == torch.float32 else 4}  # fmt: skip


def linear(
    x: torch.Tensor,  # [m, k]
    weight: torch.Tensor,  # [n, k], contiguous rows
    bias: torch.Tensor | None = None,  # [n]
    out: torch.Tensor | None = None,  # [m, n]
    **config,  # overrides of `skinny_config` (benchmarks, tests)
) -> torch.Tensor:
    """x @ weight.T + bias through the split-K skinny kernel; no host sync (graph-capturable:
    the partial-sum buffer is allocated from the current stream's pool)."""
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} and weight {tuple(weight.shape)} "
                         "must be [m, k] and [n, k]")  # fmt: skip
    if x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError("linear: x and weight need unit stride along k")
    if x.dtype != weight.dtype or (bias is not None and bias.shape != (weight.shape[0],)):
        raise ValueError("linear: x and weight must share a dtype; bias must be [n]")
    m, k = x.shape
    n = weight.shape[0]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device) if out is None else out
    if m == 0:
        return out
    c = skinny_config(m, n, k, x.dtype, x.device) | config
    split = max(1, min(c["split"], triton.cdiv(k, c["block_k"])))
    k_per_split = triton.cdiv(triton.cdiv(k, split), c["block_k"]) * c["block_k"]
    split = triton.cdiv(k, k_per_split)
    ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else out
    grid = (triton.cdiv(m, c["block_m"]), triton.cdiv(n, c["block_n"]), split)
    _skinny_linear_kernel[grid](
        x, weight, bias if bias is not None else x, out, ws, m, n, k, k_per_split,
        x.stride(0), weight.stride(0), out.stride(0),
        BLOCK_M=c["block_m"], BLOCK_N=c["block_n"], BLOCK_K=c["block_k"], SPLIT=split > 1,
        HAS_BIAS=bias is not None, EVEN_N=n % c["block_n"] == 0,
        EVEN_K=k % c["block_k"] == 0 and k_per_split % c["block_k"] == 0,
        DOT_PRECISION=dot_precision(x.dtype), num_warps=c["num_warps"], num_stages=c["num_stages"],
    )  # fmt: skip
    if split > 1:
        block = min(1024, triton.next_power_of_2(n))
        _split_sum_kernel[(m, triton.cdiv(n, block))](
            ws, bias if bias is not None else ws, out, m, n, split, out.stride(0),
            HAS_BIAS=bias is not None, BLOCK=block,
        )  # fmt: skip
    return out
