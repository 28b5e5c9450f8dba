"""The report's PNGs: P99 latency vs throughput (Pareto view), latency CDFs, step timelines.

A point or line is a row of the comparison (a configuration, its seeds pooled); a timeline is
one run. Incomplete rows say `(incomplete)` wherever they appear.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from harness.metrics import latency_cdf as metrics_latency_cdf  # noqa: E402
from harness.report import value_text  # noqa: E402

MAX_FIGURES = 8  # per kind (Pareto, CDF): the rest of a large sweep is in report.csv
CDF_METRICS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E"))
MARKERS = "osD^vP*XphH<>8d"  # one per budget in a Pareto plot
INCOMPLETE = " (incomplete)"


class SkippedPlot(UserWarning):
    """A run whose parquet files could not be read is left out of a plot."""


def plot_all(
    df: pd.DataFrame, table: pd.DataFrame, keys: list[str], out_dir: Path, max_timelines: int
) -> list[Path]:
    """Every PNG of the report (`df`: a row per run, `table`: the comparison); their paths."""
    names, pngs = _FileNames(out_dir), []
    setting = [k for k in keys if k not in ("policy", "budget")]
    pareto = [k for k in setting if not k.endswith("arrival.rate")]  # a load sweep is one curve
    for title, index in _groups(table, pareto):
        path = names.png("pareto", title)
        plot_pareto(table.loc[index], df, path, title)
        pngs.append(path)
    for title, index in _groups(table, ["budget", *setting]):
        path = names.png("cdf", title)
        if plot_cdfs(table.loc[index], path, title):
            pngs.append(path)
    for i in _timeline_runs(df, table, keys, max_timelines):
        label = run_label(df.loc[i], keys)
        path = names.png("timeline", label)
        if plot_timeline(df.loc[i], path, label):
            pngs.append(path)
    plt.close("all")
    return pngs


def run_label(row: pd.Series, keys: list[str]) -> str:
    """`policy b=budget workload key=value... [seed=s] [(incomplete)]` of a run."""
    parts = [str(row["policy"]), f"b={value_text(row['budget'])}", str(row["workload"])]
    parts += [_key_text(k, row[k]) for k in keys if k not in ("policy", "budget", "workload")]
    if "seed" in row and value_text(row["seed"]) != "none":
        parts.append(f"seed={value_text(row['seed'])}")
    return " ".join(parts) + ("" if row.get("complete", True) else INCOMPLETE)


def _key_text(key: str, value) -> str:
    return (
        value_text(value) if key == "workload" else f"{key.rsplit('.', 1)[-1]}={value_text(value)}"
    )


def _groups(table: pd.DataFrame, columns: list[str]):
    """(title, index) of rows equal in `columns` and in their request set (`split`), at most
    MAX_FIGURES."""
    labels = table.apply(
        lambda r: " ".join([*(_key_text(k, r[k]) for k in columns), *_split(r)]), axis=1
    )
    names = list(dict.fromkeys(labels))
    if len(names) > MAX_FIGURES:
        warnings.warn(
            f"{len(names)} settings; plotting the first {MAX_FIGURES}", SkippedPlot, stacklevel=2
        )
    return [(n, table.index[labels == n]) for n in names[:MAX_FIGURES]]


def _split(row: pd.Series) -> list[str]:
    return [f"[{row['split']}]"] if row.get("split") else []


class _FileNames:
    """`<kind>_<slug>.png` in one folder, numbered when two titles make the same slug."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir, self.used = out_dir, set()

    def png(self, kind: str, title: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", title).strip("_")[:150]
        stem = f"{kind}_{slug}" if slug else kind
        name, n = stem, 1
        while name in self.used:
            n += 1
            name = f"{stem}_{n}"
        self.used.add(name)
        return self.out_dir / f"{name}.png"


def _colors(policies) -> dict:
    cmap = plt.get_cmap("tab10")
    return {p: cmap(i % 10) for i, p in enumerate(sorted(set(policies)))}


def plot_pareto(rows: pd.DataFrame, df: pd.DataFrame, path: Path, title: str) -> None:
    """P99 TTFT and P99 TPOT against output throughput: a colour per policy, a marker per
    budget (legends), each policy's non-dominated points joined, the SLO dashed, the 95%
    intervals of repeats faint. Only the points
    on the frontier of all eligible rows are labelled, and only where a label fits."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colors = _colors(rows["policy"])
    budgets = list(dict.fromkeys(value_text(b) for b in rows.sort_values("budget")["budget"]))
    markers = dict(zip(budgets, MARKERS, strict=False)) if len(budgets) <= len(MARKERS) else {}
    panels = (
        (axes[0], "p99_ttft_ms", "slo.ttft_s", "P99 TTFT (ms)"),
        (axes[1], "p99_tpot_ms", "slo.tpot_s", "P99 TPOT (ms)"),
    )
    for ax, column, slo_key, label in panels:
        _pareto_points(ax, rows, column, colors, markers)
        _slo_line(ax, df, slo_key)
        _maybe_log(ax, rows[column])
        _error_bars(ax, rows, column, colors)
        ax.set_xlabel("output throughput (tokens/s)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    _pareto_legends(fig, rows, colors, markers)
    fig.suptitle(f"P99 latency vs throughput{f' — {title}' if title else ''}")
    fig.canvas.draw()  # the final layout, so labels are placed where they will be drawn
    for ax, column, _, _ in panels:
        _label_frontier(ax, rows, column)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pareto_points(ax, rows: pd.DataFrame, column: str, colors: dict, markers: dict) -> None:
    for (policy, complete), runs in rows.groupby(["policy", "complete"], sort=True):
        x, y = runs["output_throughput_tok_s"].to_numpy(), runs[column].to_numpy()
        color = colors[policy]
        for xi, yi, budget in zip(x, y, runs["budget"], strict=True):
            ax.scatter(
                xi, yi, s=40, zorder=3, marker=markers.get(value_text(budget), "o"),
                color=color, facecolors=color if complete else "none",
            )  # fmt: skip
        front = _pareto_front(x, y)
        ax.plot(x[front], y[front], color=color, lw=1.5, alpha=0.8, ls="-" if complete else ":")


def _error_bars(ax, rows: pd.DataFrame, column: str, colors: dict) -> None:
    """The 95% intervals of repeated configurations, faint, within the points' own limits (a
    few seeds give wide intervals that would otherwise squash every point together)."""
    xerr = rows["output_throughput_tok_s_ci95"].to_numpy(dtype=float)
    yerr = rows[f"{column}_ci95"].to_numpy(dtype=float)
    if not (np.isfinite(xerr).any() or np.isfinite(yerr).any()):
        return
    limits = ax.get_xlim(), ax.get_ylim()
    x, y = rows["output_throughput_tok_s"].to_numpy(), rows[column].to_numpy()
    for i, policy in enumerate(rows["policy"]):
        ax.errorbar(x[i], y[i], xerr=xerr[i], yerr=yerr[i], fmt="none", ecolor=colors[policy],
                    alpha=0.35, lw=1)  # fmt: skip
    ax.set_xlim(limits[0])
    ax.set_ylim(limits[1])


def _slo_line(ax, df: pd.DataFrame, slo_key: str) -> None:
    slo = pd.to_numeric(df[slo_key], errors="coerce").dropna() if slo_key in df else []
    if len(slo):
        ms = slo.iloc[0] * 1e3
        ax.axhline(ms, color="grey", ls="--", lw=1, label=f"SLO {ms:g} ms")
        ax.legend(fontsize=8, loc="best")


def _pareto_legends(fig, rows: pd.DataFrame, colors: dict, markers: dict) -> None:
    """Policies (hollow: incomplete) and budgets, outside the axes so no point is hidden."""
    series = rows[["policy", "complete"]].drop_duplicates().sort_values(["policy", "complete"])
    handles = [
        Line2D([], [], color=colors[p], marker="o", markerfacecolor=colors[p] if c else "none",
               label=p if c else p + INCOMPLETE)
        for p, c in series.itertuples(index=False)
    ]  # fmt: skip
    fig.legend(handles=handles, title="policy", fontsize=8, loc="outside right upper")
    if len(markers) > 1:
        shapes = [
            Line2D([], [], color="grey", marker=m, ls="", label=f"b{b}") for b, m in markers.items()
        ]
        fig.legend(handles=shapes, title="budget", fontsize=8, loc="outside right lower")


def _label_frontier(ax, rows: pd.DataFrame, column: str) -> None:
    """Name the points no eligible row beats on both axes, skipping a label that would overlap
    one already placed (the legend names every policy and budget)."""
    ok = (rows["complete"] & ~rows["served_fewer"]).to_numpy()
    x = np.where(ok, rows["output_throughput_tok_s"].to_numpy(dtype=float), np.nan)
    y = rows[column].to_numpy(dtype=float)
    rate = next((c for c in rows.columns if c.endswith("arrival.rate")), None)
    renderer, placed = ax.figure.canvas.get_renderer(), []
    for i in _pareto_front(x, y):
        row = rows.iloc[i]
        text = f"{row['policy']} b{value_text(row['budget'])}"
        text += f" r{value_text(row[rate])}" if rate and rows[rate].nunique() > 1 else ""
        note = ax.annotate(text, (x[i], y[i]), fontsize=7, xytext=(4, 4),
                           textcoords="offset points")  # fmt: skip
        note.set_in_layout(False)  # labels must not move the axes they were placed on
        box = note.get_window_extent(renderer).expanded(1.05, 1.2)
        if any(box.overlaps(other) for other in placed):
            note.remove()
        else:
            placed.append(box)


def _pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats on both higher x and lower y, by x."""
    ok = np.isfinite(x) & np.isfinite(y)
    idx = [i for i in np.argsort(-x) if ok[i]]
    front, best_y = [], np.inf
    for i in idx:
        if y[i] < best_y:
            front.append(i)
            best_y = y[i]
    return np.array(sorted(front, key=lambda i: x[i]), dtype=int)


