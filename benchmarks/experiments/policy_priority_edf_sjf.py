"""Issue 17's headline experiments: `sjf`, `priority` and `edf` against `fcfs` at saturation.

    python benchmarks/experiments/policy_priority_edf_sjf.py all        # or sjf | priority | edf
    python benchmarks/experiments/policy_priority_edf_sjf.py sjf --requests 300 --load 1.25 --seed 1

Every run: `engine=cpu model=tiny engine.clock=virtual logger=none` (a step costs the virtual
cost model, so runs are exact and machine-independent), one set of request specs per experiment
served by every policy. The arrival rate (Poisson) is `--load` times the capacity of `fcfs` on
the same specs sent at once (the rate at which it finishes the first 80% of them), so the queue
grows over the run: saturation.
- sjf: heavy-tailed outputs (lognormal, median 32, sigma 1.2, 4..1024 tokens); 16 seats. Mean
  E2E of fcfs, sjf with a noisy predictor (sigma 1.0 and 0.5) and the oracle (aging at the
  default 5 s, which no request reaches here, and at 0.5 s).
- priority: 20% of requests priority 1, the rest 0; a KV cache of 64 blocks (1024 tokens) binds
  before the 64 seats. P99 TTFT per class of fcfs, priority without / with priority preemption.
- edf: 30% tenant `chat` (TTFT SLO 0.25 s), the rest `batch` (slo.ttft_s = 5 s); 16 seats. P99
  TTFT and SLO attainment per class of fcfs, edf, edf with deprioritize_missed; then at 2x
  capacity with a 1 s batch SLO, which the backlog overruns.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from harness.config import register
from harness.models.loader import build_model
from harness.request import RequestSpec
from harness.run import run

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
BASE = ["engine=cpu", "model=tiny", "engine.clock=virtual", "logger=none", "engine.progress=false",
        "logger.print_table=false"]  # fmt: skip
VOCAB_SIZE = 2048  # the tiny preset's


def serve(specs: list[RequestSpec], policy: str, *overrides: str, model=None):
    """One run of `specs` under `policy`; returns harness.run's RunResult."""
    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", overrides=[*BASE, f"policy={policy}", *overrides])
    return run(cfg, None, specs=specs, model=model)


def make_specs(seed, prompt_lens, output_lens, tenants=None, priorities=None):
    """Requests of these lengths (random prompt ids), all arriving at 0 for now."""
    rng, n = np.random.default_rng(seed), len(prompt_lens)
    tenants = tenants if tenants is not None else ["default"] * n
    priorities = priorities if priorities is not None else [0] * n
    return [
        RequestSpec(f"r{i}", 0.0, tuple(rng.integers(0, VOCAB_SIZE, p).tolist()), int(o),
                    str(tenants[i]), int(priorities[i]))
        for i, (p, o) in enumerate(zip(prompt_lens, output_lens, strict=True))
    ]  # fmt: skip


def capacity(specs: list[RequestSpec], budget: list[str], model) -> float:
    """Requests/s of fcfs on `specs` all sent at once, over the first 80% to finish (the
    draining tail, where the batch is no longer full, left out)."""
    finish_s = serve(specs, "fcfs", *budget, model=model).requests.finish_s
    return 0.8 * len(specs) / finish_s.quantile(0.8)


def arriving(specs: list[RequestSpec], rate: float, seed: int) -> list[RequestSpec]:
    """`specs` with Poisson arrivals at `rate` req/s."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, len(specs))
    arrivals = np.cumsum(gaps) - gaps[0]
    return [
        dataclasses.replace(s, arrival_s=float(a)) for s, a in zip(specs, arrivals, strict=True)
    ]


def at_saturation(specs: list[RequestSpec], budget: list[str], seed: int, model):
    """`specs` arriving at `--load` x fcfs's capacity."""
    cap = capacity(specs, budget, model)
    print(f"fcfs capacity {cap:.1f} req/s; arrivals at {args.load:.2f}x: {args.load * cap:.1f}/s")
    return arriving(specs, args.load * cap, seed)


def served(requests) -> str:
    """finished/requests (rejected): every row of a comparison must serve the same requests."""
    done = int((requests.status == "finished").sum())
    return f"{done}/{len(requests)} ({int((requests.status == 'rejected').sum())} rej.)"


