"""`python -m harness.capacity [knobs] key=value ...`: the capacity of each policy.

Capacity is the highest arrival rate (`workload.arrival.rate`, req/s) at which P99 TTFT and P99
TPOT meet `slo.ttft_s` and `slo.tpot_s` (the figure Sarathi-Serve and Vidur report). It is found
by bisection over the rate; every probe is a real run whose folder the report can read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd


@dataclass
class Probe:
    rate: float  # req/s
    meets_slo: bool
    p99_ttft_s: float | None
    p99_tpot_s: float | None
    output_throughput_tok_s: float
    run_dir: str


@dataclass
class Capacity:
    policy: str
    capacity_req_s: float | None  # highest probed rate meeting the SLO; None: not even `low`
    bracket: tuple[float, float]  # capacity lies in [lo, hi) (hi = inf when `high` met it)
    status: str  # ok | below_low | at_least_high
    probes: list[Probe] = field(default_factory=list)


def meets_slo(summary: dict, ttft_s: float | None, tpot_s: float | None) -> bool:
    """P99 TTFT and P99 TPOT within the SLO, every request finished, none rejected."""
    if not summary["complete"] or summary["num_finished"] < summary["num_requests"]:
        return False
    for key, bound in (("ttft_s", ttft_s), ("tpot_s", tpot_s)):
        p99 = summary[key]["p99"]
        if bound is not None and p99 is not None and p99 > bound:
            return False
    return True


def bisect_capacity(
    probe: Callable[[float], bool], low: float, high: float, iters: int, rel_tol: float
) -> tuple[float | None, tuple[float, float], str]:
    """(capacity, bracket, status) by geometric bisection: rates span orders of magnitude, and
    the midpoint of [1, 64] in log space (8) is a better guess than the arithmetic one."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    if not probe(low):
        return None, (0.0, low), "below_low"
    if probe(high):
        return high, (high, math.inf), "at_least_high"
    lo, hi = low, high
    for _ in range(iters):
        if hi / lo - 1 <= rel_tol:
            break
        mid = math.sqrt(lo * hi)
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return lo, (lo, hi), "ok"


def compose(overrides: Sequence[str]):
    """The run config for `overrides` and the chosen group names (as `python -m harness`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from harness.__main__ import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    names = {f"{g}_name": choices.get(g, "") for g in ("policy", "workload")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, names


def search_policy(policy: str, overrides: Sequence[str], args, out_dir: Path) -> Capacity:
    """Bisect one policy's capacity; each probe's run folder is `out_dir/<policy>/rate_<r>`."""
    from harness.run import run

    probes: list[Probe] = []

    def probe(rate: float) -> bool:
        cfg, names = compose([*overrides, f"policy={policy}", f"workload.arrival.rate={rate}"])
        names["sweep_name"] = out_dir.name
        folder = out_dir / policy / f"rate_{rate:.4g}"
        result = run(cfg, folder, names)
        s = result.summary
        ok = meets_slo(s, cfg.slo.ttft_s, cfg.slo.tpot_s)
        probes.append(
            Probe(
                rate,
                ok,
                s["ttft_s"]["p99"],
                s["tpot_s"]["p99"],
                s["output_throughput_tok_s"],
                str(folder),
            )
        )
        print(
            f"capacity {policy}: rate {rate:.4g} req/s -> {'meets' if ok else 'misses'} the SLO",
            file=sys.stderr,
        )
        return ok

    capacity, bracket, status = bisect_capacity(
        probe, args.low, args.high, args.iters, args.rel_tol
    )
    return Capacity(policy, capacity, bracket, status, probes)


def write_outputs(results: list[Capacity], slo: dict, out_dir: Path) -> None:
    """capacity.json (per policy, with probes), capacity.csv (a row per probe), capacity.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"slo": slo, "policies": [asdict(r) for r in results]}
    (out_dir / "capacity.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    rows = [
        {"policy": r.policy, "capacity_req_s": r.capacity_req_s, "status": r.status, **asdict(p)}
        for r in results
        for p in r.probes
    ]
    pd.DataFrame(rows).to_csv(out_dir / "capacity.csv", index=False)
    plot_capacity(results, slo, out_dir / "capacity.png")


def plot_capacity(results: list[Capacity], slo: dict, path: Path) -> None:
    """P99 TTFT and TPOT of every probe against its rate, per policy, with SLO and capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report_plots import plain_log_ticks

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    cmap = plt.get_cmap("tab10")
    for i, r in enumerate(results):
        probes = sorted(r.probes, key=lambda p: p.rate)
        rates = [p.rate for p in probes]
        cap = (
            f"{r.capacity_req_s:.3g} req/s"
            if r.capacity_req_s is not None
            else f"< {r.bracket[1]:g}"
        )
        for ax, attr in ((axes[0], "p99_ttft_s"), (axes[1], "p99_tpot_s")):
            ys = [
                getattr(p, attr) * 1e3 if getattr(p, attr) is not None else math.nan for p in probes
            ]
            ax.plot(rates, ys, "o-", color=cmap(i % 10), label=f"{r.policy} (capacity {cap})")
            if r.capacity_req_s is not None:
                ax.axvline(r.capacity_req_s, color=cmap(i % 10), ls=":", lw=1)
    for ax, key, label in (
        (axes[0], "ttft_s", "P99 TTFT (ms)"),
        (axes[1], "tpot_s", "P99 TPOT (ms)"),
    ):
        if slo.get(key) is not None:
            ax.axhline(
                slo[key] * 1e3, color="grey", ls="--", lw=1, label=f"SLO {slo[key] * 1e3:g} ms"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
        ax.set_xlabel("arrival rate (req/s)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Capacity search: P99 latency per probe (dotted: capacity)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def split_policies(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(`policy=a,b` as [a, b], the other overrides); the default policy when none is given."""
    policies, rest = [], []
    for o in overrides:
        if o.startswith("policy="):
            policies += [p.strip() for p in o.removeprefix("policy=").split(",") if p.strip()]
        else:
            rest.append(o)
    return policies, rest


def main(argv: Sequence[str] | None = None) -> list[Capacity]:
    parser = argparse.ArgumentParser(prog="python -m harness.capacity", description=__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; policy=a,b searches each")
    parser.add_argument("--low", type=float, default=1.0, help="lowest rate probed (req/s)")
    parser.add_argument("--high", type=float, default=64.0, help="highest rate probed (req/s)")
    parser.add_argument("--iters", type=int, default=6, help="bisection steps after the bounds")
    parser.add_argument("--rel-tol", type=float, default=0.05, help="stop when hi/lo - 1 <= this")
    parser.add_argument("--out", type=Path, help="default: <results_dir>/capacity_<time>")
    args = parser.parse_intermixed_args(argv)  # knobs and overrides in any order
    policies, overrides = split_policies(args.overrides)
    cfg, names = compose(overrides)
    policies = policies or [names["policy_name"]]
    out = args.out or Path(cfg.results_dir) / f"capacity_{datetime.now():%Y-%m-%d_%H-%M-%S}"
    if cfg.slo.ttft_s is None and cfg.slo.tpot_s is None:
        parser.error("slo.ttft_s and slo.tpot_s are both null: nothing to search against")
    results = [search_policy(p, overrides, args, out) for p in policies]
    slo = {"ttft_s": cfg.slo.ttft_s, "tpot_s": cfg.slo.tpot_s}
    write_outputs(results, slo, out)
    for r in results:
        print(f"{r.policy}: capacity {r.capacity_req_s} req/s ({r.status}, bracket {r.bracket})")
    print(f"results: {out}")
    return results


if __name__ == "__main__":
    main()