def _maybe_log(ax, values: pd.Series) -> None:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() > 20:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)


def plain_log_ticks(axis) -> None:
    """Tick labels `20`, `50`, `100` rather than `5x10^1` on a log axis (1-2-5 only)."""
    from matplotlib.ticker import FuncFormatter

    def label(v, _):
        if v <= 0:
            return ""
        mantissa = round(v / 10 ** np.floor(np.log10(v)), 6)
        return f"{v:g}" if mantissa in (1.0, 2.0, 5.0) else ""

    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(label))


def latency_cdf(requests: pd.DataFrame, key: str) -> tuple[np.ndarray, np.ndarray]:
    """`harness.metrics.latency_cdf` in milliseconds (unserved requests at +inf)."""
    values, fractions = metrics_latency_cdf(requests, key)
    return values * 1e3, fractions


def _read_requests(row: pd.Series) -> pd.DataFrame | None:
    """The requests of a comparison row's runs, pooled (None if a file is unreadable)."""
    try:
        frames = [pd.read_parquet(Path(d) / "requests.parquet") for d in row["run_dir"].split(";")]
    except Exception as exc:
        warnings.warn(f"skipping {row['run_dir']} in CDFs: {exc}", SkippedPlot, stacklevel=3)
        return None
    return pd.concat(frames, ignore_index=True)


