"""`python benchmarks/bench_kernels.py COMMAND ...`: the GPU's ceilings, the model's layers and
steps against them, and the kernels of `kernels/` alone. (The engine's own benchmarks, offline,
peers and load, are `benchmarks/bench_engine.py`.)

Commands (each needs a CUDA device; `COMMAND --help` lists its options):
  model SECTION... --out DIR [--model llama3_8b]
      The hardware sections that `benchmarks/bench_engine.py` and, before it,
      `python -m harness.bench` ran; one JSON, DIR/model.json, rewritten after every section:
        ceilings   device copy bandwidth (read + write) and bf16 matmul rate (CUDA events)
        roofline   a decode step at batch 256 x context 1k against (weights + KV bytes) / copy
                   bandwidth; an 8k-token prefill against the bf16 matmul rate
        decode     CUDA-graph decode steps over batch sizes and contexts against the same floor
        gemm       the model's linear layers over row counts against their byte / FLOP floors
        attention  the paged decode attention kernel over context mixes, split heuristic vs fixed
        profile    kernel time breakdown of one eager decode step at batch 256 x context 1k
  kernels --out DIR [--sections ceilings,decode,extend,unified,swap,tune]
      Issue 3's kernel report (was `python benchmarks/bench_kernels.py --out DIR`): paged decode
      and extend attention against SDPA flash, unified vs two launches, launch tuning, KV swap.
      Writes DIR/kernels_<device>_<date>.md (tables) and .json (every number), after every
      section. Times are `triton.testing.do_bench` medians; a section that fails is recorded and
      the others still run.

The timing helpers (`timed`, `bench_ms`, `capture_graph`, `graph_timed`, `graph_ms`) and the
builders (`build_model`, `decode_batch`, `triton_backend`, `ceilings`) are public: the scripts of
`benchmarks/experiments/` import them.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from kernels.kv_swap import swap_blocks  # noqa: E402
from kernels.paged_attention import paged_decode_attention, paged_extend_attention  # noqa: E402

# llama3_8b attention shapes (the `kernels` command)
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, NUM_LAYERS = 32, 8, 128, 32
DTYPE = torch.bfloat16
DEVICE = "cuda"
SCALE = HEAD_DIM**-0.5
BYTES = 2  # bf16


def log(*args) -> None:
    print(*args, flush=True)


# ----------------------------------------------------------------------------- timing helpers


def timed(fn, warmup: int = 3, iters: int = 10) -> float:
    """Median seconds of `fn()` on the device (events around each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return float(np.median(times))


def bench_ms(fn, rep: int = 60) -> float:
    """Median milliseconds of `fn()` by `triton.testing.do_bench` (L2 flushed between calls)."""
    return triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median")


def capture_graph(fn):
    """(graph, output) of `fn()` captured in a CUDA graph, after one run on a side stream
    (Triton compiles and the allocator settles outside the capture)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def graph_timed(fn, args: list[tuple], reps: int = 4) -> float:
    """Median seconds of one `fn(*a)` call, replayed in a CUDA graph that cycles through `args`
    (`reps` times), as a model's layers run inside a decode graph: no launch gaps, and with
    enough distinct weight copies in `args` every call reads its weights from HBM, not L2."""

    def cycle(n: int = reps):
        for _ in range(n):
            for a in args:
                fn(*a)

    graph, _ = capture_graph(cycle)
    return timed(graph.replay, warmup=1, iters=5) / (reps * len(args))


def graph_ms(fn, rep: int = 60) -> float:
    """Median time of a CUDA-graph replay of `fn` (no host launch overhead, as the engine runs
    decode steps). `fn` runs once eagerly first, so Triton compiles outside the capture."""
    fn()
    graph, _ = capture_graph(fn)
    return bench_ms(graph.replay, rep=rep)


def ceilings(timer=timed, copy_bytes: int = 2**29) -> dict:
    """Device copy bandwidth (bytes read + written, GB/s) over a `copy_bytes` bf16 buffer and the
    bf16 matmul rate (8192^3, TFLOP/s), on random data; `timer(fn)` gives seconds. The defaults
    (CUDA events, 512 MiB) are the `model` command's; the `kernels` report times a 2 GiB copy with
    `do_bench`, and the two give different figures (H200: 4106 vs 4270 GB/s, 787 vs 716 TFLOP/s),
    so each record names its command."""
    x = torch.randn(copy_bytes // BYTES, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    copy_s = timer(lambda: y.copy_(x))
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_s = timer(lambda: a @ b)
    return {
        "copy_GBps": 2 * copy_bytes / copy_s / 1e9,
        "bf16_matmul_TFLOPs": 2 * 8192**3 / mm_s / 1e12,
    }


# ----------------------------------------------------------------------------- model builders


def build_model(preset: str):
    from harness.models.loader import build_model

    return build_model(preset, None, torch.device("cuda"), torch.bfloat16, seed=0)


def triton_backend():
    from harness.models.attention import TritonAttention

    return TritonAttention()


def decode_batch(bs: int, ctx: int, block: int, vocab: int):
    """bs one-token decodes at context ctx, each on its own consecutive blocks."""
    from harness.executors.base import Batch

    per_seq = -(-ctx // block)
    tables = np.arange(bs * per_seq, dtype=np.int32).reshape(bs, per_seq)
    return Batch(
        input_ids=np.random.randint(0, vocab, bs), positions=np.full(bs, ctx - 1, np.int64),
        slot_mapping=tables[:, (ctx - 1) // block].astype(np.int64) * block + (ctx - 1) % block,
        query_start_loc=np.arange(bs + 1, dtype=np.int32), seq_lens=np.full(bs, ctx, np.int32),
        block_tables=tables, logits_indices=np.arange(bs), max_query_len=1, max_seq_len=ctx,
    )  # fmt: skip


# ----------------------------------------------------------------------------- model sections


@torch.inference_mode()
def roofline(model, copy_GBps: float, matmul_TFLOPs: float) -> dict:
    from harness.executors.base import Batch
    from harness.executors.model_runner import ModelRunner, kv_block_bytes

    a, bs, ctx, block = model.args, 256, 1024, 16
    per_seq = ctx // block
    runner = ModelRunner(model, bs * per_seq + 8, 0, block, backend=triton_backend(), cuda_graphs=True,
                         max_num_seqs=bs, max_model_len=2048)  # fmt: skip
    batch = decode_batch(bs, ctx, block, a.vocab_size)
    runner.kv_cache.normal_()
    decode_s = timed(lambda: runner.execute(batch), warmup=3, iters=20)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes = bs * per_seq * kv_block_bytes(model, block, torch.bfloat16)
    floor_s = (weight_bytes + kv_bytes) / (copy_GBps * 1e9)
    res = {"decode_batch": bs, "decode_ctx": ctx, "decode_step_ms": decode_s * 1e3,
           "decode_floor_ms": floor_s * 1e3, "decode_over_floor": decode_s / floor_s}  # fmt: skip
    del runner
    torch.cuda.empty_cache()
    # Prefill: 8 sequences of 1024 new tokens (8192 tokens), eager.
    n_seq, q = 8, 1024
    runner = ModelRunner(model, n_seq * q // block + 8, 0, block, backend=triton_backend())
    tables = np.arange(n_seq * q // block, dtype=np.int32).reshape(n_seq, -1)
    posq = np.tile(np.arange(q), n_seq)
    batch = Batch(
        input_ids=np.random.randint(0, a.vocab_size, n_seq * q), positions=posq,
        slot_mapping=(tables[np.repeat(np.arange(n_seq), q), posq // block].astype(np.int64) * block
                      + posq % block),
        query_start_loc=np.arange(0, n_seq * q + 1, q, dtype=np.int32),
        seq_lens=np.full(n_seq, q, np.int32), block_tables=tables,
        logits_indices=np.arange(q - 1, n_seq * q, q), max_query_len=q, max_seq_len=q,
    )  # fmt: skip
    prefill_s = timed(lambda: runner.execute(batch), warmup=2, iters=5)
    matmul_params = weight_bytes / 2 - a.vocab_size * a.hidden_size  # embedding is a lookup
    attn_flops = 4 * a.num_layers * a.num_heads * a.head_dim * n_seq * q * q / 2
    flops = 2 * matmul_params * n_seq * q + attn_flops
    res.update({"prefill_tokens": n_seq * q, "prefill_ms": prefill_s * 1e3,
                "prefill_TFLOPs": flops / prefill_s / 1e12,
                "prefill_share_of_matmul_peak": flops / prefill_s / 1e12 / matmul_TFLOPs})  # fmt: skip
    return res


@torch.inference_mode()
def decode_sweep(
    model,
    copy_GBps: float,
    matmul_TFLOPs: float,
    sizes=(1, 16, 32, 64, 128, 192, 256, 384, 512),
    contexts=(512, 1024, 2048),
) -> dict:
    """Graph-replayed decode steps (staging, sampling and the read-back included) at each batch
    size and context that fits the memory, against max(weight + KV bytes / copy bandwidth,
    matmul FLOPs / matmul rate + KV bytes / copy bandwidth)."""
    from harness.executors.model_runner import ModelRunner, kv_block_bytes

    block = 16
    block_bytes = kv_block_bytes(model, block, torch.bfloat16)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    weight_bytes -= model.args.vocab_size * model.args.hidden_size * 2  # embedding: a lookup
    matmul_params = weight_bytes / 2
    free = torch.cuda.mem_get_info()[0]
    num_blocks = min(max(sizes) * -(-max(contexts) // block), int(free * 0.75) // block_bytes)
    runner = ModelRunner(
        model, num_blocks, 0, block, backend=triton_backend(), cuda_graphs=True,
        max_num_seqs=max(sizes), max_model_len=max(contexts),
    )  # fmt: skip
    runner.kv_cache.normal_()
    rows = []
    for ctx in contexts:
        for bs in sizes:
            if bs * -(-ctx // block) > num_blocks:
                continue
            batch = decode_batch(bs, ctx, block, model.args.vocab_size)
            step_s = timed(lambda b=batch, r=runner: r.execute(b), warmup=3, iters=10)
            kv_s = bs * -(-ctx // block) * block_bytes / (copy_GBps * 1e9)
            mem_s = weight_bytes / (copy_GBps * 1e9) + kv_s
            flop_s = 2 * matmul_params * bs / (matmul_TFLOPs * 1e12) + kv_s
            floor_s = max(mem_s, flop_s)
            rows.append({"batch": bs, "context": ctx, "step_ms": step_s * 1e3,
                         "floor_ms": floor_s * 1e3, "over_floor": step_s / floor_s})  # fmt: skip
            print("decode", json.dumps(rows[-1]), flush=True)
    runner = None  # noqa: F841  (its KV cache goes before the next section)
    torch.cuda.empty_cache()
    return {"rows": rows}


@torch.inference_mode()
def gemm_sweep(model, copy_GBps: float, matmul_TFLOPs: float,
               rows=(1, 16, 32, 64, 128, 192, 256, 384, 512, 1024, 2048, 8192)) -> dict:  # fmt: skip
    """The model's linear layers (one layer's four, and the LM head) at each row count, through
    cuBLAS (torch's default) and cuBLASLt, against max(bytes / copy bandwidth, FLOPs / matmul
    rate): where a decode step's GEMM time goes. Each layer is timed inside a CUDA graph over
    enough weight copies (>= 400 MiB) that its weights come from HBM, as in a decode step."""
    layer = model.layers[0]
    linears = {"qkv": layer.self_attn.qkv_proj, "o": layer.self_attn.o_proj,
               "gate_up": layer.mlp.gate_up_proj, "down": layer.mlp.down_proj,
               "lm_head": model.lm_head}  # fmt: skip
    out = []
    for name, lin in linears.items():
        n, k = lin.weight.shape
        w = lin.weight
        copies = max(1, -(-400 * 2**20 // w.nbytes))
        weights = [w] + [torch.randn_like(w) for _ in range(copies - 1)]
        for m in rows:
            args = [(torch.randn(m, k, device="cuda", dtype=w.dtype), wc) for wc in weights]
            nbytes = (n * k + m * k + m * n) * 2
            floor = max(nbytes / (copy_GBps * 1e9), 2 * m * n * k / (matmul_TFLOPs * 1e12))
            row = {"linear": name, "m": m, "n": n, "k": k, "floor_us": floor * 1e6}
            for lib in ("cublas", "cublaslt"):
                torch.backends.cuda.preferred_blas_library(lib)
                t = graph_timed(torch.nn.functional.linear, args)
                row[f"{lib}_us"], row[f"{lib}_over_floor"] = t * 1e6, t / floor
            torch.backends.cuda.preferred_blas_library("cublas")
            out.append(row)
            print("gemm", json.dumps(row), flush=True)
        del weights, args
        torch.cuda.empty_cache()
    return {"rows": out}


@torch.inference_mode()
def attention_sweep(copy_GBps: float, num_heads=32, num_kv_heads=8, head_dim=128,
                    block=16) -> dict:  # fmt: skip
    """The decode attention kernel alone on the llama3_8b shape, over context mixes a run meets
    (uniform, ragged, one long sequence among short ones, few long ones), with the split
    heuristic and with fixed split counts, against the KV bytes read / copy bandwidth.
    `max_seq_len` is 2048, what a decode graph captured for that model length passes, except
    for the 16k case. Eager launches: the small cases are launch-bound and L2-warm."""
    from kernels import paged_decode as dec

    gen = np.random.default_rng(0)
    cases = {
        "uniform1k_b256": ([1024] * 256, 2048),
        "ragged_b128": (gen.integers(16, 2049, 128).tolist(), 2048),
        "ragged_b338": (gen.integers(16, 2049, 338).tolist(), 2048),
        "ragged_b512": (gen.integers(16, 2049, 512).tolist(), 2048),
        "one_long_b256": ([256] * 255 + [2048], 2048),
        "b1_2k": ([2048], 2048),
        "b8_2k": ([2048] * 8, 2048),
        "b32_2k": ([2048] * 32, 2048),
        "b4_16k": ([16384] * 4, 16384),
    }
    rows = []
    for case, (lens, max_len) in cases.items():
        per_seq = -(-max(lens) // block)
        n = len(lens)
        k_cache = torch.randn(n * per_seq, block, num_kv_heads, head_dim, device="cuda",
                              dtype=torch.bfloat16)  # fmt: skip
        v_cache = torch.randn_like(k_cache)
        tables = torch.randperm(n * per_seq, device="cuda", dtype=torch.int32).view(n, per_seq)
        seq_lens = torch.tensor(lens, device="cuda", dtype=torch.int32)
        q = torch.randn(n, num_heads, head_dim, device="cuda", dtype=torch.bfloat16)
        out = torch.empty_like(q)
        kv_bytes = sum(lens) * num_kv_heads * head_dim * 2 * 2
        floor = kv_bytes / (copy_GBps * 1e9)
        row = {"case": case, "num_seqs": n, "mean_len": float(np.mean(lens)),
               "floor_us": floor * 1e6, "heuristic_splits":
               dec._decode_num_splits(n, num_kv_heads, max_len, q.device)}  # fmt: skip
        choices = {"heuristic": {}} | {f"splits{s}": {"num_splits": s} for s in (1, 2, 4, 8)}
        ref = dec.paged_decode_attention(q, k_cache, v_cache, tables, seq_lens, 0.08, max_len,
                                        num_splits=1).float()  # fmt: skip
        args = (q, k_cache, v_cache, tables, seq_lens, 0.08, max_len)
        for label, kw in choices.items():
            t = timed(
                lambda a=args, o=out, kw=kw: dec.paged_decode_attention(*a, out=o, **kw), 3, 20
            )
            err = (out.float() - ref).abs().max().item()
            row[label] = {"us": t * 1e6, "over_floor": t / floor, "max_err": err}
        rows.append(row)
        print("attention", json.dumps(row), flush=True)
        del k_cache, v_cache, args
        torch.cuda.empty_cache()
    return {"rows": rows}


@torch.inference_mode()
def profile(model) -> dict:
    """Kernel time breakdown of one eager decode step at batch 256 x context 1k."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from harness.executors.model_runner import ModelRunner

    bs, ctx, block = 256, 1024, 16
    runner = ModelRunner(model, bs * (ctx // block) + 8, 0, block, backend=triton_backend())
    batch = decode_batch(bs, ctx, block, model.args.vocab_size)
    for _ in range(3):
        runner.execute(batch)
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            runner.execute(batch)
    rows = []
    for e in prof.key_averages():
        if e.device_time_total > 0:
            rows.append((e.key[:80], e.device_time_total / 5 / 1e3, e.count // 5))
    rows.sort(key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    for name, ms, n in rows[:15]:
        print(f"{ms:8.3f} ms  x{n:<4d} {name}", flush=True)
    return {"total_kernel_ms": total, "top": rows[:15]}


# ----------------------------------------------------------------------------- kernels: helpers


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def sdpa_flash(q4, k4, v4, is_causal: bool = False):
    """A callable running SDPA's flash backend on [B, heads, L, D] views (GQA native if it can)."""

    def run(enable_gqa=True, k=k4, v=v4):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(
                q4, k, v, is_causal=is_causal, scale=SCALE, enable_gqa=enable_gqa
            )

    try:
        run()
        return run
    except RuntimeError:  # older flash without GQA: repeat K/V (costs memory and bandwidth)
        group = q4.shape[1] // k4.shape[1]
        k, v = k4.repeat_interleave(group, 1), v4.repeat_interleave(group, 1)
        run(enable_gqa=False, k=k, v=v)
        log("note: SDPA flash needed repeated K/V (no native GQA)")
        return lambda: run(enable_gqa=False, k=k, v=v)


def free_bytes() -> int:
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info()[0]


# ----------------------------------------------------------------------------- kernels: ceilings


def report_ceilings() -> dict:
    """The report's ceilings: a 2 GiB copy and the 8192^3 matmul, timed by `do_bench`."""
    c = ceilings(timer=lambda fn: bench_ms(fn) / 1e3, copy_bytes=2 << 30)
    res = {"copy_TBps": c["copy_GBps"] / 1e3, "matmul_TFLOPs": c["bf16_matmul_TFLOPs"]}
    log(f"ceilings: copy {res['copy_TBps']:.2f} TB/s, matmul {res['matmul_TFLOPs']:.0f} TFLOP/s")
    return res


# ----------------------------------------------------------------------------- kernels: paged data


def to_paged(k: torch.Tensor, v: torch.Tensor, block_size: int):
    """Contiguous [B, L, kv_heads, D] K/V -> a paged cache with randomly scattered blocks."""
    batch, length = k.shape[:2]
    blocks_per_seq = length // block_size
    perm = torch.randperm(batch * blocks_per_seq, device=DEVICE)
    shape = (batch * blocks_per_seq, block_size, NUM_KV_HEADS, HEAD_DIM)
    k_cache = torch.empty(shape, dtype=k.dtype, device=DEVICE)
    v_cache = torch.empty(shape, dtype=k.dtype, device=DEVICE)
    k_cache[perm] = k.reshape(shape)
    v_cache[perm] = v.reshape(shape)
    block_tables = perm.view(batch, blocks_per_seq).to(torch.int32)
    return k_cache, v_cache, block_tables


class DecodeCase:
    """One decode batch: contiguous K/V for SDPA, then (after `page()`) the paged copy."""

    def __init__(self, batch: int, ctx: int, block_size: int = 16) -> None:
        self.batch, self.ctx, self.block_size = batch, ctx, block_size
        self.k = torch.randn(batch, ctx, NUM_KV_HEADS, HEAD_DIM, dtype=DTYPE, device=DEVICE)
        self.v = torch.randn_like(self.k)
        self.q = torch.randn(batch, NUM_HEADS, HEAD_DIM, dtype=DTYPE, device=DEVICE)
        self.out = torch.empty_like(self.q)
        self.seq_lens = torch.full((batch,), ctx, dtype=torch.int32, device=DEVICE)
        self.bytes = 2 * self.k.numel() * BYTES + 2 * self.q.numel() * BYTES

    def sdpa(self):
        q4, k4, v4 = self.q.unsqueeze(2), self.k.transpose(1, 2), self.v.transpose(1, 2)
        return sdpa_flash(q4, k4, v4)

    def page(self) -> None:
        """Build the paged cache and drop the contiguous copy."""
        self.k_cache, self.v_cache, self.block_tables = to_paged(self.k, self.v, self.block_size)
        self.k = self.v = None

    def run(self, **overrides) -> torch.Tensor:
        return paged_decode_attention(
            self.q, self.k_cache, self.v_cache, self.block_tables, self.seq_lens, SCALE,
            max_seq_len=self.ctx, out=self.out, **overrides,
        )  # fmt: skip


# ----------------------------------------------------------------------------- decode


def decode_grid(copy_tbps: float) -> list[dict]:
    """Paged decode vs SDPA flash (contiguous, same data) over batch x context, block 16; a few
    shapes again with block 32."""
    shapes = [(b, c, 16) for b in (1, 32, 128, 256) for c in (512, 2048, 8192, 32768)]
    shapes += [(32, 2048, 32), (32, 8192, 32), (128, 2048, 32), (256, 8192, 32)]
    rows = []
    for batch, ctx, block_size in shapes:
        kv_bytes = 2 * batch * ctx * NUM_KV_HEADS * HEAD_DIM * BYTES
        if 2 * kv_bytes + (1 << 30) > free_bytes():
            rows.append({"batch": batch, "ctx": ctx, "skipped": "does not fit twice"})
            log(f"decode B={batch} ctx={ctx}: skipped (memory)")
            continue
        rows.append(_decode_one(DecodeCase(batch, ctx, block_size), copy_tbps))
        log("decode", json.dumps(rows[-1]))
    return rows


def _decode_one(case: DecodeCase, copy_tbps: float) -> dict:
    row = {"batch": case.batch, "ctx": case.ctx, "block": case.block_size}
    ref = None
    try:
        sdpa = case.sdpa()
        ref = sdpa().squeeze(2)
        row["sdpa_us"] = graph_ms(sdpa) * 1e3
        row["sdpa_eager_us"] = bench_ms(sdpa) * 1e3
        del sdpa
    except RuntimeError as e:
        row["sdpa_error"] = str(e)[:200]
    case.page()
    case.run()
    if ref is not None:
        row["err_vs_sdpa"] = rel_err(case.out, ref)
    row["triton_us"] = graph_ms(case.run) * 1e3
    row["triton_eager_us"] = bench_ms(case.run) * 1e3
    row["triton_TBps"] = case.bytes / row["triton_us"] / 1e6
    row["frac_of_copy"] = row["triton_TBps"] / copy_tbps
    if "sdpa_us" in row:
        row["sdpa_TBps"] = case.bytes / row["sdpa_us"] / 1e6
        row["triton_over_sdpa_time"] = row["triton_us"] / row["sdpa_us"]
    return row


DECODE_VARIANTS = [{}] + [
    dict(block_n=bn, num_stages=s, num_splits=sp)
    for bn in (32, 64, 128)
    for s in (3, 4)
    for sp in (None, 4, 16, 32)
]


def decode_tuning() -> list[dict]:
    """Time launch variants at a few shapes; the default launch is the first row of each."""
    rows = []
    for batch, ctx in ((1, 32768), (32, 2048), (32, 8192), (128, 2048), (256, 8192)):
        case = DecodeCase(batch, ctx)
        case.page()
        shape_rows = [
            _time_variant(case.run, var, case.bytes / 1e6, "TBps") for var in DECODE_VARIANTS
        ]
        rows += [{"batch": batch, "ctx": ctx, **r} for r in shape_rows]
        best = min((r for r in shape_rows if "us" in r), key=lambda r: r["us"])
        log(f"decode tuning B={batch} ctx={ctx}: default {shape_rows[0]}, best {best}")
    return rows


def _time_variant(fn, var: dict, work: float, unit: str, timer=None) -> dict:
    """`work` / us gives the rate in `unit`. A variant that fails to compile is recorded."""
    try:
        us = (timer or bench_ms)(functools.partial(fn, **var), rep=25) * 1e3
    except Exception as e:  # e.g. out of shared memory for a large tile
        return {**var, "error": str(e)[:120]}
    return {**var, "us": us, unit: work / us}


# ----------------------------------------------------------------------------- extend


def _causal_flops(q_lens, seq_lens) -> float:
    """4 * heads * head_dim * (number of (query, key) pairs a causal chunk attends)."""
    pairs = sum(q * (s - q) + q * (q + 1) / 2 for q, s in zip(q_lens, seq_lens, strict=True))
    return 4 * NUM_HEADS * HEAD_DIM * pairs


class ExtendCase:
    """Chunks of `q_lens` query tokens ending sequences of `seq_lens`, over a paged cache."""

    def __init__(self, q_lens: list[int], seq_lens: list[int], block_size: int = 16) -> None:
        self.q_lens, self.seq_lens = q_lens, seq_lens
        padded = -(-max(seq_lens) // block_size) * block_size
        self.k = torch.randn(len(seq_lens), padded, NUM_KV_HEADS, HEAD_DIM, dtype=DTYPE, device=DEVICE)  # fmt: skip
        self.v = torch.randn_like(self.k)
        self.k_cache, self.v_cache, self.block_tables = to_paged(self.k, self.v, block_size)
        self.query = torch.randn(sum(q_lens), NUM_HEADS, HEAD_DIM, dtype=DTYPE, device=DEVICE)
        starts = [0, *torch.tensor(q_lens).cumsum(0).tolist()]
        self.qsl = torch.tensor(starts, dtype=torch.int32, device=DEVICE)
        self.lens = torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE)
        self.out = torch.full_like(self.query, float("nan"))
        self.flops = _causal_flops(q_lens, seq_lens)

    def run(self, **overrides) -> torch.Tensor:
        return paged_extend_attention(
            self.query, self.k_cache, self.v_cache, self.block_tables, self.qsl, self.lens,
            max(self.q_lens), SCALE, out=self.out, **overrides,
        )  # fmt: skip

    def run_two(self, num_decodes: int) -> torch.Tensor:
        """The same batch as a decode launch (first `num_decodes` rows) plus an extend launch."""
        return self.run(
            num_decode_seqs=num_decodes, max_decode_seq_len=max(self.seq_lens[:num_decodes])
        )

    def sdpa(self):
        """SDPA flash on the same data, unpaged; square causal chunks only (no prefix)."""
        n, length = len(self.q_lens), self.q_lens[0]
        q4 = self.query.view(n, length, NUM_HEADS, HEAD_DIM).transpose(1, 2)
        k4, v4 = self.k[:, :length].transpose(1, 2), self.v[:, :length].transpose(1, 2)
        return sdpa_flash(q4, k4, v4, is_causal=True)


EXTEND_CASES = [  # (q_lens, seq_lens)
    ([2048], [2048]),
    ([8192], [8192]),
    ([1024] * 8, [1024] * 8),
    ([2048] * 4, [2048] * 4),
    ([512] * 4, [2048] * 4),
    ([2048], [8192]),
]


def extend_grid() -> list[dict]:
    """Extend attention TFLOP/s vs SDPA flash unpaged (prefills) and alone (chunks with prefix)."""
    rows = []
    for q_lens, seq_lens in EXTEND_CASES:
        case = ExtendCase(q_lens, seq_lens)
        case.run()
        row = {"q_lens": f"{len(q_lens)}x{q_lens[0]}", "seq_len": seq_lens[0]}
        row["triton_us"] = bench_ms(case.run) * 1e3
        row["triton_TFLOPs"] = case.flops / row["triton_us"] / 1e6
        if q_lens == seq_lens:
            try:
                sdpa = case.sdpa()
                row["err_vs_sdpa"] = rel_err(case.out, sdpa().transpose(1, 2).reshape_as(case.out))
                row["sdpa_us"] = bench_ms(sdpa) * 1e3
                row["sdpa_TFLOPs"] = case.flops / row["sdpa_us"] / 1e6
                row["sdpa_over_triton_rate"] = row["sdpa_TFLOPs"] / row["triton_TFLOPs"]
            except RuntimeError as e:
                row["sdpa_error"] = str(e)[:200]
        log("extend", json.dumps(row))
        rows.append(row)
    return rows


EXTEND_VARIANTS = [{}] + [
    dict(block_q=bq, block_n=bn, num_warps=w, num_stages=s)
    for bq in (16, 32)
    for bn in (32, 64, 128)
    for w in (4, 8)
    for s in (3, 4)
]


def extend_tuning() -> list[dict]:
    rows = []
    for q_lens, seq_lens in (([2048] * 4, [2048] * 4), ([512] * 4, [2048] * 4)):
        case = ExtendCase(q_lens, seq_lens)
        label = f"{len(q_lens)}x{q_lens[0]}/{seq_lens[0]}"
        case_rows = [
            _time_variant(case.run, v, case.flops / 1e6, "TFLOPs") for v in EXTEND_VARIANTS
        ]
        rows += [{"case": label, **r} for r in case_rows]
        best = min((r for r in case_rows if "us" in r), key=lambda r: r["us"])
        log(f"extend tuning {label}: default {case_rows[0]}, best {best}")
    return rows


# ----------------------------------------------------------------------------- unified vs two

UNIFIED_CASES = [  # (num_decodes, decode ctx, prefill q_lens, prefill seq_lens)
    (63, 2048, [512], [2048]),
    (255, 4096, [2048], [2048]),
    (31, 8192, [256, 256], [4096, 1024]),
    (128, 2048, [], []),
    (8, 32768, [], []),
]


def unified_vs_two() -> list[dict]:
    """Mixed batches (decode rows first): one extend launch vs a decode and an extend launch."""
    rows = []
    for num_dec, dec_ctx, pq, ps in UNIFIED_CASES:
        case = ExtendCase([1] * num_dec + pq, [dec_ctx] * num_dec + ps)
        two = functools.partial(case.run_two, num_dec)
        case.run()
        unified_out = case.out.clone()
        two()
        row = {"decodes": f"{num_dec}x{dec_ctx}", "prefills": f"{pq}/{ps}"}
        row["err_unified_vs_two"] = rel_err(unified_out, case.out)
        row["unified_us"] = graph_ms(case.run) * 1e3
        row["two_us"] = graph_ms(two) * 1e3
        row["unified_over_two"] = row["unified_us"] / row["two_us"]
        log("unified_vs_two", json.dumps(row))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- swap

SWAP_BLOCK = 16
SWAP_BLOCK_BYTES = NUM_LAYERS * 2 * SWAP_BLOCK * NUM_KV_HEADS * HEAD_DIM * BYTES  # 2 MiB


def _swap_shape(num_blocks: int) -> tuple:
    return (NUM_LAYERS, 2, num_blocks, SWAP_BLOCK, NUM_KV_HEADS, HEAD_DIM)


def _pinned_copy_rates() -> dict:
    """One large (2 GB) pinned copy each way: the swap's reference rate."""
    dev = torch.randn(1000 * SWAP_BLOCK_BYTES // BYTES, dtype=DTYPE, device=DEVICE)
    host = torch.empty(dev.shape, dtype=DTYPE).pin_memory()
    n = dev.numel() * BYTES
    d2h = n / bench_ms(lambda: host.copy_(dev, non_blocking=True)) / 1e6
    h2d = n / bench_ms(lambda: dev.copy_(host, non_blocking=True)) / 1e6
    return {"d2h_GBps": d2h, "h2d_GBps": h2d}


def _swap_one(gpu, host, n, host_layout, mode, ref) -> dict:
    dev_ids = torch.randperm(gpu.shape[2])[:n]
    host_ids = torch.arange(n) if host_layout == "contiguous" else torch.randperm(host.shape[2])[:n]
    row = {"blocks": n, "host_ids": host_layout, "mode": mode}
    try:
        out_ms = bench_ms(lambda: swap_blocks(gpu, host, dev_ids, host_ids, mode=mode), rep=40)
        in_ms = bench_ms(lambda: swap_blocks(host, gpu, host_ids, dev_ids, mode=mode), rep=40)
    except Exception as e:
        return {**row, "error": str(e)[:200]}
    row["out_GBps"] = n * SWAP_BLOCK_BYTES / out_ms / 1e6
    row["in_GBps"] = n * SWAP_BLOCK_BYTES / in_ms / 1e6
    row["out_frac"] = row["out_GBps"] / ref["d2h_GBps"]
    row["in_frac"] = row["in_GBps"] / ref["h2d_GBps"]
    return row


def swap_grid() -> dict:
    """Swap GB/s (every layer, K and V) for 1..1000 blocks vs one large pinned copy."""
    ref = _pinned_copy_rates()
    log("swap reference (one 2 GB pinned copy):", ref)
    gpu = torch.randn(_swap_shape(2048), dtype=DTYPE, device=DEVICE)
    host = torch.empty(_swap_shape(1024), dtype=DTYPE).pin_memory()
    rows = []
    for n in (1, 4, 16, 64, 256, 1000):
        for host_layout in ("contiguous", "scattered"):
            for mode in ("staged", "zero_copy"):
                if mode == "staged" and host_layout == "scattered" and n > 64:
                    continue  # n runs x 64 copies each: known slow, minutes to time
                rows.append(_swap_one(gpu, host, n, host_layout, mode, ref))
                log("swap", json.dumps(rows[-1]))
    return {"reference": ref, "rows": rows}


# ----------------------------------------------------------------------------- report


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("BENCH_COMMIT", "unknown")


def _table(rows: list[dict], keys: list[str]) -> str:
    def fmt(x):
        return f"{x:.3g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(res: dict, out_dir: Path) -> Path:
    name = f"kernels_{res['device_slug']}_{res['date']}"
    (out_dir / f"{name}.json").write_text(json.dumps(res, indent=1))
    parts = [
        f"# Kernel benchmarks: {res['device']}, {res['date']}, commit {res['commit']}",
        f"torch {res['torch']}, triton {res['triton']}; `triton.testing.do_bench` medians; bf16; "
        f"llama3_8b attention ({NUM_HEADS} q heads, {NUM_KV_HEADS} kv heads, head dim {HEAD_DIM}).",
    ]
    if "ceilings" in res:
        c = res["ceilings"]
        parts.append(f"\nCeilings: copy {c['copy_TBps']:.2f} TB/s (read+write), bf16 matmul "
                     f"{c['matmul_TFLOPs']:.0f} TFLOP/s.")  # fmt: skip
    decode_cols = ["batch", "ctx", "block", "triton_us", "triton_TBps", "frac_of_copy", "sdpa_us"]
    decode_cols += ["triton_over_sdpa_time", "triton_eager_us", "sdpa_eager_us", "err_vs_sdpa"]
    extend_cols = ["q_lens", "seq_len", "triton_us", "triton_TFLOPs", "sdpa_TFLOPs"]
    extend_cols += ["sdpa_over_triton_rate", "err_vs_sdpa"]
    unified_cols = ["decodes", "prefills", "unified_us", "two_us", "unified_over_two"]
    unified_cols += ["err_unified_vs_two"]
    sections = [
        (
            "decode",
            "Paged decode vs SDPA flash on contiguous K/V (CUDA-graph replays; eager too)",
            decode_cols,
        ),
        ("extend", "Extend attention vs SDPA flash, unpaged (square causal only)", extend_cols),
        (
            "unified",
            "Unified (one extend launch) vs two kernels (decode + extend), CUDA graphs",
            unified_cols,
        ),
    ]
    for key, title, cols in sections:
        if key in res:
            parts += [f"\n## {title}\n", _table(res[key], cols)]
    if "swap" in res:
        ref = res["swap"]["reference"]
        parts += [
            f"\n## Swap (32 layers x K/V, 2 MiB per block): one 2 GB pinned copy = "
            f"{ref['d2h_GBps']:.1f} GB/s D2H, {ref['h2d_GBps']:.1f} GB/s H2D\n",
            _table(
                res["swap"]["rows"],
                [
                    "blocks",
                    "host_ids",
                    "mode",
                    "out_GBps",
                    "out_frac",
                    "in_GBps",
                    "in_frac",
                    "error",
                ],
            ),  # fmt: skip
        ]
    if res.get("errors"):
        parts += ["\n## Errors\n", "\n".join(f"- {k}: {v}" for k, v in res["errors"].items())]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def kernels_report(args: argparse.Namespace) -> None:
    """The `kernels` command: issue 3's report, a section at a time."""
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name()
    res = {
        "device": device,
        "device_slug": device.lower().replace("nvidia", "").strip().replace(" ", "_")[:24],
        "date": datetime.date.today().isoformat(),
        "commit": _commit(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "errors": {},
    }
    sections = args.sections.split(",")
    steps = [
        ("ceilings", report_ceilings),
        ("decode", lambda: decode_grid(res.get("ceilings", {}).get("copy_TBps", 3.0))),
        ("extend", extend_grid),
        ("unified", unified_vs_two),
        ("tune_decode", decode_tuning),
        ("tune_extend", extend_tuning),
        ("swap", swap_grid),  # last: its zero-copy mode touches host memory from a kernel
    ]
    for key, fn in steps:
        if key.split("_")[0] not in sections:
            continue
        t0 = time.time()
        try:
            res[key] = fn()
        except Exception:
            res["errors"][key] = traceback.format_exc()[-600:]
            log(f"{key} FAILED:\n{res['errors'][key]}")
        log(f"[{key}: {time.time() - t0:.0f} s]")
        write_report(res, args.out)  # after every section, so a timeout keeps what was done
    log((args.out / f"kernels_{res['device_slug']}_{res['date']}.md").read_text())


MODEL_SECTIONS = ("ceilings", "roofline", "decode", "gemm", "attention", "profile")


def model_sections(args: argparse.Namespace) -> None:
    """The `model` command: each section in the order given, into DIR/model.json."""
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
               "model": args.model, "torch": torch.__version__}  # fmt: skip
    model = None
    for section in args.sections:
        t0 = time.perf_counter()
        try:
            if section == "ceilings":
                results[section] = ceilings()
            elif section == "attention":
                c = results.setdefault("ceilings", ceilings())
                results[section] = attention_sweep(c["copy_GBps"])
            else:
                model = model or build_model(args.model)
                if section in ("roofline", "decode", "gemm"):
                    c = results.setdefault("ceilings", ceilings())
                    fn = {"roofline": roofline, "decode": decode_sweep, "gemm": gemm_sweep}[section]
                    results[section] = fn(model, c["copy_GBps"], c["bf16_matmul_TFLOPs"])
                elif section == "profile":
                    results[section] = profile(model)
        except Exception as exc:
            traceback.print_exc()
            results[section] = {"error": repr(exc)}
        results.setdefault("section_s", {})[section] = time.perf_counter() - t0
        log(section, json.dumps(results[section]))
        (args.out / "model.json").write_text(json.dumps(results, indent=2))
    del model
    gc.collect()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    m = commands.add_parser(
        "model", help="the model's layers and steps against the device's ceilings"
    )
    m.add_argument("sections", nargs="+", choices=MODEL_SECTIONS, metavar="SECTION",
                   help=", ".join(MODEL_SECTIONS))  # fmt: skip
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--model", default="llama3_8b", help="a model preset (default: llama3_8b)")
    m.set_defaults(fn=model_sections)
    kr = commands.add_parser("kernels", help="issue 3's kernel report (attention, swap)")
    kr.add_argument("--out", type=Path, required=True)
    kr.add_argument("--sections", default="ceilings,decode,extend,unified,swap,tune",
                    help="comma-separated (default: all)")  # fmt: skip
    kr.set_defaults(fn=kernels_report)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
