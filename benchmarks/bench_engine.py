"""`python benchmarks/bench_engine.py SECTION... --out DIR`: the engine's speed on one GPU, with
peers (was `python -m harness.bench`: the lab bench is not part of the product package).

Sections (in the order given; every figure is printed as a line and kept in DIR/bench.json,
which is rewritten after every section):
  offline   ShareGPT lengths, all requests at t=0, forced output lengths (vLLM's filter); every
            run's per-step records in DIR/offline_steps.csv
  peers     the same requests (a subset) through HF transformers continuous batching and
            static `generate` with padding, and through this engine, in the same process
  load      the bursty workload at three arrival rates for fcfs, chunked_prefill, preempt_cpu

The hardware and kernel sections that this script held until 2026-12 (ceilings, roofline,
decode, gemm, attention, profile) are `python benchmarks/bench_kernels.py model SECTION...`.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks.bench_kernels import build_model  # noqa: E402
from harness.config import CONF_DIR, register  # noqa: E402
from harness.request import RequestSpec  # noqa: E402


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def sharegpt_specs(path: str, n: int, vocab_size: int, seed: int = 0) -> list[RequestSpec]:
    """vLLM's ShareGPT filter (4 <= prompt <= 1024, output >= 4, prompt + output <= 2048),
    a seeded sample of n, random prompt ids, every request at t=0."""
    df = pd.read_csv(path)
    p, o = df["num_prefill_tokens"].to_numpy(), df["num_decode_tokens"].to_numpy()
    keep = (p >= 4) & (p <= 1024) & (o >= 4) & (p + o <= 2048)
    rng = np.random.default_rng(seed)
    rows = rng.choice(np.flatnonzero(keep), size=n, replace=False)
    return [
        RequestSpec(
            f"s{i:05d}", 0.0, tuple(rng.integers(0, vocab_size, int(p[r])).tolist()), int(o[r])
        )
        for i, r in enumerate(rows)
    ]


def engine_run(model, specs, policy: str, *overrides: str, steps_sink: list | None = None) -> dict:
    """One run of this engine on prebuilt requests; returns the summary (+ step stats).
    `steps_sink` receives the run's per-step frame."""
    from harness.run import run

    cfg = compose(
        f"policy={policy}", "engine=cuda", "logger=none", "engine.progress=false",
        "engine.max_model_len=2048", *overrides,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = run(cfg, None, specs=specs, model=model)
    s, steps = result.summary, result.steps
    if steps_sink is not None:
        steps_sink.append(steps)
    out = {k: s[k] for k in ("output_throughput_tok_s", "total_throughput_tok_s", "duration_s",
                             "num_steps", "num_finished", "num_preemptions")}  # fmt: skip
    out["p99_ttft_s"], out["p99_tpot_s"] = s["ttft_s"]["p99"], s["tpot_s"]["p99"]
    out["wall_s_incl_setup"] = time.perf_counter() - t0
    out["num_gpu_blocks"] = (result.resolved or {}).get("num_gpu_blocks")
    if len(steps):
        host = steps["host_time_s"].to_numpy()
        dur = steps["duration_s"].to_numpy()
        out["host_share_of_step_mean"] = float((host / dur).mean())
        dec = steps[(steps.num_prefill_tokens == 0) & (steps.num_decode_tokens >= 200)]
        if len(dec):
            out["host_share_decode_ge200"] = float((dec.host_time_s / dec.duration_s).mean())
            out["decode_ge200_step_ms"] = float(dec.duration_s.median() * 1e3)
        kinds = {
            "prefill_only": (steps.num_decode_tokens == 0) & (steps.num_prefill_tokens > 0),
            "decode_only": (steps.num_prefill_tokens == 0) & (steps.num_decode_tokens > 0),
            "mixed": (steps.num_prefill_tokens > 0) & (steps.num_decode_tokens > 0),
        }
        out["step_kinds"] = {
            k: {"steps": int(m.sum()), "duration_s": float(steps.duration_s[m].sum()),
                "device_s": float(steps.device_time_s[m].sum()),
                "prefill_tokens": int(steps.num_prefill_tokens[m].sum()),
                "decode_tokens": int(steps.num_decode_tokens[m].sum())}
            for k, m in kinds.items()
        }  # fmt: skip
        if steps["device_time_s"].notna().all():
            # how much of the run the GPU was busy (pipelined steps: gaps are host waits)
            out["device_busy_share"] = float(steps.device_time_s.sum() / s["duration_s"])
        moved = int(steps.num_swapped_out_blocks.sum() + steps.num_swapped_in_blocks.sum())
        if moved:
            out["swapped_blocks"] = moved
            out["swap_ms_per_block"] = float(steps.swap_time_s.sum() / moved * 1e3)
    out["policy"], out["overrides"] = policy, list(overrides)
    del result
    gc.collect()  # the run's KV cache and CUDA-graph pools go before the next run sizes its own
    torch.cuda.empty_cache()
    return out


def offline(model, trace: str, n: int, configs: list[str], steps_csv: Path | None = None) -> dict:
    """Each config is `policy:max_num_batched_tokens:max_num_seqs`. `steps_csv`: every run's
    per-step records (device and host time, tokens, KV blocks in use), one file."""
    specs = sharegpt_specs(trace, n, model.args.vocab_size)
    res = {"num_requests": n, "output_tokens": sum(s.max_output_tokens for s in specs)}
    frames = []
    for config in configs:
        policy, budget, seqs = config.split(":")
        key = f"{policy}_tokens{budget}_seqs{seqs}"
        sink: list = []
        res[key] = engine_run(
            model, specs, policy, f"budget.max_num_batched_tokens={budget}",
            f"budget.max_num_seqs={seqs}", steps_sink=sink,
        )  # fmt: skip
        frames += [f.assign(config=key) for f in sink]
        print(key, json.dumps(res[key]), flush=True)
        if steps_csv is not None:
            pd.concat(frames).to_csv(steps_csv, index=False)
    return res


def hf_model(args):
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size, num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads, num_key_value_heads=args.num_kv_heads,
        head_dim=args.head_dim, max_position_embeddings=4096, rope_theta=args.rope_theta,
        tie_word_embeddings=args.tie_word_embeddings,
    )  # fmt: skip
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        hf = transformers.LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    return hf.eval()