def _cdf_label(row: pd.Series, rows: pd.DataFrame) -> str:
    label = str(row["policy"])
    label += "" if rows["policy"].is_unique else f" b{value_text(row['budget'])}"
    label += "" if row["complete"] else INCOMPLETE
    finished, asked = row["served"].split("/")
    return label + (f" (served {row['served']})" if finished != asked else "")


def plot_cdfs(rows: pd.DataFrame, path: Path, title: str) -> bool:
    """TTFT, TPOT, ITL and E2E CDFs (ms) over all requests, a line per comparison row."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    colors = _colors(rows["policy"])
    drawn, spans = False, {key: [] for key, _ in CDF_METRICS}
    for _, row in rows.iterrows():
        requests = _read_requests(row)
        if requests is None or requests.empty:
            continue
        label = _cdf_label(row, rows)
        for ax, (key, _) in zip(axes.flat, CDF_METRICS, strict=True):
            v, fraction = latency_cdf(requests, key)
            if v.size:
                ls = "-" if row["complete"] else ":"
                ax.plot(v, fraction, color=colors[row["policy"]], label=label, lw=1.5, ls=ls)
                spans[key] += [v[0], v[-1]]
                drawn = True
    for ax, (key, name) in zip(axes.flat, CDF_METRICS, strict=True):
        _cdf_axis(ax, key, name, spans[key])
    axes[0, 0].legend(title="policy", fontsize=8, loc="lower right")
    fig.suptitle(
        "Latency CDFs over every request (requests not served: the line ends below 1; "
        f"dotted: P99){f' — {title}' if title else ''}"
    )
    if drawn:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def _cdf_axis(ax, key: str, name: str, span: list[float]) -> None:
    ax.set_xlabel(f"{name} (ms)")
    ax.set_ylabel("fraction of requests" if key != "itl_s" else "fraction of token gaps")
    ax.set_ylim(0, 1.01)
    ax.axhline(0.99, color="grey", ls=":", lw=0.8)
    ax.grid(True, alpha=0.3)
    if span and min(span) > 0 and max(span) / min(span) > 50:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)


def _timeline_runs(df: pd.DataFrame, table: pd.DataFrame, keys: list[str], limit: int) -> list:
    """All runs if few; else those of one comparison group (the one with the most policies),
    up to `limit`."""
    if len(df) <= limit:
        return list(df.index)
    groups = _groups(table, ["budget", *keys[2:]])
    _, index = max(groups, key=lambda g: table.loc[g[1], "policy"].nunique())
    dirs = {d for rd in table.loc[index, "run_dir"] for d in rd.split(";")}
    return [i for i in df.index if df.loc[i, "run_dir"] in dirs][:limit]


def plot_timeline(row: pd.Series, path: Path, title: str) -> bool:
    """A run's steps over time: batch composition, KV blocks used, queue lengths, preemptions."""
    try:
        steps = pd.read_parquet(Path(row["run_dir"]) / "steps.parquet")
    except Exception as exc:
        warnings.warn(f"skipping {row['run_dir']} timeline: {exc}", SkippedPlot, stacklevel=2)
        return False
    if steps.empty:
        return False
    t = (steps["start_s"] - steps["start_s"].iloc[0]).to_numpy()
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    bottom = np.zeros(len(steps))
    for column, label, color in (
        ("num_prefill_tokens", "prefill", "tab:blue"),
        ("num_decode_tokens", "decode", "tab:orange"),
        ("num_padding_tokens", "padding", "tab:grey"),
    ):
        values = steps[column].to_numpy(dtype=float) if column in steps else np.zeros(len(steps))
        axes[0].fill_between(
            t, bottom, bottom + values, step="post", label=label, color=color, alpha=0.8, lw=0
        )
        bottom = bottom + values
    axes[0].set_ylabel("tokens per step")
    axes[0].legend(loc="upper right", fontsize=8, ncol=3)
    axes[1].plot(
        t, steps["num_kv_blocks_used"], drawstyle="steps-post", color="tab:green", label="used"
    )
    capacity = row.get("resolved.num_gpu_blocks")
    if capacity is not None and np.isfinite(float(capacity)):
        axes[1].axhline(
            float(capacity), color="tab:red", ls="--", lw=1, label=f"capacity ({int(capacity)})"
        )
    axes[1].set_ylabel("KV blocks")
    axes[1].legend(loc="upper right", fontsize=8)
    for column, color in (
        ("num_running", "tab:blue"),
        ("num_waiting", "tab:orange"),
        ("num_swapped", "tab:purple"),
    ):
        axes[2].plot(
            t, steps[column], drawstyle="steps-post", color=color, label=column.removeprefix("num_")
        )
    preempted = (
        steps["num_preempted"].to_numpy() > 0
        if "num_preempted" in steps
        else np.zeros(len(t), bool)
    )
    if preempted.any():
        axes[2].plot(
            t[preempted], np.zeros(preempted.sum()), "x", color="tab:red", label="preemption"
        )
    axes[2].set_ylabel("requests")
    axes[2].set_xlabel("time since first step (s)")
    axes[2].legend(loc="upper right", fontsize=8, ncol=4)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Step timeline — {title} ({len(steps)} steps)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
