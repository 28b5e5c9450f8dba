"""`python -m harness.report DIR...`: gather run folders into one table, compare P99s, plot.

A run folder is any folder holding `summary.json` and `config.yaml` (README, "Reading the
output"), at any depth below the given folders, from any launcher. Repeated runs of a configuration
(other `seed`) are one row: their mean, a 95% confidence interval and their count n. A row is
ranked only against rows of the same workload (the request specs' fingerprint) and never when it
served fewer requests than another. Prints the table; writes `report.md`, `report.csv`,
`runs.csv` (every config and summary column) and PNGs to `-o DIR`, by default `report/` beside
the inputs, never inside a run folder.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

KEYS = ("policy", "budget", "workload")  # the rows of the comparison, before varying extras
REPEAT_KEY = "seed"  # runs that differ only here are repeats of one configuration
# Config columns that tell runs apart when they vary (a load sweep's rate, a second budget, ...).
VARYING_PREFIXES = ("budget.", "workload.", "policy.", "slo.", "engine.kind", "model.")
VARYING_SKIP = ("budget.max_num_batched_tokens", "policy._target_", "workload._target_")
COUNTS = ("num_requests", "num_finished", "num_rejected", "num_aborted")

# Comparison columns: (column, summary key, better, label). Latencies are shown in ms. `better`
# None: shown, never ranked. Rejections are handled by the served-fewer rule instead; a busier
# device, more useful tokens or a fuller KV cache explain a result but are not goals (a policy
# can be busy recomputing preempted prompts, or fill the cache and then thrash).
COLUMNS = (
    ("output_throughput_tok_s", "output_throughput_tok_s", "max", "throughput (out tok/s)"),
    ("p50_ttft_ms", "ttft_s.p50", "min", "P50 TTFT (ms)"),
    ("p99_ttft_ms", "ttft_s.p99", "min", "P99 TTFT (ms)"),
    ("p99_tpot_ms", "tpot_s.p99", "min", "P99 TPOT (ms)"),
    ("p99_itl_ms", "itl_s.p99", "min", "P99 ITL (ms)"),
    ("p99_e2e_ms", "e2e_s.p99", "min", "P99 E2E (ms)"),
    ("goodput_req_s", "goodput_req_s", "max", "goodput (req/s)"),
    ("num_preemptions", "num_preemptions", "min", "preemptions"),
    ("num_rejected", "num_rejected", None, "rejected (req)"),
    ("num_aborted", "num_aborted", None, "aborted (req)"),
    ("busy_share", "busy_share", None, "busy (share)"),
    ("useful_token_share", "useful_token_share", None, "useful tokens (share)"),
    ("kv_usage_mean", "kv_usage_mean", None, "KV used, mean (share)"),
    ("kv_usage_peak", "kv_usage_peak", None, "KV used, peak (share)"),
    # a property of the workload and the cache as much as of the policy: shown, not ranked
    ("prefix_cache_hit_rate", "prefix_cache_hit_rate", None, "prefix hit rate (share)"),
    # Not ranked: equal service is a goal only where the tenants asked for as much.
    ("fairness_jain", "fairness_jain", None, "fairness (Jain)"),
    ("service_share", "service_share", None, "service (share)"),  # a tenant's row (--by)
)
RUN_ONLY = ("busy_share", "useful_token_share", "kv_usage_mean", "kv_usage_peak", "fairness_jain",
            "prefix_cache_hit_rate")  # fmt: skip
OPTIONAL = {*RUN_ONLY, "service_share"}  # newer runs, or split rows only
SPLITS = ("tenant", "priority")  # --by: a comparison row per run configuration x value
LEGEND = (
    "Latencies in ms; mean ± 95% confidence interval over the n seeds of a configuration. "
    "**Bold**: the best of its column among complete runs of the same workload (same request "
    "fingerprint) that finished as many requests as any of them. † finished fewer requests than "
    "another run of its workload: never ranked. Rejections, aborts, busy and KV shares, "
    "fairness and service shares are not ranked."
)


class SkippedRun(UserWarning):
    """A run folder that is broken or partial and is left out of the report."""


class WorkloadMismatch(UserWarning):
    """Runs under one workload name served different requests: they are ranked apart."""


class ReportError(Exception):
    """A report that cannot be made; `exit_code` for the command line (2: cannot write)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def find_run_dirs(roots: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(run folders, broken folders): a broken one has only one of config.yaml, summary.json."""
    found: dict[Path, set[str]] = {}
    for root in map(Path, roots):
        if not root.exists():
            warnings.warn(f"skipping {root}: no such folder", SkippedRun, stacklevel=2)
            continue
        for name in ("config.yaml", "summary.json"):
            for path in root.rglob(name):
                if path.parent.name == ".hydra" or "wandb" in path.parent.parts:
                    continue  # Hydra's own copy and W&B's offline files are not run folders
                found.setdefault(path.parent, set()).add(name)
    runs = sorted(f for f, names in found.items() if len(names) == 2)
    broken = sorted(f for f, names in found.items() if len(names) == 1)
    return runs, broken


def _class_name(target) -> str:
    return str(target).rsplit(".", 1)[-1] if isinstance(target, str) and target else "unknown"


def load_run(folder: Path) -> dict:
    """One row: flattened config (`budget.max_num_batched_tokens`) and summary (`ttft_s.p99`)."""
    config = yaml.safe_load((folder / "config.yaml").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    if not isinstance(config, dict) or not isinstance(summary, dict):
        raise ValueError("config.yaml or summary.json is not a mapping")
    needed = [k for _, k, _, _ in COLUMNS if k not in OPTIONAL] + list(COUNTS)
    missing = [k for k in needed if k.split(".")[0] not in summary]
    if missing:
        raise ValueError(f"summary.json lacks {', '.join(missing)}")
    row = pd.json_normalize(config, sep=".").iloc[0].to_dict()
    row.update(pd.json_normalize(summary, sep=".").iloc[0].to_dict())
    resolved = config.get("resolved") or {}
    row["policy"] = resolved.get("policy_name") or _class_name(row.get("policy._target_"))
    row["workload"] = resolved.get("workload_name") or _class_name(row.get("workload._target_"))
    # The effective step budget: the config holds it, or (while runs resolve a null) `resolved`.
    budget = (config.get("budget") or {}).get("max_num_batched_tokens")
    row["budget"] = budget if budget is not None else resolved.get("max_num_batched_tokens")
    row["complete"] = bool(summary.get("complete", True))
    row["workload_fingerprint"] = summary.get("workload_fingerprint") or None
    row["run_dir"] = str(folder)
    return row


def scan_runs(roots: Iterable[Path], include_incomplete: bool = False) -> tuple[pd.DataFrame, int]:
    """(every run folder below `roots` as a row, how many incomplete runs were left out);
    broken or partial folders are warned and skipped."""
    runs, broken = find_run_dirs(roots)
    for folder in broken:
        has = "config.yaml" if (folder / "config.yaml").is_file() else "summary.json"
        warnings.warn(f"skipping {folder}: only {has} (a partial run?)", SkippedRun, stacklevel=2)
    rows, num_incomplete = [], 0
    for folder in runs:
        try:
            row = load_run(folder)
        except Exception as exc:
            warnings.warn(
                f"skipping {folder}: {type(exc).__name__}: {exc}", SkippedRun, stacklevel=2
            )
            continue
        if not row["complete"] and not include_incomplete:
            num_incomplete += 1
            warnings.warn(
                f"skipping {folder}: the run did not complete (summary.complete=false)",
                SkippedRun,
                stacklevel=2,
            )
            continue
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values([*KEYS, "run_dir"], kind="stable").reset_index(drop=True)
    return df, num_incomplete


def load_runs(roots: Iterable[Path], include_incomplete: bool = False) -> pd.DataFrame:
    """Every run folder below `roots` as a row; broken or partial folders are warned and skipped."""
    return scan_runs(roots, include_incomplete)[0]


def value_text(value) -> str:
    """A config value as text: None and NaN (a null or a key the run lacks) read `none`."""
    if isinstance(value, np.generic):
        value = value.item()  # numpy's int64 would otherwise be quoted by json
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def varying_columns(df: pd.DataFrame) -> list[str]:
    """Config columns beyond policy/budget/workload whose value differs between runs (a policy's
    own arguments only when they differ between runs of that policy); `seed` never: repeats."""
    out = []
    for col in df.columns:
        if not col.startswith(VARYING_PREFIXES) or col in VARYING_SKIP:
            continue
        values = df[col].map(value_text)
        if col.startswith("policy."):
            varies = (values.groupby(df["policy"]).nunique() > 1).any()
        else:
            varies = values.nunique() > 1
        if varies:
            out.append(col)
    return out


def row_keys(df: pd.DataFrame) -> list[str]:
    """The columns naming a row of the comparison: policy, budget, workload, varying config."""
    return [*KEYS, *varying_columns(df)]


def _labels(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One text per row of the values of `columns` (NaN-safe, for grouping)."""
    if not columns:
        return pd.Series("", index=frame.index)
    return frame[list(columns)].map(value_text).agg(" ".join, axis=1)


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, dof: int) -> float:
    """The `p` quantile (p > 0.5) of Student's t with `dof` degrees of freedom: bisection on its
    CDF, the density integrated from 0 by Simpson's rule (no scipy needed)."""
    log_c = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def cdf(t: float, steps: int = 2000) -> float:
        xs = np.linspace(0.0, t, steps + 1)
        pdf = np.exp(log_c - (dof + 1) / 2 * np.log1p(xs * xs / dof))
        weights = np.ones(steps + 1)
        weights[1:-1:2], weights[2:-1:2] = 4, 2
        return 0.5 + float(pdf @ weights) * t / (3 * steps)

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci95(values: pd.Series) -> tuple[float, float]:
    """(mean, half-width of the 95% t confidence interval) of the finite values; NaN when
    there are none (mean) or fewer than two (interval)."""
    v = [float(x) for x in pd.to_numeric(values, errors="coerce") if np.isfinite(x)]
    if not v:
        return math.nan, math.nan
    if len(v) < 2:
        return v[0], math.nan
    return statistics.fmean(v), t_quantile(0.975, len(v) - 1) * statistics.stdev(v) / len(v) ** 0.5


