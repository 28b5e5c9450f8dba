"""The simulator against the real engine, case by case (issue 15's accuracy table).

    # on the GPU: the real engine (one model for every case)
    python benchmarks/sim_accuracy.py run --engine cuda --out DIR_REAL [--cases NAME...]
    # anywhere: the same cases on the simulator, from the profile measured on that GPU
    python benchmarks/sim_accuracy.py run --engine sim --profile h200_llama3_8b --out DIR_SIM
    # the table: every case, every figure, its relative error; the worst named
    python benchmarks/sim_accuracy.py compare DIR_REAL DIR_SIM [--out FILE.md]
    # ... with the real engine's own run-to-run spread: another real run, several real runs
    python benchmarks/sim_accuracy.py compare DIR_REAL DIR_SIM --summary --repeat DIR_REAL2 \
        --median-of DIR_REAL2 DIR_REAL3

A case is a workload slice at a load and a policy configuration (`CASES`): the same Hydra
overrides on both sides, so both serve the same requests (the workload fingerprints are
compared). `--cases` picks some; `--list` shows them. Each case writes `<case>.json` (the
summary and the resolved config) under `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# --- the cases: (name, overrides). Loads are set from the H200 llama3_8b profile's capacity
# estimates (moderate ~50%, near ~90% of the capacity under the default SLOs).
_POLICIES = {
    "fcfs": ["policy=fcfs"],
    "cp2048": ["policy=chunked_prefill", "budget.max_num_batched_tokens=2048"],
    "cp512": ["policy=chunked_prefill", "budget.max_num_batched_tokens=512"],
    # KV pressure: a cache of 4,000 blocks (64k tokens) instead of ~56k
    "preempt_cpu": ["policy=preempt_cpu", "budget.num_gpu_blocks=4000"],
}
_WORKLOADS = {
    # (overrides, load key, moderate load, near-capacity load): ~50% and ~90% of the capacity
    # under the default SLOs that the H200 llama3_8b profile predicts for fcfs
    "bursty": (["workload=bursty", "workload.num_requests=800"], "workload.arrival.rate", 50, 90),
    "azure_code": (
        ["workload=azure_code", "workload.start_s=600", "workload.duration_s=20"],
        "workload.target_rate",
        8,
        14,
    ),  # fmt: skip
    "mooncake": (
        ["workload=mooncake_conversation", "workload.start_s=600", "workload.max_requests=12"],
        "workload.target_rate",
        0.3,
        0.6,
    ),  # fmt: skip
}
_MATRIX = {
    "bursty": ["fcfs", "cp2048", "cp512", "preempt_cpu"],
    "azure_code": ["fcfs", "cp2048"],
    "mooncake": ["fcfs", "cp2048"],
}
# Prefix caching on and off over multi-turn sessions (a turn's prompt is its whole history)
_SESSIONS = [
    "workload=multi_turn",
    "workload.num_sessions=100",
    "workload.arrival.rate=40",
    "workload.system_prompt_len=1024",
    "workload.think_time.mean=1.0",
    *_POLICIES["cp2048"],
]
COMMON = ["logger=none", "engine.progress=false", "seed=0"]


def cases(load: float | None = None) -> dict[str, list[str]]:
    """Every case's overrides; `load` replaces the rate of the trace and bursty cases."""
    out = {}
    for wl, policies in _MATRIX.items():
        overrides, key, moderate, near = _WORKLOADS[wl]
        for name, rate in (("moderate", moderate), ("near", near)):
            for p in policies:
                out[f"{wl}_{name}_{p}"] = [*overrides, f"{key}={load or rate}", *_POLICIES[p]]
    for on in ("true", "false"):
        out[f"multi_turn_caching_{'on' if on == 'true' else 'off'}_cp2048"] = [
            *_SESSIONS, f"engine.enable_prefix_caching={on}"]  # fmt: skip
    return out


FIGURES = [  # (summary key, percentile or None, label, tolerance)
    ("output_throughput_tok_s", None, "out tok/s", 0.03),
    *[(f"{m}_s", p, f"{p.upper()} {m.upper()}", 0.10)
      for m in ("ttft", "tpot", "itl") for p in ("p50", "p99")],
]  # fmt: skip


def figure(summary: dict, key: str, pct: str | None):
    v = summary.get(key)
    return v.get(pct) if pct and isinstance(v, dict) else v


