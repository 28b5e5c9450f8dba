"""Experiment: launch configurations of the paged decode attention kernel at large batches.

Each (block_n, num_warps, num_stages) is timed in a CUDA graph (no launch gaps) on the llama3_8b
attention shape over context mixes of a loaded run, against the KV bytes / copy bandwidth.

    python benchmarks/experiments/decode_attention_tune.py --out decode_attention_tune.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import argparse
import itertools
import json
import time

import numpy as np
import torch

from benchmarks.bench_kernels import ceilings, graph_timed
from kernels.paged_decode import paged_decode_attention


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="decode_attention_tune.json")
    a = ap.parse_args()
    heads, kv_heads, dim, block = 32, 8, 128, 16
    copy = ceilings()["copy_GBps"]
    gen = np.random.default_rng(0)
    cases = {
        "uniform1k_b256": [1024] * 256,
        "ragged_b338": gen.integers(16, 2049, 338).tolist(),
        "ragged_b640": gen.integers(16, 2049, 640).tolist(),
        "one_long_b256": [256] * 255 + [2048],
    }
    configs = list(itertools.product((32, 64, 128), (2, 4, 8), (2, 3, 4, 5)))
    rows = []
    t0 = time.time()
    for case, lens in cases.items():
        n, per_seq = len(lens), -(-max(lens) // block)
        k = torch.randn(n * per_seq, block, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        tables = torch.randperm(n * per_seq, device="cuda", dtype=torch.int32).view(n, per_seq)
        seq_lens = torch.tensor(lens, device="cuda", dtype=torch.int32)
        q = torch.randn(n, heads, dim, device="cuda", dtype=torch.bfloat16)
        out = torch.empty_like(q)
        floor = sum(lens) * kv_heads * dim * 4 / (copy * 1e9)
        ref = paged_decode_attention(q, k, v, tables, seq_lens, 0.08, 2048).float()
        res = {}
        args = (q, k, v, tables, seq_lens, 0.08, 2048)
        for bn, warps, stages in configs:
            kw = {"block_n": bn, "num_warps": warps, "num_stages": stages}

            def call(a=args, o=out, kw=kw):
                paged_decode_attention(*a, out=o, **kw)

            try:
                call()
                err = (out.float() - ref).abs().max().item()
                t = graph_timed(call, [()] * 8)
                res[f"n{bn}_w{warps}_s{stages}"] = {"us": t * 1e6, "over_floor": t / floor,
                                                    "err": err}  # fmt: skip
            except Exception as exc:  # noqa: BLE001 (e.g. out of shared memory)
                res[f"n{bn}_w{warps}_s{stages}"] = {"error": repr(exc)[:120]}
        ok = {c: r["us"] for c, r in res.items() if "us" in r and r["err"] < 0.05}
        best = min(ok, key=ok.get)
        base = res["n64_w4_s3"]["us"]
        print(f"{case}: floor {floor * 1e6:.0f} us, current n64_w4_s3 {base:.0f} us, best {best} "
              f"{ok[best]:.0f} us ({time.time() - t0:.0f}s)", flush=True)  # fmt: skip
        print("  top5:", sorted(ok.items(), key=lambda kv: kv[1])[:5], flush=True)
        rows.append({"case": case, "floor_us": floor * 1e6, "configs": res})
        del k, v, args
        torch.cuda.empty_cache()
    json.dump({"device": torch.cuda.get_device_name(), "copy_GBps": copy, "rows": rows},
              open(a.out, "w"))  # fmt: skip


if __name__ == "__main__":
    main()
