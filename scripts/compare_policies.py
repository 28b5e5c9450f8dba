"""Run several policies on one workload (one config, in-process) and print a comparison table.

    python scripts/compare_policies.py --policies fcfs,chunked_prefill,static --baseline static \
        engine=cpu model=tiny workload=poisson workload.num_requests=64

Every argument after the options is a Hydra override applied to each run; `policy=` is set per
run. A policy may carry its own overrides, `;`-separated, after a colon; its row is labelled
with them: `--policies 'fcfs,chunked_prefill:policy.long_prefill_token_threshold=256'`. Prints a Markdown table of throughput and P99 latencies, and, with `--baseline`, each
policy's throughput and P99 E2E as ratios of the baseline's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir

from harness.config import register
from harness.run import run

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
COLUMNS = ("policy", "finished", "preempt", "pad_tok", "out_tok/s", "total_tok/s", "req/s")
LATENCY_COLUMNS = (("ttft_s", "p50"), ("ttft_s", "p99"), ("itl_s", "p99"), ("e2e_s", "p99"))


def run_policy(entry: str, overrides: list[str]) -> dict:
    policy, _, own = entry.partition(":")
    own_overrides = [o for o in own.split(";") if o]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[*overrides, f"policy={policy}", *own_overrides])
    result = run(cfg, None)
    return {"steps": result.steps, **result.summary}


def row(policy: str, s: dict) -> list[str]:
    cells = [
        policy,
        f"{s['num_finished']}/{s['num_requests']}",
        str(s["num_preemptions"]),
        str(int(s["steps"]["num_padding_tokens"].sum())) if len(s["steps"]) else "0",
        f"{s['output_throughput_tok_s']:.0f}",
        f"{s['total_throughput_tok_s']:.0f}",
        f"{s['request_throughput_req_s']:.2f}",
    ]
    cells += [f"{1e3 * (s[name][p] or float('nan')):.0f}" for name, p in LATENCY_COLUMNS]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="fcfs,prefill_priority,decode_priority,"
                        "chunked_prefill,preempt_cpu,static", help="comma-separated")  # fmt: skip
    parser.add_argument("--baseline", default=None, help="policy the ratios are relative to")
    args, overrides = parser.parse_known_args()
    register()
    overrides = ["logger=none", "engine.progress=false", *overrides]
    summaries = {p: run_policy(p, overrides) for p in args.policies.split(",")}
    header = [*COLUMNS, *(f"{n.removesuffix('_s')} {p} ms" for n, p in LATENCY_COLUMNS)]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for policy, s in summaries.items():
        print("| " + " | ".join(row(policy, s)) + " |")
    if args.baseline:
        base = summaries[args.baseline]
        print(
            f"\n| policy | throughput / {args.baseline} | P99 E2E / {args.baseline} |\n|---|---|---|"
        )
        for policy, s in summaries.items():
            tput = s["output_throughput_tok_s"] / base["output_throughput_tok_s"]
            e2e = s["e2e_s"]["p99"] / base["e2e_s"]["p99"]
            print(f"| {policy} | {tput:.2f}x | {e2e:.2f} ({(1 - e2e) * 100:.0f}% lower) |")


if __name__ == "__main__":
    main()