def hf_continuous(hf, specs) -> dict:
    from transformers import GenerationConfig

    gc_ = GenerationConfig(
        max_new_tokens=max(s.max_output_tokens for s in specs), do_sample=False,
        eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    manager = hf.init_continuous_batching(generation_config=gc_)
    manager.start()
    t0 = time.perf_counter()
    for s in specs:
        manager.add_request(
            list(s.prompt_ids), request_id=s.request_id, max_new_tokens=s.max_output_tokens
        )
    tokens, done = 0, 0
    while done < len(specs):
        r = manager.get_result(timeout=60)
        if r is None:
            break
        if r.is_finished():
            done += 1
            tokens += len(r.generated_tokens)
    elapsed = time.perf_counter() - t0
    manager.stop(block=True)
    return {
        "output_tok_s": tokens / elapsed,
        "output_tokens": tokens,
        "finished": done,
        "s": elapsed,
    }


@torch.inference_mode()
def hf_static(hf, specs, batch_size: int = 32) -> dict:
    """Static batching: left-padded batches in arrival order, each decoding to its longest."""
    t0, tokens = time.perf_counter(), 0
    for i in range(0, len(specs), batch_size):
        chunk = specs[i : i + batch_size]
        width = max(len(s.prompt_ids) for s in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(chunk):
            ids[j, width - len(s.prompt_ids) :] = torch.tensor(s.prompt_ids)
            mask[j, width - len(s.prompt_ids) :] = 1
        n = max(s.max_output_tokens for s in chunk)
        hf.generate(
            ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=n, min_new_tokens=n,
            do_sample=False, pad_token_id=0, eos_token_id=None,
        )  # fmt: skip
        tokens += sum(s.max_output_tokens for s in chunk)  # what the users asked for
    elapsed = time.perf_counter() - t0
    return {
        "output_tok_s": tokens / elapsed,
        "output_tokens": tokens,
        "s": elapsed,
        "batch_size": batch_size,
    }


def uniform_specs(n: int, vocab_size: int, seed: int = 0) -> list[RequestSpec]:
    """The issue's peer workload: prompts uniform in [64, 1024], outputs uniform in [32, 512]."""
    rng = np.random.default_rng(seed)
    return [
        RequestSpec(f"u{i:05d}", 0.0, tuple(rng.integers(0, vocab_size, int(rng.integers(64, 1025))).tolist()),
                    int(rng.integers(32, 513)))
        for i in range(n)
    ]  # fmt: skip


def peers(
    preset: str,
    trace: str,
    n: int,
    workload: str = "sharegpt",
    static_batch: int = 64,
    policies: tuple[str, ...] = ("fcfs",),
    with_static: bool = True,
    with_continuous: bool = True,
) -> dict:
    """This engine (each policy) and the HF peers on the same requests, in one process."""
    model = build_model(preset)
    if workload == "uniform":
        specs = uniform_specs(n, model.args.vocab_size, seed=1)
    else:
        specs = sharegpt_specs(trace, n, model.args.vocab_size, seed=1)
    res = {"num_requests": n, "workload": workload}
    for policy in policies:  # `name` or `name:max_num_batched_tokens`
        name, _, budget = policy.partition(":")
        budget = budget or (8192 if name == "fcfs" else 2048)
        res[f"engine_{policy}"] = engine_run(
            model, specs, name, f"budget.max_num_batched_tokens={budget}",
            "budget.max_num_seqs=256",
        )  # fmt: skip
        print("peers engine", policy, json.dumps(res[f"engine_{policy}"]), flush=True)
    args = model.args
    del model
    gc.collect()
    torch.cuda.empty_cache()
    hf = hf_model(args)
    static = lambda hf, specs: hf_static(hf, specs, static_batch)  # noqa: E731
    runs = [("hf_continuous", hf_continuous)] if with_continuous else []
    runs += [("hf_static", static)] if with_static else []
    for name, fn in runs:
        try:
            res[name] = fn(hf, specs)
        except Exception as exc:  # a peer's API drift must not cost the other figures
            res[name] = {"error": repr(exc)}
        print("peers", name, json.dumps(res[name]), flush=True)
    for policy in policies:
        ours = res[f"engine_{policy}"]["output_throughput_tok_s"]
        for name, _ in runs:
            if "output_tok_s" in res[name]:
                res[f"ratio_{policy}_vs_{name}"] = ours / res[name]["output_tok_s"]
    return res


def load(
    model, rates, n: int, blocks: int = 400, policies=("fcfs", "chunked_prefill", "preempt_cpu")
):
    res = {}
    for policy in policies:
        for rate in rates:
            key = f"{policy}_rate{rate:g}"
            res[key] = engine_run(
                model, None, policy, "workload=bursty", f"workload.num_requests={n}",
                f"workload.arrival.rate={rate}", f"budget.num_gpu_blocks={blocks}",
                "budget.max_num_seqs=64", "budget.num_cpu_blocks=4000",
            )  # fmt: skip
            print(key, json.dumps(res[key]), flush=True)
    return res


SECTIONS = ("offline", "peers", "load")
MOVED = ("ceilings", "roofline", "decode", "gemm", "attention", "profile")  # to bench_kernels.py


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sections", nargs="+", metavar="SECTION", help=", ".join(SECTIONS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="llama3_8b")
    ap.add_argument("--trace", default=None, help="default: sharegpt from the traces folder")
    ap.add_argument("--num-requests", type=int, default=1000)
    ap.add_argument("--peer-requests", type=int, default=256)
    ap.add_argument("--peer-workload", choices=["uniform", "sharegpt"], default="uniform")
    ap.add_argument("--peer-static-batch", type=int, default=64)
    ap.add_argument("--peer-policies", nargs="+", default=["fcfs", "chunked_prefill"])
    ap.add_argument("--peer-skip-static", action="store_true")
    ap.add_argument("--peer-skip-continuous", action="store_true")
    ap.add_argument("--load-blocks", type=int, default=400)
    ap.add_argument(
        "--load-policies", nargs="+", default=["fcfs", "chunked_prefill", "preempt_cpu"]
    )
    ap.add_argument("--load-requests", type=int, default=400)
    ap.add_argument("--rates", type=float, nargs=3, default=[20.0, 40.0, 80.0])
    ap.add_argument("--offline-configs", nargs="+", default=["fcfs:8192:256", "fcfs:8192:512",
                    "chunked_prefill:2048:256"])  # fmt: skip
    a = ap.parse_args()
    for section in a.sections:
        if section in MOVED:
            ap.error(
                f"section {section!r} moved: python benchmarks/bench_kernels.py model {section}"
            )
        if section not in SECTIONS:
            ap.error(f"unknown section {section!r} (choose from {', '.join(SECTIONS)})")
    if a.trace is None:
        from workloads.fetch import trace_file

        a.trace = trace_file("sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
    a.out.mkdir(parents=True, exist_ok=True)
    results = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
               "model": a.model, "torch": torch.__version__}  # fmt: skip
    model = None
    for section in a.sections:
        t0 = time.perf_counter()
        try:
            if section == "peers":
                model = None
                gc.collect()
                torch.cuda.empty_cache()
                results[section] = peers(
                    a.model,
                    a.trace,
                    a.peer_requests,
                    a.peer_workload,
                    a.peer_static_batch,
                    tuple(a.peer_policies),
                    not a.peer_skip_static,
                    not a.peer_skip_continuous,
                )
            else:
                model = model or build_model(a.model)
                if section == "offline":
                    results[section] = offline(model, a.trace, a.num_requests, a.offline_configs,
                                               a.out / "offline_steps.csv")  # fmt: skip
                elif section == "load":
                    results[section] = load(
                        model, a.rates, a.load_requests, a.load_blocks, a.load_policies
                    )
        except Exception as exc:
            import traceback

            traceback.print_exc()
            results[section] = {"error": repr(exc)}
        results.setdefault("section_s", {})[section] = time.perf_counter() - t0
        print(section, json.dumps(results[section]), flush=True)
        (a.out / "bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
