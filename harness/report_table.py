"""The summary table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

ROWS = (
    ("TTFT", "ttft_s"),
    ("TPOT", "tpot_s"),
    ("ITL", "itl_s"),
    ("E2E", "e2e_s"),
    ("Queue wait", "queue_wait_s"),
)


def _ms(v) -> str:
    return "-" if v is None else f"{v * 1e3:10.1f}"


def format_summary(summary: dict) -> str:
    s = summary
    lines = [
        f"requests: {s['num_requests']} = {s['num_finished']} finished + {s['num_rejected']} rejected"
        f" + {s['num_aborted']} aborted{'' if s['complete'] else '   (INCOMPLETE RUN)'}",
        f"duration {s['duration_s']:.2f} s, {s['num_steps']} steps, "
        f"{s['num_preemptions']} preemptions ({s.get('num_swaps', 0)} by swap), "
        f"{s['num_swapped_out_blocks']} blocks swapped out",
        f"throughput: {s['output_throughput_tok_s']:.1f} output tok/s, "
        f"{s['total_throughput_tok_s']:.1f} total tok/s, {s['request_throughput_req_s']:.2f} req/s, "
        f"goodput {s['goodput_req_s']:.2f} req/s",
        _utilisation_line(s),
        *_prefix_cache_line(s),
        f"{'latency (ms)':<12}{'mean':>10}{'P50':>10}{'P90':>10}{'P99':>10}{'P99.9':>10}",
    ]
    lines[1:1] = _notes(s)
    if s.get("num_starved"):
        lines.append(
            f"WARNING: {s['num_starved']} requests were preempted repeatedly (starving; see num_preemptions in requests.parquet)"
        )
    for label, key in ROWS:
        st = s[key]
        lines.append(
            f"{label:<12}" + "".join(_ms(st[k]) for k in ("mean", "p50", "p90", "p99", "p999"))
        )
    return "\n".join([*lines, *_tenant_lines(s)])


def _tenant_lines(s: dict) -> list[str]:
    """With 2+ tenants: each one's served requests, throughput, P99 TTFT and share of the
    service (prompt + output tokens of finished requests), and Jain's index over them."""
    tenants = s.get("per_tenant") or {}
    if len(tenants) < 2:
        return []
    total = sum(t["service_tokens"] for t in tenants.values())
    width = max(12, *(len(name) + 2 for name in tenants))
    lines = [
        f"{'tenant':<{width}}{'served':>12}{'out tok/s':>12}{'P99 TTFT ms':>12}{'service':>10}"
    ]
    for name, t in tenants.items():
        served = f"{t['num_finished']}/{t['num_requests']}"
        share = _pct(t["service_tokens"] / total) if total else "-"
        lines.append(
            f"{name:<{width}}{served:>12}{t['output_throughput_tok_s']:>12.1f}"
            f"{_ms(t['ttft_s']['p99']).strip():>12}{share:>10}"
        )
    jain = s.get("fairness_jain")
    lines.append(
        "fairness: Jain's index over the tenants' service "
        + ("-" if jain is None else f"{jain:.3f}")
        + " (1 = equal service; 1/n = one tenant served alone)"
    )
    return lines


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _utilisation_line(s: dict) -> str:
    return (
        f"utilisation: busy {_pct(s.get('busy_share'))}, useful tokens "
        f"{_pct(s.get('useful_token_share'))}, KV mean {_pct(s.get('kv_usage_mean'))} / peak "
        f"{_pct(s.get('kv_usage_peak'))}"
    )


def _prefix_cache_line(s: dict) -> list[str]:
    """The prefix cache's hit rate and work, when it served anything (caching on)."""
    rate, cached = s.get("prefix_cache_hit_rate"), s.get("num_cached_tokens", 0)
    if not rate and not cached:
        return []
    return [
        f"prefix cache: hit rate {_pct(rate)} of prompt tokens, {cached} tokens taken from "
        f"the cache (readmissions included), {s.get('num_evicted_blocks', 0)} blocks evicted"
    ]


def _notes(s: dict) -> list[str]:
    """Why requests were rejected, what the workload clipped, steps over the token budget."""
    notes = []
    reasons = s.get("rejection_reasons") or {}
    if reasons:
        counts = ", ".join(f"{n} {kind}" for kind, n in reasons.items())
        notes.append(f"rejected: {counts} (reasons in requests.parquet)")
    if s.get("num_clipped"):
        notes.append(f"workload: {s['num_clipped']} prompts truncated to max_model_len")
    if s.get("num_dropped"):
        notes.append(f"workload: {s['num_dropped']} requests dropped (longer than max_model_len)")
    if s.get("num_oversized_steps"):
        notes.append(
            f"{s['num_oversized_steps']} steps ran one whole prompt longer than "
            "budget.max_num_batched_tokens alone (the policy does not split prompts)"
        )
    return notes


def print_summary(summary: dict, output_dir: Path | None) -> None:
    print(format_summary(summary))
    if output_dir is not None:
        print(f"results: {output_dir}")