def run_metrics(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A row per run: its keys, comparison columns and served counts, and `short` where another
    run of the same workload instance (setting, seed, fingerprint) finished more requests."""
    runs = df[list(keys)].copy()
    for column, key, _, _ in COLUMNS:
        values = pd.to_numeric(df[key], errors="coerce") if key in df else np.nan
        runs[column] = values * 1e3 if column.endswith("_ms") else values
    for count in COUNTS:
        runs[f"total_{count}"] = pd.to_numeric(df[count], errors="coerce").fillna(0).astype(int)
    runs["seed"] = df[REPEAT_KEY] if REPEAT_KEY in df else None
    runs["complete"] = df["complete"].astype(bool)
    runs["fingerprint"] = df["workload_fingerprint"].map(
        lambda f: f if isinstance(f, str) and f else "unknown"  # an older run, or NaN
    )
    runs["setting"] = _labels(df, [k for k in keys if k not in ("policy", "budget")])
    instance = _labels(runs, ["setting", "seed", "fingerprint"])
    most = runs["total_num_finished"].groupby(instance).transform("max")
    runs["short"] = runs["total_num_finished"] < most
    runs["run_dir"] = df["run_dir"]
    return runs


def aggregate(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A row per configuration (keys and completeness): n, seeds, mean and CI of each column,
    served counts summed, the workloads its runs served (seed, fingerprint) and its folders."""
    config = _labels(runs, [*keys, "complete"])
    rows = []
    for _, group in runs.groupby(config, sort=False):
        first = group.iloc[0]
        row = {k: first[k] for k in keys}
        seeds = [value_text(s) for s in group["seed"]]
        row.update(n=len(group), seeds=",".join(s for s in seeds if s != "none"))
        for column, *_ in COLUMNS:
            row[column], row[f"{column}_ci95"] = mean_ci95(group[column])
        total = {c: int(group[f"total_{c}"].sum()) for c in COUNTS}
        row["served"] = f"{total['num_finished']}/{total['num_requests']}"
        row["unserved"] = f"{total['num_rejected']} rejected, {total['num_aborted']} aborted"
        row["served_fewer"] = bool(group["short"].any())
        row["complete"] = bool(first["complete"])
        row["setting"] = first["setting"]
        row["workloads"] = tuple(sorted(zip(seeds, group["fingerprint"], strict=True)))
        row["fingerprint"] = ",".join(dict.fromkeys(f[:8] for f in group["fingerprint"]))
        row["run_dir"] = ";".join(group["run_dir"])
        rows.append(row)
    return pd.DataFrame(rows)


def assign_groups(table: pd.DataFrame) -> None:
    """Set `group` (rows ranked together: one setting, the same workloads) and `split` (a
    letter where one setting holds several request sets), warning loudly about each split."""
    table["group"], table["split"] = table["setting"], ""
    for setting, rows in table.groupby("setting", sort=False):
        kinds = list(dict.fromkeys(rows["workloads"]))
        if len(kinds) < 2:
            continue
        parts = []
        for letter, kind in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", kinds, strict=False):
            index = rows.index[rows["workloads"] == kind]
            table.loc[index, "split"] = letter
            table.loc[index, "group"] = f"{setting} [{letter}]"
            members = ", ".join(_row_name(table.loc[i], marks=False) for i in index)
            fps = ", ".join(sorted({fp[:8] for _, fp in kind}))
            parts.append(f"[{letter}] fingerprint {fps} (seeds {_seeds(kind)}): {members}")
        warnings.warn(
            f"workload '{setting}' names {len(kinds)} different request sets (workload "
            f"fingerprints or seeds differ; 'unknown' is a run older than fingerprints); they "
            f"are ranked apart: {'; '.join(parts)}",
            WorkloadMismatch,
            stacklevel=2,
        )


def _seeds(kind: tuple) -> str:
    return ",".join(seed for seed, _ in kind if seed != "none") or "-"


def best_positions(values: Sequence[float], better: str, eligible: Sequence[bool]) -> list[int]:
    """Positions holding the best of the eligible finite values (`better`: max or min); none
    for a lone value or a tie of all."""
    candidates = [
        (i, float(v))
        for i, (v, ok) in enumerate(zip(values, eligible, strict=True))
        if ok and v is not None and np.isfinite(v)
    ]
    if len(candidates) < 2 or len({v for _, v in candidates}) < 2:
        return []
    target = (max if better == "max" else min)(v for _, v in candidates)
    return [i for i, v in candidates if v == target]


def mark_best(table: pd.DataFrame) -> None:
    """Set `best_in`: the columns where a row is best in its group; only complete rows that
    served as many requests as any other of their workload are candidates."""
    best = {i: [] for i in table.index}
    for _, rows in table.groupby("group", sort=False):
        eligible = (rows["complete"] & ~rows["served_fewer"]).tolist()
        for column, _, better, _ in COLUMNS:
            if better is None:
                continue
            for pos in best_positions(rows[column].tolist(), better, eligible):
                best[rows.index[pos]].append(column)
    table["best_in"] = [",".join(best[i]) for i in table.index]


def split_runs(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """A row per run and value of `by` (`tenant`, `priority`), its metrics recomputed from the
    run's requests.parquet over that slice (throughputs over the whole run's makespan), and
    `service_share`, the slice's share of the run's service. Run-wide figures (busy, KV,
    fairness) are blanked. A run without readable records by `by` is warned and skipped."""
    from harness.metrics import slice_summaries

    rows = []
    for _, run in df.iterrows():
        try:
            requests = pd.read_parquet(Path(run["run_dir"]) / "requests.parquet")
            slo = {k: _number(run.get(f"slo.{k}")) for k in ("ttft_s", "tpot_s", "e2e_s")}
            slices = slice_summaries(requests, by, float(run["duration_s"]), slo)
            if not slices:
                raise ValueError(f"requests.parquet has no '{by}' column")
        except Exception as exc:
            warnings.warn(
                f"skipping {run['run_dir']} in the split by {by}: {type(exc).__name__}: {exc}",
                SkippedRun,
                stacklevel=2,
            )
            continue
        total = sum(s["service_tokens"] for s in slices.values())
        for value, summary in slices.items():
            row = run.to_dict()
            row.update({k: math.nan for k in RUN_ONLY})
            row.update(pd.json_normalize(summary, sep=".").iloc[0].to_dict())
            row["service_share"] = summary["service_tokens"] / total if total else math.nan
            row[by] = value
            rows.append(row)
    columns = dict.fromkeys([*df.columns, *(k for r in rows for k in r)])
    return pd.DataFrame(rows, columns=list(columns))


def _number(value) -> float | None:
    value = pd.to_numeric(value, errors="coerce")
    return None if value is None or pd.isna(value) else float(value)


def comparison(df: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """The P99 table: a row per configuration (policy x budget x workload x varying config,
    repeats over seeds aggregated), `best_in` naming the columns where it is best in `group`.
    With `by` (`df` from `split_runs`), a row per configuration and value of `by`, ranked only
    against the rows of the same value."""
    keys = [*row_keys(df), *([by] if by else [])]
    table = aggregate(run_metrics(df, keys), keys)
    assign_groups(table)
    mark_best(table)
    return table


def _row_name(row: pd.Series, marks: bool = True) -> str:
    name = f"{row['policy']} b{value_text(row['budget'])}"
    return f"{name} (incomplete)" if marks and not row["complete"] else name


def _key_columns(table: pd.DataFrame) -> list[str]:
    return list(table.columns[: table.columns.get_loc("n")])


def _shown_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, label) of the metrics to show: optional ones only where some run has them."""
    return [
        (column, label)
        for column, _, _, label in COLUMNS
        if column not in OPTIONAL or table[column].notna().any()
    ]


def to_markdown(table: pd.DataFrame) -> str:
    """The comparison as a Markdown table (best values in bold, mean ± CI where n > 1), then a
    footnote for each row that served fewer requests."""
    keys, shown = _key_columns(table), _shown_columns(table)
    header = [*keys, "n", *(label for _, label in shown)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for _, row in table.iterrows():
        best = set(row["best_in"].split(",")) if row["best_in"] else set()
        cells = [_key_cell(row, k, notes) for k in keys] + [str(row["n"])]
        for column, _ in shown:
            cell = _fmt(row[column])
            cell = f"**{cell}**" if column in best else cell
            ci = row[f"{column}_ci95"]
            # No interval for one run; none for repeats that all agree (a count of 0, say).
            cells.append(f"{cell} ± {_fmt(ci)}" if np.isfinite(ci) and ci > 0 else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *notes]).rstrip()


def _key_cell(row: pd.Series, key: str, notes: list[str]) -> str:
    """A key's cell; the policy carries the incomplete and served-fewer marks, the workload its
    request-set letter."""
    cell = value_text(row[key])
    if key == "policy":
        if not row["complete"]:
            cell += " (incomplete)"
        if row["served_fewer"]:
            notes.append(
                f"†{len(notes) + 1} {_row_name(row, marks=False)}: served {row['served']} "
                f"({row['unserved']}); another run of this workload served more. Not ranked."
            )
            cell += f" †{len(notes)}"
    elif key == "workload" and row["split"]:
        cell += f" [{row['split']}]"
    return cell


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "-"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def enclosing_run_dir(path: Path) -> Path | None:
    """The run folder `path` is or lies in, if any."""
    path = Path(path).absolute()
    return next((p for p in (path, *path.parents) if _is_run_dir(p)), None)


def _is_run_dir(path: Path) -> bool:
    """A run folder, finished or not: summary.json, or config.yaml with a run's other files (a
    lone config.yaml, in a home folder say, is not one)."""
    if (path / "summary.json").is_file():
        return True
    others = ("requests.parquet", "steps.parquet", ".hydra")
    return (path / "config.yaml").is_file() and any((path / o).exists() for o in others)


def default_out_dir(dirs: Sequence[Path]) -> Path:
    """`report/` beside the inputs: in the one folder given (or the inputs' common folder), or
    beside the run folder that folder is or lies in."""
    paths = [Path(d).absolute() for d in dirs]
    base = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0]
    run = enclosing_run_dir(base)
    return (run.parent if run else base) / "report"


def prepare_out_dir(out: Path) -> None:
    """Create `out` and check a file can be written there; never a run folder's inside."""
    run = enclosing_run_dir(out)
    if run is not None:
        raise ReportError(f"{out} is inside the run folder {run}; choose another -o", 2)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ReportError(f"cannot write the report to {out}: {exc.strerror or exc}", 2) from None


def sweep_group(df: pd.DataFrame) -> str | None:
    """The runs' sweep (`resolved.sweep_name`) when they share one."""
    names = df["resolved.sweep_name"].dropna().unique() if "resolved.sweep_name" in df else []
    return str(names[0]) if len(names) == 1 else None


def write_report(
    roots: Sequence[Path],
    out_dir: Path,
    max_timelines: int = 6,
    include_incomplete: bool = False,
    by: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load the runs under `roots`; write report.md, report.csv, runs.csv and PNGs to `out_dir`;
    (runs, comparison). With `by`, the comparison (report.md, report.csv) is split by tenant or
    priority; runs.csv and the plots stay whole runs. Raises ReportError when there is nothing
    to report or `out_dir` cannot be written."""
    from harness import report_plots

    df, num_incomplete = scan_runs(roots, include_incomplete)
    if df.empty:
        raise ReportError(_no_runs_message(roots, num_incomplete))
    prepare_out_dir(out_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = whole = comparison(df)
        if by:
            split = split_runs(df, by)
            if split.empty:
                raise ReportError(f"no run has requests.parquet records by {by}")
            table = comparison(split, by)
    for w in caught:  # passed on, and the mismatches also go into report.md
        warnings.warn(w.message, stacklevel=2)
    mismatches = [str(w.message) for w in caught if issubclass(w.category, WorkloadMismatch)]
    try:
        df.to_csv(out_dir / "runs.csv", index=False)
        table.drop(columns=["workloads", "setting"]).to_csv(out_dir / "report.csv", index=False)
        pngs = report_plots.plot_all(df, whole, row_keys(df), out_dir, max_timelines)
        (out_dir / "report.md").write_text(_report_md(df, table, roots, pngs, mismatches, by))
    except OSError as exc:
        raise ReportError(f"cannot write the report to {out_dir}: {exc}", 2) from None
    return df, table


def _no_runs_message(roots: Sequence[Path], num_incomplete: int) -> str:
    where = ", ".join(map(str, roots))
    if not num_incomplete:
        return f"no run folders (summary.json + config.yaml) below {where}"
    runs = "run was" if num_incomplete == 1 else "runs were"
    return (
        f"no complete run folders below {where}: {num_incomplete} incomplete {runs} skipped "
        "(summary.complete=false); pass --include-incomplete to report them"
    )


def _report_md(
    df, table, roots, pngs: Sequence[Path], mismatches: Sequence[str], by: str | None = None
) -> str:
    split = (
        f" Split by {by}: each {by}'s requests of a run, ranked only against the same {by}; "
        "throughput over the run's makespan; the plots show whole runs."
        if by
        else ""
    )
    return "\n".join(
        [
            f"# Scheduling policies: P99 comparison{f' by {by}' if by else ''}",
            "",
            f"{len(df)} runs ({len(table)} configurations) from "
            f"{', '.join(str(r) for r in roots)}. {LEGEND}{split}",
            "",
            *(f"> **WARNING**: {m}\n" for m in mismatches),
            to_markdown(table),
            "",
            *(f"![{p.stem}]({p.name})" for p in pngs),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="folders holding run folders")
    parser.add_argument(
        "-o", "--out", type=Path, help="output folder (default: report/ beside the inputs)"
    )
    parser.add_argument("--max-timelines", type=int, default=6, help="step timeline PNGs at most")
    parser.add_argument("--include-incomplete", action="store_true", help="keep interrupted runs")
    parser.add_argument(
        "--by", choices=SPLITS, help="split each comparison row by tenant or priority"
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table to W&B, in the runs' sweep group (offline unless WANDB_MODE)",
    )
    args = parser.parse_args(argv)
    out = args.out or default_out_dir(args.dirs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            df, table = write_report(
                args.dirs, out, args.max_timelines, args.include_incomplete, args.by
            )
        except ReportError as exc:
            error = exc
        else:
            error = None
            wandb_dir = _upload(table, df, out) if args.wandb else None
    for w in caught:
        loud = "WARNING" if issubclass(w.category, WorkloadMismatch) else "warning"
        print(f"{loud}: {w.message}", file=sys.stderr)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code)
    print(f"{LEGEND}\n\n{to_markdown(table)}")
    print(f"{len(df)} runs, {len(table)} rows -> {out / 'report.md'}", file=sys.stderr)
    if wandb_dir:
        offline = os.environ.get("WANDB_MODE", "offline") == "offline"
        sync = f"; `wandb sync {wandb_dir}` uploads it" if offline else ""
        print(f"W&B: the comparison table is in {wandb_dir}{sync}", file=sys.stderr)


def _upload(table: pd.DataFrame, df: pd.DataFrame, out: Path) -> str | None:
    from harness.loggers.wandb_report import upload_comparison

    return upload_comparison(table.drop(columns=["workloads"]), sweep_group(df), out)


if __name__ == "__main__":
    main()
