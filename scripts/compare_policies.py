"""Run several policies on one workload (one config, in-process) and print a comparison table.

    python scripts/compare_policies.py --policies fcfs,chunked_prefill,static --baseline static \
        engine=cpu model=tiny workload=poisson workload.num_requests=64

Every argument after the options is a Hydra override applied to each run; `policy=` is set per
run. A policy may carry its own overrides, `;`-separated, after a colon; its row is labelled
with them: `--policies 'fcfs,chunked_prefill:policy.long_prefill_token_threshold=256'`.

Prints a Markdown table of requests served, rejected and aborted, throughput and P99 latencies,
the best of each column in bold, and, with `--baseline`, each policy's throughput and P99 E2E as
ratios of the baseline's. A run that served fewer requests than another of its workload is
marked † and never in bold; runs of different workloads (fingerprints) are never compared.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from harness.config import register
from harness.report import best_positions
from harness.run import run

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
COLUMNS = ("policy", "finished", "rejected", "aborted", "kv_blocks", "preempt", "pad_tok",
           "out_tok/s", "total_tok/s", "req/s")  # fmt: skip
LATENCY_COLUMNS = (("ttft_s", "p50"), ("ttft_s", "p99"), ("itl_s", "p99"), ("e2e_s", "p99"))
KV_TOLERANCE = 0.02  # KV caches within 2% of each other count as the same
THROUGHPUTS = ("output_throughput_tok_s", "total_throughput_tok_s", "request_throughput_req_s")


def run_policy(entry: str, overrides: list[str]) -> dict:
    policy, _, own = entry.partition(":")
    own_overrides = [o for o in own.split(";") if o]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[*overrides, f"policy={policy}", *own_overrides])
    result = run(cfg, None)
    summary = {"steps": result.steps, **result.summary}
    summary["num_gpu_blocks"] = (result.resolved or {}).get("num_gpu_blocks")
    del result
    release_device_memory()  # the next run sizes its KV cache from the memory left free
    return summary


def release_device_memory() -> None:
    """Free what the finished run held (model, KV cache, CUDA graph pools, cyclic garbage), so
    that the next run in this process sizes its KV cache from the same free memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _ms(s: dict, name: str, p: str) -> float:
    return 1e3 * (s[name][p] if s[name][p] is not None else float("nan"))


def row(policy: str, s: dict) -> list[str]:
    cells = [
        policy,
        f"{s['num_finished']}/{s['num_requests']}",
        str(s["num_rejected"]),
        str(s["num_aborted"]),
        str(s.get("num_gpu_blocks", "?")),
        str(s["num_preemptions"]),
        str(int(s["steps"]["num_padding_tokens"].sum())) if len(s["steps"]) else "0",
        f"{s['output_throughput_tok_s']:.0f}",
        f"{s['total_throughput_tok_s']:.0f}",
        f"{s['request_throughput_req_s']:.2f}",
    ]
    cells += [f"{_ms(s, name, p):.0f}" for name, p in LATENCY_COLUMNS]
    return cells


def ranked(s: dict) -> list[tuple[int, float, str]]:
    """(cell index, value, better) of the columns that get a best: throughputs, latencies."""
    first = COLUMNS.index("out_tok/s")
    out = [(first + i, s[key], "max") for i, key in enumerate(THROUGHPUTS)]
    out += [(len(COLUMNS) + i, _ms(s, n, p), "min") for i, (n, p) in enumerate(LATENCY_COLUMNS)]
    return out


def fingerprint(s: dict) -> str:
    return s.get("workload_fingerprint") or "unknown"


def served_fewer(summaries: dict[str, dict]) -> dict[str, bool]:
    """Runs that finished fewer requests than another run of the same workload."""
    most: dict[str, int] = {}
    for s in summaries.values():
        most[fingerprint(s)] = max(most.get(fingerprint(s), 0), s["num_finished"])
    return {p: s["num_finished"] < most[fingerprint(s)] for p, s in summaries.items()}


def workload_warning(summaries: dict[str, dict]) -> str | None:
    """A loud line when the runs did not all serve the same requests (a policy's own override
    that changed the workload, say)."""
    fps = {p: fingerprint(s) for p, s in summaries.items()}
    if len(set(fps.values())) < 2:
        return None
    which = ", ".join(f"{p}: {fp[:8]}" for p, fp in fps.items())
    return (
        f"WARNING: the runs served different workloads (workload fingerprint {which}); "
        "runs of different workloads are neither ranked together nor given ratios"
    )


