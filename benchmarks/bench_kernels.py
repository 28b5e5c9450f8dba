"""GPU benchmarks for kernels/: ceilings, paged decode, extend, unified-vs-two, swap (issue 3).

Run on a CUDA machine: `python benchmarks/bench_kernels.py --out DIR`. Writes
DIR/kernels_<device>_<date>.md (tables) and DIR/kernels_<device>_<date>.json (every number).
Times are `triton.testing.do_bench` medians. Each section is independent: one failing is
recorded and the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from kernels.kv_swap import swap_blocks  # noqa: E402
from kernels.paged_attention import paged_decode_attention, paged_extend_attention  # noqa: E402

# llama3_8b attention shapes
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, NUM_LAYERS = 32, 8, 128, 32
DTYPE = torch.bfloat16
DEVICE = "cuda"
SCALE = HEAD_DIM**-0.5
BYTES = 2  # bf16


def bench_ms(fn, rep: int = 60) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median")


def graph_ms(fn, rep: int = 60) -> float:
    """Median time of a CUDA-graph replay of `fn` (no host launch overhead, as the engine runs
    decode steps). `fn` runs once eagerly first, so Triton compiles outside the capture."""
    fn()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench_ms(graph.replay, rep=rep)


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


def log(*args) -> None:
    print(*args, flush=True)


# ----------------------------------------------------------------------------- ceilings


def _copy_ceiling() -> float:
    n_bytes = 2 << 30
    x = torch.randn(n_bytes // BYTES, dtype=DTYPE, device=DEVICE)
    y = torch.empty_like(x)
    return 2 * n_bytes / bench_ms(lambda: y.copy_(x)) / 1e9


def _matmul_ceiling() -> float:
    a = torch.randn(8192, 8192, dtype=DTYPE, device=DEVICE)
    b = torch.randn(8192, 8192, dtype=DTYPE, device=DEVICE)
    return 2 * 8192**3 / bench_ms(lambda: a @ b) / 1e9


def ceilings() -> dict:
    """Device copy bandwidth (bytes read + written) and bf16 matmul rate, on random data."""
    res = {"copy_TBps": _copy_ceiling(), "matmul_TFLOPs": _matmul_ceiling()}
    log(f"ceilings: copy {res['copy_TBps']:.2f} TB/s, matmul {res['matmul_TFLOPs']:.0f} TFLOP/s")
    return res


# ----------------------------------------------------------------------------- paged data


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sections", default="ceilings,decode,extend,unified,swap,tune")
    args = parser.parse_args()
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
        ("ceilings", ceilings),
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


if __name__ == "__main__":
    main()
