"""The report's PNGs: P99 latency vs throughput (Pareto view), latency CDFs, step timelines."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.metrics import inter_token_latencies  # noqa: E402

MAX_FIGURES = 8  # per kind (Pareto, CDF): the rest of a large sweep is in report.csv
CDF_METRICS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E"))


class SkippedPlot(UserWarning):
    """A run whose parquet files could not be read is left out of a plot."""


def plot_all(
    df: pd.DataFrame, table: pd.DataFrame, keys: list[str], out_dir: Path, max_timelines: int
) -> list[Path]:
    """Every PNG of the report; returns their paths."""
    pngs = []
    for name, index in _groups(table, keys, exclude=("policy", "budget", "arrival.rate")):
        path = out_dir / f"pareto{_slug(name)}.png"
        plot_pareto(table.loc[index], df.loc[index], path, name)
        pngs.append(path)
    for name, index in _groups(table, keys, exclude=("policy",)):
        path = out_dir / f"cdf{_slug(name)}.png"
        if plot_cdfs(df.loc[index], path, name):
            pngs.append(path)
    for i in _timeline_runs(table, keys, max_timelines):
        row = df.loc[i]
        label = run_label(row, keys)
        path = out_dir / f"timeline_{_slug(label).lstrip('_')}.png"
        if plot_timeline(row, path, label):
            pngs.append(path)
    plt.close("all")
    return pngs


def run_label(row: pd.Series, keys: list[str]) -> str:
    parts = [str(row["policy"]), f"b={row['budget']}", str(row["workload"])]
    parts += [
        f"{k.rsplit('.', 1)[-1]}={row[k]}"
        for k in keys
        if k not in ("policy", "budget", "workload")
    ]
    return " ".join(parts)


def _groups(table: pd.DataFrame, keys: list[str], exclude: tuple[str, ...]):
    """(title, index) of runs equal in every key but the excluded ones, at most MAX_FIGURES."""
    setting = [k for k in keys if not any(k == e or k.endswith(e) for e in exclude)]
    if not setting:
        return [("", table.index)]
    labels = (
        table[setting]
        .astype(str)
        .apply(
            lambda r: " ".join(
                f"{k.rsplit('.', 1)[-1]}={v}" if k != "workload" else v for k, v in r.items()
            ),
            axis=1,
        )
    )
    names = list(dict.fromkeys(labels))
    if len(names) > MAX_FIGURES:
        warnings.warn(
            f"{len(names)} settings; plotting the first {MAX_FIGURES}", SkippedPlot, stacklevel=2
        )
    return [(n, table.index[labels == n]) for n in names[:MAX_FIGURES]]


def _slug(name: str) -> str:
    return ("_" + re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_")) if name else ""


def _colors(policies) -> dict:
    cmap = plt.get_cmap("tab10")
    return {p: cmap(i % 10) for i, p in enumerate(sorted(set(policies)))}


def plot_pareto(table: pd.DataFrame, df: pd.DataFrame, path: Path, title: str) -> None:
    """P99 TTFT and P99 TPOT against output throughput, a colour per policy; each policy's
    non-dominated points are joined (its Pareto front); the SLO is dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    colors = _colors(table["policy"])
    rate = next((c for c in table.columns if c.endswith("arrival.rate")), None)
    for ax, column, slo_key, label in (
        (axes[0], "p99_ttft_ms", "slo.ttft_s", "P99 TTFT (ms)"),
        (axes[1], "p99_tpot_ms", "slo.tpot_s", "P99 TPOT (ms)"),
    ):
        for policy, runs in table.groupby("policy", sort=True):
            x, y = runs["output_throughput_tok_s"].to_numpy(), runs[column].to_numpy()
            ax.scatter(x, y, color=colors[policy], label=policy, s=36, zorder=3)
            front = _pareto_front(x, y)
            ax.plot(x[front], y[front], color=colors[policy], lw=1.5, alpha=0.8)
            if len(table) <= 30:
                for (_, r), xi, yi in zip(runs.iterrows(), x, y, strict=True):
                    note = f"b{r['budget']}" + (f" r{r[rate]:g}" if rate else "")
                    ax.annotate(
                        note, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points"
                    )
        slo = pd.to_numeric(df.get(slo_key), errors="coerce").dropna() if slo_key in df else []
        if len(slo):
            ax.axhline(
                slo.iloc[0] * 1e3,
                color="grey",
                ls="--",
                lw=1,
                label=f"SLO {slo.iloc[0] * 1e3:g} ms",
            )
        _maybe_log(ax, table[column])
        ax.set_xlabel("output throughput (tokens/s)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(title="policy", fontsize=8, loc="best")
    fig.suptitle(f"P99 latency vs throughput{f' — {title}' if title else ''}")
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def _latencies(requests: pd.DataFrame) -> dict[str, np.ndarray]:
    done = requests[requests["status"] == "finished"]
    values = {k: done[k].to_numpy(dtype=float) for k, _ in CDF_METRICS if k != "itl_s"}
    values["itl_s"] = inter_token_latencies(done) if "token_times_s" in done else np.empty(0)
    return {k: np.sort(v[np.isfinite(v)]) * 1e3 for k, v in values.items()}


def plot_cdfs(df: pd.DataFrame, path: Path, title: str) -> bool:
    """TTFT, TPOT, ITL and E2E CDFs (ms), a line per run (policy) of one setting."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    colors = _colors(df["policy"])
    drawn = False
    for _, row in df.iterrows():
        try:
            requests = pd.read_parquet(Path(row["run_dir"]) / "requests.parquet")
        except Exception as exc:
            warnings.warn(f"skipping {row['run_dir']} in CDFs: {exc}", SkippedPlot, stacklevel=2)
            continue
        label = (
            str(row["policy"]) if df["policy"].is_unique else f"{row['policy']} b{row['budget']}"
        )
        for ax, (key, _) in zip(axes.flat, CDF_METRICS, strict=True):
            v = _latencies(requests)[key]
            if v.size:
                ax.plot(
                    v,
                    np.arange(1, v.size + 1) / v.size,
                    color=colors[row["policy"]],
                    label=label,
                    lw=1.5,
                )
                drawn = True
    for ax, (key, name) in zip(axes.flat, CDF_METRICS, strict=True):
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests" if key != "itl_s" else "fraction of token gaps")
        ax.set_ylim(0, 1.01)
        ax.axhline(0.99, color="grey", ls=":", lw=0.8)
        ax.grid(True, alpha=0.3)
        lines = ax.get_lines()
        xs = np.concatenate([ln.get_xdata() for ln in lines]) if lines else np.empty(0)
        if xs.size and xs.min() > 0 and xs.max() / xs.min() > 50:
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
    axes[0, 0].legend(title="policy", fontsize=8, loc="lower right")
    fig.suptitle(f"Latency CDFs (dotted: P99){f' — {title}' if title else ''}")
    if drawn:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def _timeline_runs(table: pd.DataFrame, keys: list[str], limit: int) -> list:
    """All runs if few; else one setting's runs (the one with the most policies) up to `limit`."""
    if len(table) <= limit:
        return list(table.index)
    groups = _groups(table, keys, exclude=("policy",))
    _, index = max(groups, key=lambda g: table.loc[g[1], "policy"].nunique())
    return list(index[:limit])


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