def engine_overrides(args) -> list[str]:
    """The overrides of `--engine`, `--profile`, `--model` and `--override` (add_engine_args)."""
    engine = ["engine=sim", f"engine.profile={args.profile}"] if args.engine == "sim" else [
        f"engine={args.engine}"]  # fmt: skip
    return engine + [f"model={args.model}"] + list(args.override or [])


def add_engine_args(parser) -> None:
    parser.add_argument("--engine", default="cuda", help="cuda | cpu | sim")
    parser.add_argument("--profile", default="h200_llama3_8b")
    parser.add_argument("--model", default="llama3_8b")
    parser.add_argument("--override", nargs="*", help="extra Hydra overrides for every run")


class SharedModel:
    """The executor of each run, and one model for every real run (built with the first)."""

    def __init__(self, engine: str) -> None:
        self.engine, self.model = engine, None

    def executor(self, cfg):
        from harness.run import build_executor

        executor = build_executor(cfg)
        if self.engine != "sim" and self.model is None:
            from harness.models.loader import build_model

            self.model = build_model(executor.preset, cfg.model.path, executor.device,
                                     executor.dtype, seed=cfg.model.seed)  # fmt: skip
        return executor


def compose_run(overrides: list[str]):
    """The run config of these overrides, outside a Hydra job."""
    from harness.config import compose

    return _without_hydra(compose(overrides))


def run_cases(args) -> int:
    from harness.run import run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = engine_overrides(args)
    shared = SharedModel(args.engine)
    chosen = cases(args.load)
    names = args.cases or list(chosen)
    recorded: dict = {}
    for name in names:
        cfg = compose_run([*COMMON, *engine, *chosen[name]])
        executor = shared.executor(cfg)
        if args.record_steps:
            from harness.calibrate import RecordingExecutor

            executor = RecordingExecutor(executor)
        model = shared.model
        t0 = time.perf_counter()
        result = run(cfg, None, model=model, executor=executor)
        wall = time.perf_counter() - t0
        if args.record_steps:
            _record_steps(recorded, name, executor, result.steps)
            np.savez_compressed(args.record_steps, **recorded)  # rewritten after every case
        record = {"case": name, "overrides": chosen[name], "engine": engine, "wall_s": wall,
                  "summary": result.summary, "resolved": result.resolved}  # fmt: skip
        (out / f"{name}.json").write_text(json.dumps(record, indent=1, default=str))
        if args.keep_records:  # every request's token times and every step, for diagnosis
            result.requests.drop(columns=["output_ids"], errors="ignore").to_pickle(
                out / f"{name}.requests.pkl.gz")  # fmt: skip
            result.steps.to_pickle(out / f"{name}.steps.pkl.gz")
        _append_brief(out / "cases.jsonl", record)  # one file: a device run returns few files
        s = result.summary
        print(f"{name}: {s['num_finished']}/{s['num_requests']} finished, "
              f"{s['output_throughput_tok_s']:.0f} out tok/s, P99 TTFT {s['ttft_s']['p99']}, "
              f"wall {wall:.1f} s", flush=True)  # fmt: skip
    return 0


def _record_steps(recorded: dict, name: str, executor, steps) -> None:
    """Each step of a real run: its batch's step and host features (harness.sim_model), its
    measured device time and the host's time before and after its launch, as the calibration
    measures them; for diagnosis (what the profile predicts for the steps a run really took)."""
    from harness.calibrate import _decode_split
    from harness.sim_model import features, host_features

    runner = getattr(executor._executor, "runner", None)
    graphs = getattr(runner, "graphs", None)
    buckets = list(graphs.sizes) if graphs is not None else None
    pieces = getattr(runner, "pieces", None)
    pieces = list(pieces.sizes) if pieces is not None else None
    before = (steps["host_time_s"] - steps["swap_time_s"]).to_numpy(float).tolist()
    after = executor.host_after_launch(before)
    batches = executor.batches
    split = _decode_split(executor._executor)  # the split kernel's tail (decode_tail_ctx)
    recorded[f"{name}/x"] = np.array([features(b, buckets, split, pieces) for b in batches])
    recorded[f"{name}/h"] = np.array([host_features(b, buckets, pieces) for b in batches])
    recorded[f"{name}/device_time_s"] = steps["device_time_s"].to_numpy(float)
    recorded[f"{name}/duration_s"] = steps["duration_s"].to_numpy(float)
    recorded[f"{name}/host_before_s"] = np.array(before)
    recorded[f"{name}/host_after_s"] = np.array([np.nan if a is None else a for a in after])