def table(rows: list[dict]) -> None:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    print(" | ".join(c.ljust(width[c]) for c in cols))
    print("-|-".join("-" * width[c] for c in cols))
    for r in rows:
        print(" | ".join(_fmt(r[c]).ljust(width[c]) for c in cols))
    print()


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def sjf(model) -> None:
    n, seed = args.requests, args.seed
    rng = np.random.default_rng(seed)
    prompts = rng.integers(16, 65, n)
    outputs = np.clip(np.round(32 * np.exp(1.2 * rng.standard_normal(n))), 4, 1024).astype(int)
    budget = ["budget.max_num_seqs=16"]
    specs = at_saturation(make_specs(seed, prompts, outputs), budget, seed, model)
    rows = []
    for name, policy, extra in [
        ("fcfs", "fcfs", []),
        ("sjf noisy sigma=1.0", "sjf", ["policy.predictor=noisy", "policy.noise=1.0"]),
        ("sjf noisy sigma=0.5", "sjf", ["policy.predictor=noisy", "policy.noise=0.5"]),
        ("sjf oracle", "sjf", []),
        ("sjf oracle, max_wait_s=0.5", "sjf", ["policy.max_wait_s=0.5"]),
    ]:
        result = serve(specs, policy, *budget, *extra, f"seed={seed}", model=model)
        s = result.summary
        rows.append({"policy": name, "served": served(result.requests),
                     "mean E2E s": s["e2e_s"]["mean"],
                     "P50 E2E s": s["e2e_s"]["p50"], "P99 E2E s": s["e2e_s"]["p99"],
                     "mean TTFT s": s["ttft_s"]["mean"], "makespan s": s["duration_s"]})  # fmt: skip
    table(rows)


def priority(model) -> None:
    n, seed = args.requests, args.seed
    rng = np.random.default_rng(seed)
    prompts, outputs = rng.integers(32, 129, n), rng.integers(16, 129, n)
    classes = (rng.random(n) < 0.2).astype(int)
    budget = ["budget.num_gpu_blocks=64", "budget.max_num_seqs=64"]
    specs = make_specs(seed, prompts, outputs, priorities=classes)
    specs = at_saturation(specs, budget, seed, model)
    rows = []
    for name, policy, extra in [
        ("fcfs", "fcfs", []),
        ("priority, no preemption for waiting", "priority", ["policy.preempt_for_waiting=false"]),
        ("priority", "priority", []),
    ]:
        result = serve(specs, policy, *budget, *extra, model=model)
        req = result.requests
        high, low = req[req.priority == 1], req[req.priority == 0]
        rows.append({"policy": name, "served": served(req),
                     "high P99 TTFT s": high.ttft_s.quantile(0.99),
                     "high mean TTFT s": high.ttft_s.mean(),
                     "low P99 TTFT s": low.ttft_s.quantile(0.99),
                     "all mean E2E s": req.e2e_s.mean(),
                     "preemptions": int(result.summary["num_preemptions"])})  # fmt: skip
    table(rows)


def edf(model) -> None:
    n, seed = args.requests, args.seed
    rng = np.random.default_rng(seed)
    prompts, outputs = rng.integers(16, 65, n), rng.integers(16, 129, n)
    tenants = np.where(rng.random(n) < 0.3, "chat", "batch")
    budget = ["budget.max_num_seqs=16"]
    specs = make_specs(seed, prompts, outputs, tenants)
    cap = capacity(specs, budget, model)
    # At --load with a loose batch SLO, then at 2x capacity with a batch SLO that the backlog
    # overruns: there pure EDF serves the late batch requests first (the domino effect).
    for load, slo in [
        (args.load, {"chat": 0.25, "batch": 5.0}),
        (2.0, {"chat": 0.25, "batch": 1.0}),
    ]:
        print(f"fcfs capacity {cap:.1f} req/s; arrivals at {load:.2f}x; TTFT SLOs {slo}")
        arrived = arriving(specs, load * cap, seed)
        edf_slo = [f"slo.ttft_s={slo['batch']}", f"policy.tenant_ttft_s={{chat:{slo['chat']}}}"]
        rows = []
        for name, policy, extra in [
            ("fcfs", "fcfs", []),
            ("edf", "edf", edf_slo),
            ("edf, deprioritize_missed", "edf", [*edf_slo, "policy.deprioritize_missed=true"]),
        ]:
            req = serve(arrived, policy, *budget, *extra, model=model).requests
            row = {"policy": name, "served": served(req)}
            for tenant in ("chat", "batch"):
                ttft = req[req.tenant == tenant].ttft_s
                row[f"{tenant} P99 TTFT s"] = ttft.quantile(0.99)
                row[f"{tenant} TTFT<={slo[tenant]}s"] = f"{(ttft <= slo[tenant]).mean():.0%}"
            row["all mean E2E s"] = req.e2e_s.mean()
            rows.append(row)
        table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=["sjf", "priority", "edf", "all"])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--load", type=float, default=1.25, help="arrival rate / fcfs capacity")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tiny = build_model("tiny", None, torch.device("cpu"), torch.float32, seed=0)
    for name in ("sjf", "priority", "edf") if args.experiment == "all" else (args.experiment,):
        print(f"== {name}: {args.requests} requests, load {args.load}, seed {args.seed}")
        {"sjf": sjf, "priority": priority, "edf": edf}[name](tiny)