def kv_cache_warning(summaries: dict[str, dict]) -> str | None:
    """A loud line when the runs had KV caches of different sizes: their preemptions, queueing
    and throughput then differ for a reason that is not the policy."""
    blocks = {p: s.get("num_gpu_blocks") for p, s in summaries.items()}
    sizes = [b for b in blocks.values() if b]
    # A larger step budget's measured activations take a few hundred blocks (under 1% on an
    # H200): that is the configuration's own cost, not an accident of the run order.
    if not sizes or min(sizes) >= (1 - KV_TOLERANCE) * max(sizes):
        return None
    which = ", ".join(f"{p}: {b}" for p, b in blocks.items())
    return (
        f"WARNING: the runs had different KV caches ({which} blocks); set "
        "budget.num_gpu_blocks to compare policies on the same cache"
    )


def table(summaries: dict[str, dict]) -> str:
    """The Markdown table; bold: the best of its column among the runs of one workload that
    served as many requests as any; † (with a footnote): served fewer, never bold."""
    short = served_fewer(summaries)
    rows = {p: row(p, s) for p, s in summaries.items()}
    for fp in dict.fromkeys(map(fingerprint, summaries.values())):
        group = [p for p, s in summaries.items() if fingerprint(s) == fp]
        eligible = [not short[p] for p in group]
        for k, (cell, _, better) in enumerate(ranked(summaries[group[0]])):
            values = [ranked(summaries[p])[k][1] for p in group]
            for pos in best_positions(values, better, eligible):
                rows[group[pos]][cell] = f"**{rows[group[pos]][cell]}**"
    notes = []
    for p, s in summaries.items():
        if short[p]:
            notes.append(f"†{len(notes) + 1} {p}: served {s['num_finished']}/{s['num_requests']}"
                         f" ({s['num_rejected']} rejected, {s['num_aborted']} aborted); another"
                         " run of this workload served more: never in bold.")  # fmt: skip
            rows[p][0] += f" †{len(notes)}"
    header = [*COLUMNS, *(f"{n.removesuffix('_s')} {p} ms" for n, p in LATENCY_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows.values()]
    return "\n".join([*lines, "", *notes]).rstrip()


def _ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")  # a baseline that served nothing: no ratio


def ratios(summaries: dict[str, dict], baseline: str) -> str:
    """Throughput and P99 E2E of each run over the baseline's, flagged (†) where the two served
    different numbers of requests; none across different workloads."""
    base = summaries[baseline]
    lines = [
        f"| policy | throughput / {baseline} | P99 E2E / {baseline} | served |",
        "|---|---|---|---|",
    ]
    for policy, s in summaries.items():
        served = f"{s['num_finished']}/{s['num_requests']}"
        if fingerprint(s) != fingerprint(base):
            why = f"different workload ({fingerprint(s)[:8]} vs {fingerprint(base)[:8]}): no ratio"
            lines.append(f"| {policy} | n/a | n/a | {why} |")
            continue
        tput = _ratio(s["output_throughput_tok_s"], base["output_throughput_tok_s"])
        e2e = _ratio(_ms(s, "e2e_s", "p99"), _ms(base, "e2e_s", "p99"))
        flag, note = "", served
        if s["num_finished"] != base["num_finished"]:
            flag = " †"
            note = f"{served} vs {baseline} {base['num_finished']}/{base['num_requests']}: " \
                "not the same requests served"  # fmt: skip
        lines.append(
            f"| {policy}{flag} | {tput:.2f}x | {e2e:.2f} ({(1 - e2e) * 100:.0f}% lower) | {note} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="fcfs,prefill_priority,decode_priority,"
                        "chunked_prefill,preempt_cpu,static", help="comma-separated")  # fmt: skip
    parser.add_argument("--baseline", default=None, help="policy the ratios are relative to")
    args, overrides = parser.parse_known_args()
    register()
    overrides = ["logger=none", "engine.progress=false", *overrides]
    summaries = {p: run_policy(p, overrides) for p in args.policies.split(",")}
    for warning in (workload_warning(summaries), kv_cache_warning(summaries)):
        if warning:
            print(f"\n{warning}")
    print(f"\n{table(summaries)}")
    if args.baseline:
        print(f"\n{ratios(summaries, args.baseline)}")


if __name__ == "__main__":
    main()
