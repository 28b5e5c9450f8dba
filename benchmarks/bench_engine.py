"""`python benchmarks/bench_engine.py SECTION... --out DIR`: the engine's speed on one GPU, with
a peer (was `python -m harness.bench`: the lab bench is not part of the product package).

Sections (each writes `DIR/<section>.json` and prints a line per figure):
  ceilings  device copy bandwidth (read + write) and bf16 matmul rate
  offline   ShareGPT lengths, all requests at t=0, forced output lengths (vLLM's filter)
  peers     the same requests (a subset) through HF transformers continuous batching and
            static `generate` with padding, and through this engine, in the same process
  roofline  a decode step at batch 256 x context 1k against (weights + KV bytes) / copy
            bandwidth; an 8k-token prefill against the bf16 matmul rate
  load      the bursty workload at three arrival rates for fcfs, chunked_prefill, preempt_cpu
  decode    CUDA-graph decode steps over batch sizes and contexts against the same floor
  gemm      the model's linear layers over row counts against their byte / FLOP floors
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


def ceilings() -> dict:
    x = torch.randn(2**28, device="cuda", dtype=torch.bfloat16)  # 512 MiB
    y = torch.empty_like(x)
    copy_s = timed(lambda: y.copy_(x))
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_s = timed(lambda: a @ b)
    return {
        "copy_GBps": 2 * x.numel() * 2 / copy_s / 1e9,
        "bf16_matmul_TFLOPs": 2 * 8192**3 / mm_s / 1e12,
    }


def build_model(preset: str):
    from harness.models.loader import build_model

    return build_model(preset, None, torch.device("cuda"), torch.bfloat16, seed=0)


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


def triton_backend():
    from harness.models.attention import TritonAttention

    return TritonAttention()


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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "sections",
        nargs="+",
        choices=[
            "ceilings",
            "offline",
            "peers",
            "roofline",
            "load",
            "profile",
            "decode",
            "gemm",
            "attention",
        ],
    )
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
            if section == "ceilings":
                results[section] = ceilings()
            elif section == "attention":
                c = results.setdefault("ceilings", ceilings())
                results[section] = attention_sweep(c["copy_GBps"])
            elif section == "peers":
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
                elif section in ("roofline", "decode", "gemm"):
                    c = results.setdefault("ceilings", ceilings())
                    fn = {"roofline": roofline, "decode": decode_sweep, "gemm": gemm_sweep}[section]
                    results[section] = fn(model, c["copy_GBps"], c["bf16_matmul_TFLOPs"])
                elif section == "load":
                    results[section] = load(
                        model, a.rates, a.load_requests, a.load_blocks, a.load_policies
                    )
                elif section == "profile":
                    results[section] = profile(model)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            results[section] = {"error": repr(exc)}
        results.setdefault("section_s", {})[section] = time.perf_counter() - t0
        print(section, json.dumps(results[section]), flush=True)
        (a.out / "bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
