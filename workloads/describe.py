"""Statistics and a picture of a workload, without running it: counts, rates, burstiness
(CV of inter-arrival gaps), length percentiles and prefix reuse; arrivals over time and length
histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workloads.table import RequestTable
from workloads.transforms import mean_rate

PERCENTILES = (50, 90, 99)
REUSE_BLOCKS = (16, 512)  # the KV cache's block size, and the Mooncake trace's hash block


def summarize(table: RequestTable, workload=None) -> dict:
    """Count, duration, mean rate, inter-arrival CV and length statistics of `table`, the
    count of each tenant's requests when there are several tenants, and the prefix reuse of
    its prompts (`prefix_reuse`; `workload`, the table's source, knows how prompts repeat)."""
    t = table.arrival_s
    gaps = np.diff(t)
    out = {
        "num_requests": len(table),
        "duration_s": float(t[-1] - t[0]) if len(t) else 0.0,
        "mean_rate_req_s": mean_rate(t),
        "interarrival_cv": float(gaps.std() / gaps.mean())
        if len(gaps) and gaps.mean() > 0
        else None,
    }
    if table.tenants is not None and len(set(table.tenants.tolist())) > 1:
        names, num = np.unique(table.tenants, return_counts=True)
        out["requests_by_tenant"] = {str(k): int(v) for k, v in zip(names, num, strict=True)}
    for name, values in (("prompt", table.prompt_tokens), ("output", table.output_tokens)):
        out[f"{name}_tokens"] = {
            "mean": float(values.mean()),
            **{f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES},
            "max": int(values.max()),
        }
    segments = reuse_segments(table, workload)
    if segments is None:  # independent random prompt ids: no block repeats
        out["prefix_reuse"] = dict.fromkeys(REUSE_BLOCKS, 0.0)
        out["prefix_reuse_basis"] = "random prompts"
    else:
        out["prefix_reuse"] = prefix_reuse(segments)
        out["prefix_reuse_basis"] = (
            "earlier turns' outputs counted as history"
            if hasattr(workload, "reuse_segments")
            else "equal hash ids, earlier prompts only"
        )
    return out


def prefix_reuse(requests, block_sizes=REUSE_BLOCKS) -> dict[int, float]:
    """The fraction of prompt tokens that are a prefix already seen earlier, counted in whole
    blocks of each of `block_sizes` tokens (as a prefix cache keyed by a hash chained over its
    blocks would find them): {block size: reused tokens / prompt tokens}.

    `requests`: in arrival order, per request (prompt, added): its prompt as a list of
    segments (key, length), where equal keys at equal positions after equal segments hold equal
    tokens, a shorter segment being the first tokens of the longer one; and the segments its
    run adds to what later requests can find after its prompt (a turn's output). A request
    reuses the longest prefix of its prompt that an earlier request's prompt (+ added) held,
    rounded down to whole blocks."""
    node_of: dict[tuple[int, object], int] = {}  # (parent node, segment key) -> node of a trie
    seen = [0]  # per node: how many tokens of its segment some request held; node 0 the root
    reused, total = dict.fromkeys(block_sizes, 0), 0
    for prompt, added in requests:
        node, matched = 0, 0
        for key, length in prompt:
            node = node_of.get((node, key))
            if node is None:
                break
            matched += min(seen[node], length)
            if seen[node] < length:
                break
        total += sum(length for _, length in prompt)
        for block in block_sizes:
            reused[block] += matched // block * block
        node = 0
        for key, length in (*prompt, *added):
            nxt = node_of.setdefault((node, key), len(seen))
            if nxt == len(seen):
                seen.append(0)
            seen[nxt], node = max(seen[nxt], length), nxt
    return {block: reused[block] / total if total else 0.0 for block in block_sizes}


def reuse_segments(table: RequestTable, workload=None):
    """`prefix_reuse`'s input for `table`: the workload's own (`reuse_segments`, sessions),
    the prefix hash blocks of a trace that has them (Mooncake: a block of
    `workload.prefix_block_tokens` ids per hash id, the last one cut, random ids past the listed
    blocks), else None (every prompt is independent random ids)."""
    if hasattr(workload, "reuse_segments"):
        return workload.reuse_segments(table)
    if table.hash_ids is None:
        return None
    block = getattr(workload, "prefix_block_tokens", 512)

    def segments():
        for i, (hashes, n) in enumerate(zip(table.hash_ids, table.prompt_tokens, strict=True)):
            prompt, pos, n = [], 0, int(n)
            for h in hashes[: -(-n // block)]:
                prompt.append((int(h), min(block, n - pos)))
                pos += prompt[-1][1]
            if pos < n:
                prompt.append((("random", i), n - pos))
            yield prompt, ()

    return segments()


def format_summary(title: str, summary: dict, stats: dict) -> str:
    """The summary as aligned text lines, then the loader's counts (clipped, dropped, ...)."""
    rate, cv = summary["mean_rate_req_s"], summary["interarrival_cv"]
    lines = [
        title,
        f"  requests            {summary['num_requests']}",
        *_tenant_lines(summary.get("requests_by_tenant", {})),
        f"  duration            {summary['duration_s']:.1f} s",
        f"  mean rate           {rate:.3f} req/s" if rate else "  mean rate           -",
        f"  inter-arrival CV    {cv:.3f}" if cv is not None else "  inter-arrival CV    -",
        "  tokens              mean      " + "".join(f"p{q:<8}" for q in PERCENTILES) + "max",
    ]
    for name in ("prompt", "output"):
        s = summary[f"{name}_tokens"]
        cols = "".join(f"{s[f'p{q}']:<9.0f}" for q in PERCENTILES)
        lines.append(f"    {name:<17} {s['mean']:<9.1f} {cols}{s['max']}")
    if "prefix_reuse" in summary:
        reuse = ", ".join(
            f"{100 * r:.1f}% in {b}-token blocks" for b, r in summary["prefix_reuse"].items()
        )
        lines.append(f"  prefix reuse        {reuse} ({summary['prefix_reuse_basis']})")
    counts = {k: v for k, v in stats.items() if k.startswith("num_") and k != "num_requests"}
    if counts:
        lines.append("  loading: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return "\n".join(lines)


def _tenant_lines(requests_by_tenant: dict[str, int]) -> list[str]:
    width = max(map(len, requests_by_tenant), default=0)
    return [f"    tenant {name:<{width}}  {num}" for name, num in requests_by_tenant.items()]


def plot(table: RequestTable, title: str, path: Path, stats: dict | None = None) -> Path:
    """A PNG: arrival rate over time on top, prompt and output length histograms below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 7), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    ax = fig.add_subplot(grid[0, :])
    t = table.arrival_s
    span = max(float(t[-1]), 1e-9)
    bin_s = _nice_bin(span)
    edges = np.arange(0.0, span + bin_s, bin_s)  # the last bin may be only partly covered
    counts, _ = np.histogram(t, bins=edges)
    ax.stairs(counts / bin_s, edges, color="tab:blue", lw=1.2)
    ax.axhline(
        len(t) / span, color="tab:red", ls="--", lw=1, label=f"mean {len(t) / span:.2f} req/s"
    )
    ax.set(xlabel="time since first arrival (s)", ylabel=f"arrivals/s ({bin_s:g} s bins)")
    ax.set_title("Arrivals over time", loc="left")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    for col, (name, values, color) in enumerate(
        (
            ("Prompt", table.prompt_tokens, "tab:green"),
            ("Output", table.output_tokens, "tab:orange"),
        )
    ):
        ax = fig.add_subplot(grid[1, col])
        lo, hi = int(values.min()), int(values.max())
        bins = np.arange(lo, hi + 2) - 0.5 if hi - lo < 120 else 60  # integer-aligned when narrow
        ax.hist(values, bins=bins, color=color, alpha=0.85)
        p50, p99 = np.percentile(values, [50, 99])
        for q, v, ls in (("p50", p50, "-"), ("p99", p99, ":")):
            ax.axvline(v, color="black", ls=ls, lw=1, label=f"{q} = {v:.0f}")
        ax.set(xlabel=f"{name.lower()} tokens", ylabel="requests")
        clipped = (stats or {}).get("num_clipped") if name == "Prompt" else 0
        note = f" ({clipped} requests clipped to max_model_len)" if clipped else ""
        ax.set_title(f"{name} lengths{note}", loc="left")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=13)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _nice_bin(span_s: float) -> float:
    """A round bin width giving roughly 50-150 bins over `span_s`."""
    for width in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800):
        if span_s / width <= 150:
            return float(width)
    return 3600.0