def diagnose(args) -> int:
    """What a profile predicts for the steps real runs took (`run --record-steps`): per case and
    step kind, the measured device time over the predicted one (summed; with the profile's load
    model, each step at the load its recorded predecessors leave), and the host's median time
    before and after a launch, measured and predicted. Steps recorded with fewer features
    than the profile's get the missing ones derived as `harness.refit` does (for a real run's
    decode rows, which do not share one context, `decode_max_ctx` so derived is their mean)."""
    from harness.refit import derivations, fill_missing
    from harness.sim_model import (
        FEATURES,
        DecodeSplit,
        host_coef,
        host_columns_upgrade,
        load_profile,
        loads,
    )

    prof = load_profile(args.profile)
    derive = derivations(DecodeSplit.of(prof["settings"]), prof["settings"].get("decode_buckets"))
    c = np.array(prof["step_model"]["coef"])
    host = prof.get("host_model")
    data = np.load(args.steps)
    print(
        "| case | kind | steps | device measured / predicted (sum) | host before, measured / "
        "predicted (median ms) | host after, measured / predicted (median ms) |"
    )
    print("|---|---|---|---|---|---|")
    for case in sorted({k.split("/")[0] for k in data.files}):
        x, h = data[f"{case}/x"], data[f"{case}/h"]
        if x.shape[1] < len(FEATURES):  # derive the features the recording lacks
            rows = [dict(zip(FEATURES, r, strict=False)) for r in x]
            for r in rows:
                fill_missing(r, FEATURES, derive, case)
            x = np.array([[r[f] for f in FEATURES] for r in rows])
        y = data[f"{case}/device_time_s"]
        before, after = data[f"{case}/host_before_s"], data[f"{case}/host_after_s"]
        pred = x @ c[: x.shape[1]]
        load = prof.get("load_model")
        if load and load.get("coef"):  # the load each step started at, as the simulator has it:
            # the recording has no device timeline, so steps run back to back for their durations
            d = data[f"{case}/duration_s"]
            u = loads(np.concatenate([[0.0], np.cumsum(d)[:-1]]), y, x[:, 2], load["tau_s"],
                      load["heat_tokens"], load.get("heat_knee", 0.0))  # fmt: skip
            pred = pred * (1.0 + load["coef"] * u)
        kinds = {
            "decode": x[:, 1] == 0,
            "mixed": x[:, 9] > 0,
            "prefill": (x[:, 1] > 0) & (x[:, 9] == 0),
        }
        for kind, m in kinds.items():
            if m.sum() < 5:
                continue
            row = f"| {case} | {kind} | {int(m.sum())} | {y[m].sum() / pred[m].sum():.3f} |"
            if host:  # a recording or profile older than a host feature: as the sim reads it
                hm = host_columns_upgrade(h[m])
                known = tuple(host["features"])
                pb, pa = (hm @ np.array(host_coef(host[k]["coef"], known))
                          for k in ("before_launch", "after_launch"))  # fmt: skip
                row += (f" {np.nanmedian(before[m]) * 1e3:.2f} / {np.median(pb) * 1e3:.2f} |"
                        f" {np.nanmedian(after[m]) * 1e3:.1f} / {np.median(pa) * 1e3:.1f} |")  # fmt: skip
            else:
                row += " | |"
            print(row)
    return 0


def _append_brief(path: Path, record: dict) -> None:
    s = record["summary"]
    brief = {
        k: s.get(k)
        for k in (
            "num_requests",
            "num_finished",
            "output_throughput_tok_s",
            "workload_fingerprint",
            "prefix_cache_hit_rate",
            "duration_s",
        )
    }
    brief.update({m: s.get(m) for m in ("ttft_s", "tpot_s", "itl_s")})
    with path.open("a") as f:
        f.write(json.dumps({"case": record["case"], "summary": brief}) + "\n")


