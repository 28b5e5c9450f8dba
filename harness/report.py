"""`python -m harness.report DIR...`: gather run folders into one table, compare P99s, plot.

A run folder is any folder holding `summary.json` and `config.yaml` (DESIGN.md, "Results of a
run"), at any depth below the given folders, from any launcher. Writes `report.md`, `report.csv`
(the comparison), `runs.csv` (every config and summary column) and PNGs next to them.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

KEYS = ("policy", "budget", "workload")  # the rows of the comparison, before varying extras
# Config columns that tell runs apart when they vary (a load sweep's rate, a second budget, ...).
VARYING_PREFIXES = ("budget.", "workload.", "policy.", "slo.", "engine.kind", "model.", "seed")
VARYING_SKIP = ("budget.max_num_batched_tokens", "policy._target_", "workload._target_")

# Comparison columns: (column, summary key, better, label). Latencies are shown in ms.
COLUMNS = (
    ("output_throughput_tok_s", "output_throughput_tok_s", "max", "throughput (out tok/s)"),
    ("p50_ttft_ms", "ttft_s.p50", "min", "P50 TTFT (ms)"),
    ("p99_ttft_ms", "ttft_s.p99", "min", "P99 TTFT (ms)"),
    ("p99_tpot_ms", "tpot_s.p99", "min", "P99 TPOT (ms)"),
    ("p99_itl_ms", "itl_s.p99", "min", "P99 ITL (ms)"),
    ("p99_e2e_ms", "e2e_s.p99", "min", "P99 E2E (ms)"),
    ("goodput_req_s", "goodput_req_s", "max", "goodput (req/s)"),
    ("num_preemptions", "num_preemptions", "min", "preemptions"),
)


class SkippedRun(UserWarning):
    """A run folder that is broken or partial and is left out of the report."""


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
    missing = [k for _, k, _, _ in COLUMNS if k.split(".")[0] not in summary]
    if missing:
        raise ValueError(f"summary.json lacks {', '.join(missing)}")
    row = pd.json_normalize(config, sep=".").iloc[0].to_dict()
    row.update(pd.json_normalize(summary, sep=".").iloc[0].to_dict())
    resolved = config.get("resolved") or {}
    row["policy"] = resolved.get("policy_name") or _class_name(row.get("policy._target_"))
    row["workload"] = resolved.get("workload_name") or _class_name(row.get("workload._target_"))
    row["budget"] = row.get("budget.max_num_batched_tokens")
    row["run_dir"] = str(folder)
    return row


def load_runs(roots: Iterable[Path], include_incomplete: bool = False) -> pd.DataFrame:
    """Every run folder below `roots` as a row; broken or partial folders are warned and skipped."""
    runs, broken = find_run_dirs(roots)
    for folder in broken:
        has = "config.yaml" if (folder / "config.yaml").is_file() else "summary.json"
        warnings.warn(f"skipping {folder}: only {has} (a partial run?)", SkippedRun, stacklevel=2)
    rows = []
    for folder in runs:
        try:
            row = load_run(folder)
        except Exception as exc:
            warnings.warn(
                f"skipping {folder}: {type(exc).__name__}: {exc}", SkippedRun, stacklevel=2
            )
            continue
        if not row.get("complete", True) and not include_incomplete:
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
    return df


def varying_columns(df: pd.DataFrame) -> list[str]:
    """Config columns beyond policy/budget/workload whose value differs between runs (a policy's
    own arguments only when they differ between runs of that policy)."""
    out = []
    for col in df.columns:
        if not col.startswith(VARYING_PREFIXES) or col in VARYING_SKIP:
            continue
        values = df[col].map(lambda v: json.dumps(v, sort_keys=True, default=str))
        if col.startswith("policy."):
            varies = (values.groupby(df["policy"]).nunique(dropna=False) > 1).any()
        else:
            varies = values.nunique(dropna=False) > 1
        if varies:
            out.append(col)
    return out


def row_keys(df: pd.DataFrame) -> list[str]:
    """The columns naming a row of the comparison: policy, budget, workload, varying config."""
    return [*KEYS, *varying_columns(df)]


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    """The P99 table: a row per run (policy x budget x workload x varying config), `best_in`
    naming the columns where the row is best among runs of the same workload setting."""
    keys = row_keys(df)
    table = df[keys].copy()
    for column, key, _, _ in COLUMNS:
        values = pd.to_numeric(df[key], errors="coerce") if key in df else np.nan
        table[column] = values * 1e3 if column.endswith("_ms") else values
    groups = setting_groups(table, keys)
    best = [[] for _ in range(len(table))]
    for _, index in groups:
        for column, _, better, _ in COLUMNS:
            values = table.loc[index, column]
            if values.notna().sum() < 2 or values.nunique() < 2:
                continue  # a lone run, or a tie of all, is not "best" of anything
            target = values.max() if better == "max" else values.min()
            for i in index[values.to_numpy() == target]:
                best[table.index.get_loc(i)].append(column)
    table["best_in"] = [",".join(b) for b in best]
    table["run_dir"] = df["run_dir"]
    return table


def setting_groups(table: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.Index]]:
    """Runs that share everything but policy and budget (the same load: comparable)."""
    setting = [k for k in keys if k not in ("policy", "budget")]
    if not setting:
        return [((), table.index)]
    labels = table[setting].map(str).agg(" ".join, axis=1)
    return [((name,), table.index[labels == name]) for name in dict.fromkeys(labels)]


def to_markdown(table: pd.DataFrame) -> str:
    """The comparison as a Markdown table, best values in bold."""
    keys = [c for c in table.columns if c not in {c for c, *_ in COLUMNS} | {"best_in", "run_dir"}]
    header = [*keys, *(label for *_, label in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        best = set(row["best_in"].split(",")) if row["best_in"] else set()
        cells = [_fmt(row[k]) for k in keys]
        for column, *_ in COLUMNS:
            cell = _fmt(row[column])
            cells.append(f"**{cell}**" if column in best else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "-"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def write_report(
    roots: Sequence[Path], out_dir: Path, max_timelines: int = 6, include_incomplete: bool = False
) -> pd.DataFrame:
    """Load the runs under `roots`; write report.md, report.csv, runs.csv and PNGs to `out_dir`."""
    from harness import report_plots

    df = load_runs(roots, include_incomplete)
    if df.empty:
        raise SystemExit(
            f"no run folders (summary.json + config.yaml) below {', '.join(map(str, roots))}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    table = comparison(df)
    df.to_csv(out_dir / "runs.csv", index=False)
    table.to_csv(out_dir / "report.csv", index=False)
    keys = row_keys(df)
    pngs = report_plots.plot_all(df, table, keys, out_dir, max_timelines)
    lines = [
        "# Scheduling policies: P99 comparison",
        "",
        f"{len(df)} runs from {', '.join(str(r) for r in roots)}. Latencies in ms; "
        "**bold** is the best value of its column among runs of the same workload setting "
        "(highest throughput and goodput, lowest latencies and preemptions).",
        "",
        to_markdown(table),
        "",
        *(f"![{p.stem}]({p.name})" for p in pngs),
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="folders holding run folders")
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        help="output folder (default: DIR when one is given, else ./report)",
    )
    parser.add_argument("--max-timelines", type=int, default=6, help="step timeline PNGs at most")
    parser.add_argument("--include-incomplete", action="store_true", help="keep interrupted runs")
    args = parser.parse_args(argv)
    out = args.out or (args.dirs[0] if len(args.dirs) == 1 else Path("report"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = write_report(args.dirs, out, args.max_timelines, args.include_incomplete)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{len(table)} runs -> {out / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
