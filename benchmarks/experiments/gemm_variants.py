"""Experiment: linear-layer implementations at decode row counts on the GPU (L2-cold weights).

Compares torch's F.linear (cuBLAS / cuBLASLt), a split-K strided-batched cuBLAS GEMM, and a Triton
swap-AB split-K kernel, each replayed in a CUDA graph over rotating weight copies so every call
reads its weights from HBM as a model's layers do.

    python benchmarks/experiments/gemm_variants.py --out gemm_variants.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import argparse
import itertools
import json
import sys
import time

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from benchmarks.bench_kernels import graph_timed


@triton.jit(do_not_specialize=["M"])
def _swap_ab_kernel(
    x_ptr, w_ptr, out_ptr, M, N, stride_xm, stride_wn, stride_os, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, K_ITERS: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    k0 = pid_s * K_ITERS * BLOCK_K
    w_ptrs = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn + (k0 + offs_k)[None, :]
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + (k0 + offs_k)[None, :]
    mask_m = offs_m < M
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for _kk in range(K_ITERS):
        w = tl.load(w_ptrs)
        x = tl.load(x_ptrs, mask=mask_m[:, None], other=0.0)
        acc = tl.dot(w, tl.trans(x), acc)
        w_ptrs += BLOCK_K
        x_ptrs += BLOCK_K
    o_ptrs = (
        out_ptr + pid_s * stride_os + offs_m.to(tl.int64)[None, :] * stride_om + offs_n[:, None]
    )
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_m[None, :])


@triton.jit(do_not_specialize=["MN"])
def _sum_kernel(ws_ptr, out_ptr, MN, NUM_SPLITS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(NUM_SPLITS):
        acc += tl.load(ws_ptr + s * MN + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def swap_ab(x, w, split, block_m, block_n, block_k, warps, stages):
    m, k = x.shape
    n = w.shape[0]
    kps = k // split
    if split == 1:
        out = torch.empty((m, n), device=x.device, dtype=x.dtype)
        ws, s_os = out, 0
    else:
        ws = torch.empty((split, m, n), device=x.device, dtype=torch.float32)
        s_os = m * n
    grid = (triton.cdiv(m, block_m), n // block_n, split)
    _swap_ab_kernel[grid](x, w, ws, m, n, x.stride(0), w.stride(0), s_os, n,
                          BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, K_ITERS=kps // block_k,
                          num_warps=warps, num_stages=stages)  # fmt: skip
    if split == 1:
        return ws
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
    _sum_kernel[(triton.cdiv(m * n, 1024),)](ws, out, m * n, NUM_SPLITS=split, BLOCK=1024)
    return out


def bmm_split(x, w, split):
    m, k = x.shape
    n = w.shape[0]
    xs = x.view(m, split, k // split).transpose(0, 1)  # [S, m, k/S]
    wt = w.view(n, split, k // split).permute(1, 2, 0)  # [S, k/S, n]
    return torch.bmm(xs, wt).sum(0)


def bmm_split_f32(x, w, split):
    m, k = x.shape
    n = w.shape[0]
    xs = x.view(m, split, k // split).transpose(0, 1)
    wt = w.view(n, split, k // split).permute(1, 2, 0)
    return torch.bmm(xs, wt, out_dtype=torch.float32).sum(0).to(x.dtype)


SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gemm_variants.json")
    ap.add_argument("--rows", default="1,8,16,32,64,96,128,192,256,384,512,768,1024")
    ap.add_argument("--copy-GBps", type=float, default=2923.0)
    ap.add_argument("--tflops", type=float, default=768.0)
    a = ap.parse_args()
    rows = [int(r) for r in a.rows.split(",")]
    torch.manual_seed(0)
    results = []
    t_start = time.time()
    for name, (n, k) in SHAPES.items():
        copies = max(2, -(-400 * 2**20 // (n * k * 2)))  # >= 400 MiB of weights: L2-cold
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
              for _ in range(copies)]  # fmt: skip
        for m in rows:
            xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            ref = F.linear(xs[0].float(), ws[0].float())
            floor = max((n * k + m * k + m * n) * 2 / (a.copy_GBps * 1e9),
                        2 * m * n * k / (a.tflops * 1e12))  # fmt: skip
            row = {"linear": name, "m": m, "n": n, "k": k, "floor_us": floor * 1e6, "v": {}}

            def run(label, fn, xs=xs, ws=ws, ref=ref, row=row):
                try:
                    err = (fn(xs[0], ws[0]).float() - ref).abs().max().item()
                    t = graph_timed(fn, list(zip(xs, ws, strict=True)))
                    row["v"][label] = {"us": t * 1e6, "err": err}
                except Exception as e:  # noqa: BLE001
                    row["v"][label] = {"error": repr(e)[:200]}

            for lib in ("cublas", "cublaslt"):
                torch.backends.cuda.preferred_blas_library(lib)
                run(f"linear_{lib}", F.linear)
                for sp in (2, 4):
                    run(f"bmm{sp}_{lib}", lambda x, w, sp=sp: bmm_split(x, w, sp))
                run(f"bmm2f32_{lib}", lambda x, w: bmm_split_f32(x, w, 2))
            torch.backends.cuda.preferred_blas_library("cublas")
            bms = sorted({max(16, min(64, triton.next_power_of_2(m))), 64, 128}
                         if m > 64 else {max(16, triton.next_power_of_2(m))})  # fmt: skip
            for bm, bn, bk, sp, st in itertools.product(bms, (64, 128), (128,), (1, 2, 4, 8),
                                                        (4,)):  # fmt: skip
                if k % (sp * bk) or n % bn:
                    continue
                warps = 8 if bm * bn >= 128 * 64 else 4
                run(f"swap_m{bm}n{bn}k{bk}s{sp}st{st}",
                    lambda x, w, c=(sp, bm, bn, bk, warps, st): swap_ab(x, w, *c))  # fmt: skip
            ok = {kk: vv["us"] for kk, vv in row["v"].items() if "us" in vv and vv["err"] < 0.1}
            best = min(ok, key=ok.get)
            row["best"], row["best_us"] = best, ok[best]
            results.append(row)
            lin = row["v"]["linear_cublas"].get("us", float("nan"))
            print(f"{name:8s} m={m:5d} floor {floor * 1e6:7.1f} cublas {lin:7.1f} "
                  f"lt {row['v']['linear_cublaslt'].get('us', float('nan')):7.1f} "
                  f"bmm2 {row['v']['bmm2_cublas'].get('us', float('nan')):7.1f} "
                  f"best {best} {ok[best]:7.1f}  ({time.time() - t_start:.0f}s)", flush=True)  # fmt: skip
        del ws
        torch.cuda.empty_cache()
    json.dump({"device": torch.cuda.get_device_name(), "rows": results}, open(a.out, "w"))


if __name__ == "__main__":
    sys.exit(main())