def from_log(args) -> int:
    """Case JSONs from a `run` log (the terminal tables it printed), for a device run whose
    files did not all come back: throughput, finished, and P50/P99 of TTFT, TPOT, ITL (ms)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    block: dict = {}
    for line in Path(args.log).read_text().splitlines():
        words = line.split()
        if line.startswith("throughput:"):
            block["output_throughput_tok_s"] = float(words[1])
        elif words and words[0] in ("TTFT", "TPOT", "ITL") and len(words) == 6:
            p50, p99 = float(words[2]) / 1e3, float(words[4]) / 1e3
            block[f"{words[0].lower()}_s"] = {"p50": p50, "p99": p99}
        elif line.startswith("requests:"):
            block["num_requests"], block["num_finished"] = int(words[1]), int(words[3])
        elif words and words[0].endswith(":") and "finished," in line and block:
            name = words[0][:-1]
            (out / f"{name}.json").write_text(json.dumps({"case": name, "summary": block}))
            block = {}
    return 0


def _without_hydra(cfg):
    from omegaconf import OmegaConf

    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    return cfg


def compare(args) -> int:
    real, sim = Path(args.real), Path(args.sim)
    rows, worst = [], (0.0, "", "")
    lines = ["| case | finished real/sim | " + " | ".join(f[2] for f in FIGURES) + " |",
             "|---|---|" + "---|" * len(FIGURES)]  # fmt: skip
    failures = 0
    for path in sorted(real.glob("*.json")):
        other = sim / path.name
        if not other.exists():
            continue
        r, s = json.loads(path.read_text()), json.loads(other.read_text())
        rs, ss = r["summary"], s["summary"]
        fingerprints = (rs.get("workload_fingerprint"), ss.get("workload_fingerprint"))
        if None not in fingerprints and fingerprints[0] != fingerprints[1]:
            print(f"{path.stem}: different requests on the two sides; skipped", file=sys.stderr)
            continue
        cells = []
        for key, pct, label, tol in FIGURES:
            a, b = figure(rs, key, pct), figure(ss, key, pct)
            if not a or b is None:
                cells.append("n/a")
                continue
            err = (b - a) / a
            mark = "" if abs(err) <= tol else " **"
            failures += bool(mark)
            if abs(err) > worst[0]:
                worst = (abs(err), path.stem, label)
            cells.append(f"{_fmt(a, key)} / {_fmt(b, key)} ({err:+.1%}){mark}")
        fin = f"{rs['num_finished']}/{ss['num_finished']}"
        lines.append(f"| {path.stem} | {fin} | " + " | ".join(cells) + " |")
        rows.append(path.stem)
    lines.append("")
    lines.append(f"{len(rows)} cases; {failures} figures outside their tolerance (** : throughput "
                 f"3%, latency percentiles 10%); worst: {worst[2]} of {worst[1]} "
                 f"({worst[0]:.1%})")  # fmt: skip
    text = "\n".join(lines)
    if getattr(args, "summary", False):
        text += "\n\n" + summary_table(real, sim, Path(args.repeat) if args.repeat else None)
    if getattr(args, "median_of", None):
        text += "\n\n" + median_table([real, *map(Path, args.median_of)], sim)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def summary_table(real: Path, sim: Path, repeat: Path | None = None) -> str:
    """Per figure: the median absolute error of `sim` against `real` and how many cases are
    within tolerance; with `repeat` (another real run of the same cases) the same for the two
    real runs, and how many simulated figures are within tolerance or no further from `real`
    than the repeat is (the real engine's own run-to-run difference)."""
    errs: dict[str, list[tuple[float, float | None, float]]] = {}
    for path in sorted(real.glob("*.json")):
        if not (sim / path.name).exists() or (repeat and not (repeat / path.name).exists()):
            continue
        a = json.loads(path.read_text())["summary"]
        b = json.loads((sim / path.name).read_text())["summary"]
        c = json.loads((repeat / path.name).read_text())["summary"] if repeat else None
        for key, pct, label, tol in FIGURES:
            x, y = figure(a, key, pct), figure(b, key, pct)
            if not x or y is None:
                continue
            z = figure(c, key, pct) if c else None
            errs.setdefault(label, []).append(
                (abs(y - x) / x, abs(z - x) / x if z is not None else None, tol)
            )
    head = "| figure | sim vs real: median abs error | within tolerance |"
    sep = "|---|---|---|"
    if repeat:
        head += " real vs repeat: median abs difference | within tolerance | sim within tolerance or the repeat's difference |"
        sep += "---|---|---|"
    lines, totals = [head, sep], [0, 0, 0, 0]
    for label, v in errs.items():
        e = np.array([x for x, _, _ in v])
        tol = v[0][2]
        ok = int((e <= tol).sum())
        totals[0] += ok
        totals[3] += len(e)
        row = f"| {label} | {np.median(e):.1%} | {ok} / {len(e)} |"
        if repeat:
            rr = np.array([r for _, r, _ in v])
            okr, band = int((rr <= tol).sum()), int((e <= np.maximum(tol, rr)).sum())
            totals[1] += okr
            totals[2] += band
            row += f" {np.median(rr):.1%} | {okr} / {len(e)} | {band} / {len(e)} |"
        lines.append(row)
    n = totals[3]
    last = f"| all | | {totals[0]} / {n} |"
    if repeat:
        last += f" | {totals[1]} / {n} | {totals[2]} / {n} |"
    return "\n".join([*lines, last])


def median_table(reals: list[Path], sim: Path) -> str:
    """The simulator against the median of several real runs of the same cases (`reals`, the
    first one's cases; a case missing from another run has fewer): per figure, how many are
    within tolerance; then every figure that is not, with the real runs' values, marked `span`
    when it lies within [min - tol, max + tol] of them (as far from the median as a real run)."""
    counts: dict[str, list[int]] = {}
    misses = []
    for path in sorted(reals[0].glob("*.json")):
        if not (sim / path.name).exists():
            continue
        runs = [json.loads((d / path.name).read_text())["summary"] for d in reals
                if (d / path.name).exists()]  # fmt: skip
        s = json.loads((sim / path.name).read_text())["summary"]
        for key, pct, label, tol in FIGURES:
            vals = [v for v in (figure(r, key, pct) for r in runs) if v]
            y = figure(s, key, pct)
            if not vals or y is None:
                continue
            med = float(np.median(vals))
            err = (y - med) / med
            c = counts.setdefault(label, [0, 0])
            c[0] += abs(err) <= tol
            c[1] += 1
            if abs(err) > tol:
                span = min(vals) * (1 - tol) <= y <= max(vals) * (1 + tol)
                misses.append(f"| {path.stem} | {label} | {', '.join(_fmt(v, key) for v in vals)} "
                              f"| {_fmt(y, key)} | {err:+.1%} | {'span' if span else 'beyond'} |")  # fmt: skip
    lines = ["| figure | sim within tolerance of the real runs' median |", "|---|---|"]
    lines += [f"| {label} | {ok} / {n} |" for label, (ok, n) in counts.items()]
    ok, n = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    lines += [f"| all | {ok} / {n} |", "", "| case | figure | real runs | sim | vs median | |",
              "|---|---|---|---|---|---|", *misses]  # fmt: skip
    return "\n".join(lines)


def _fmt(v: float, key: str) -> str:
    return f"{v:,.0f}" if key.endswith("tok_s") else f"{v * 1e3:.1f} ms"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    add_engine_args(r)
    r.add_argument("--out", required=True)
    r.add_argument("--cases", nargs="*")
    r.add_argument("--keep-records", action="store_true", help="also write each case's "
                   "requests (token times) and steps as <case>.requests.pkl.gz / .steps.pkl.gz")
    r.add_argument("--load", type=float, help="run the cases at this rate instead of theirs "
                   "(req/s; not the multi-turn ones), e.g. at a capacity search's bound")  # fmt: skip
    r.add_argument("--record-steps", help="an .npz file: every step's features and measured "
                   "times, per case (diagnosis)")  # fmt: skip
    c = sub.add_parser("compare")
    c.add_argument("real")
    c.add_argument("sim")
    c.add_argument("--out")
    c.add_argument(
        "--summary",
        action="store_true",
        help="also the per-figure table: median errors, figures within tolerance",
    )
    c.add_argument("--repeat", help="another real run of the same cases (DIR): the real "
                   "engine's own run-to-run difference beside the simulator's")  # fmt: skip
    c.add_argument("--median-of", nargs="+", metavar="DIR", help="further real runs of the same "
                   "cases: also the simulator against the median of all the real runs")  # fmt: skip
    sub.add_parser("list")
    d = sub.add_parser("steps", help="what a profile predicts for recorded real steps")
    d.add_argument("steps", help="the .npz of run --record-steps")
    d.add_argument("--profile", default="h200_llama3_8b")
    g = sub.add_parser("from-log")
    g.add_argument("log")
    g.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "list":
        for name, overrides in cases().items():
            print(name, " ".join(overrides))
        return 0
    if args.cmd == "from-log":
        return from_log(args)
    if args.cmd == "steps":
        return diagnose(args)
    return run_cases(args) if args.cmd == "run" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
