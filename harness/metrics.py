"""Per-request and per-step records, and the summary computed from them (vLLM's definitions).

Everything in `summary.json` is a function of `requests.parquet` and `steps.parquet`, so a
report can recompute or extend it from the files alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from harness.records import Recorder  # noqa: F401  (re-exported: the engine's step recorder)
from harness.request import Request, RequestStatus

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
LATENCIES = ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_wait_s")


def requests_frame(requests: Iterable[Request]) -> pd.DataFrame:
    """One row per request, with its latencies (NaN where undefined) and token times."""
    rows = []
    for r in requests:
        times = r.token_times_s
        ttft = times[0] - r.arrival_s if times else math.nan
        e2e = times[-1] - r.arrival_s if times else math.nan
        tpot = (e2e - ttft) / (len(times) - 1) if len(times) > 1 else math.nan
        first_sched = r.first_scheduled_s if r.first_scheduled_s is not None else math.nan
        rows.append(
            {
                "request_id": r.request_id,
                "arrival_s": r.arrival_s,
                "tenant": r.spec.tenant,
                "priority": r.spec.priority,
                "slo_class": r.spec.slo_class,
                "prompt_tokens": r.num_prompt_tokens,
                "output_tokens": r.num_output_tokens,
                "max_output_tokens": r.spec.max_output_tokens,
                "status": r.status.value,
                "reason": r.reason,
                "first_scheduled_s": first_sched,
                "first_token_s": times[0] if times else math.nan,
                "finish_s": r.finish_s if r.finish_s is not None else math.nan,
                "ttft_s": ttft,
                "tpot_s": tpot,
                "e2e_s": e2e,
                "queue_wait_s": first_sched - r.arrival_s,
                "num_preemptions": r.num_preemptions,
                "num_swaps": r.num_swaps,
                "swap_time_s": r.swap_time_s,
                "num_cached_tokens": r.num_cached_tokens,
                "token_times_s": list(times),
                "output_ids": list(r.output_ids),
            }
        )
    return pd.DataFrame(rows)


def latency_stats(values: np.ndarray) -> dict[str, float | None]:
    """Mean and P50-P99.9 of the finite values; None where there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": None, **{k: None for k in PERCENTILES}}
    pct = np.percentile(values, list(PERCENTILES.values()))
    return {
        "mean": float(values.mean()),
        **{k: float(v) for k, v in zip(PERCENTILES, pct, strict=True)},
    }


def inter_token_latencies(requests_df: pd.DataFrame) -> np.ndarray:
    """Every gap between consecutive output tokens, pooled over all requests."""
    gaps = [np.diff(np.asarray(t, dtype=np.float64)) for t in requests_df["token_times_s"]]
    gaps = [g for g in gaps if g.size]
    return np.concatenate(gaps) if gaps else np.empty(0)


def latency_cdf(requests_df: pd.DataFrame, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted finite latencies in seconds, cumulative fraction) over every request of the
    workload: a request not finished (rejected, aborted) sits at +inf, so the curve tops out at
    the share served. TPOT counts requests asked for 2+ tokens; ITL every gap they asked for.
    The one definition the report's plots and W&B's CDFs share."""
    done = (requests_df["status"] == RequestStatus.FINISHED.value).to_numpy()
    asked = requests_df.get("max_output_tokens", requests_df["output_tokens"]).to_numpy(float)
    if key == "itl_s":
        values = inter_token_latencies(requests_df[done]) if done.any() else np.empty(0)
        total = values.size + np.clip(asked[~done] - 1, 0, None).sum()
    else:
        values = requests_df.loc[done, key].to_numpy(dtype=float)
        if key == "tpot_s":  # a 1-token answer has no TPOT: it is outside this population
            total = np.isfinite(values).sum() + (asked[~done] > 1).sum()
        else:
            total = len(requests_df)
    values = np.sort(values[np.isfinite(values)])
    return values, np.arange(1, values.size + 1) / max(total, 1)


def meets_slo(df: pd.DataFrame, ttft_s: float | None, tpot_s: float | None, e2e_s: float | None):
    """Finished requests within every configured SLO (a 1-token answer has no TPOT to miss)."""
    ok = df["status"] == RequestStatus.FINISHED.value
    for column, bound in (("ttft_s", ttft_s), ("tpot_s", tpot_s), ("e2e_s", e2e_s)):
        if bound is None:
            continue
        within = df[column] <= bound
        if column == "tpot_s":
            within |= df[column].isna()
        ok &= within
    return ok


def summarize(
    requests_df: pd.DataFrame,
    steps_df: pd.DataFrame,
    slo: dict | None = None,
    complete: bool = True,
    error: str | None = None,
    starvation_threshold: int | None = None,
    num_gpu_blocks: int | None = None,
    max_num_batched_tokens: int | None = None,
    workload_fingerprint: str | None = None,
    workload_stats: dict | None = None,
) -> dict:
    """The run's summary.json (README, "Reading the output"). `num_gpu_blocks` gives the KV
    usage fractions, `max_num_batched_tokens` (None for a policy not bound by it) the count of
    oversized steps; the fingerprint and the workload's clipping counts are passed through.

    `per_tenant` and `per_priority` ({value as text: ...}) hold each slice's request counts,
    output and request throughput over the whole run's makespan, `service_tokens` and P50/P99
    TTFT, TPOT and E2E of its finished requests. `fairness_jain` is Jain's index over the
    tenants' service (prompt + output tokens of finished requests, both weighted 1; a tenant
    served nothing counts 0); None with fewer than 2 tenants. It measures equal service, not
    service in proportion to demand: tenants that asked for different amounts score below 1
    under any policy."""
    slo = slo or {}
    status = requests_df["status"] if len(requests_df) else pd.Series(dtype=str)
    done = requests_df[status == RequestStatus.FINISHED.value]
    served = requests_df[requests_df["finish_s"].notna() & (status != RequestStatus.REJECTED.value)]
    if len(served):
        duration = float(served["finish_s"].max() - requests_df["arrival_s"].min())
    else:
        duration = 0.0
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    num_out = int(done["output_tokens"].sum())
    num_total = num_out + int(done["prompt_tokens"].sum())
    good = meets_slo(requests_df, slo.get("ttft_s"), slo.get("tpot_s"), slo.get("e2e_s"))
    summary = {
        "num_requests": len(requests_df),
        "num_finished": int((status == RequestStatus.FINISHED.value).sum()),
        "num_rejected": int((status == RequestStatus.REJECTED.value).sum()),
        "num_aborted": int((status == RequestStatus.ABORTED.value).sum()),
        "complete": bool(complete),
        "error": error,
        "duration_s": duration,
        "num_steps": len(steps_df),
        "output_throughput_tok_s": per_s(num_out),
        "total_throughput_tok_s": per_s(num_total),
        "request_throughput_req_s": per_s(len(done)),
        "goodput_req_s": per_s(int(good.sum())),
        "num_preemptions": int(requests_df["num_preemptions"].sum()) if len(requests_df) else 0,
        "num_swaps": int(requests_df["num_swaps"].sum()) if len(requests_df) else 0,
        "num_starved": int((requests_df["num_preemptions"] >= starvation_threshold).sum())
        if starvation_threshold and len(requests_df)
        else 0,
        "num_swapped_out_blocks": int(steps_df["num_swapped_out_blocks"].sum())
        if len(steps_df)
        else 0,
    }
    summary.update(utilisation(steps_df, duration, num_gpu_blocks, max_num_batched_tokens))
    summary["prefix_cache_hit_rate"] = prefix_cache_hit_rate(requests_df)
    for key in ("num_cached_tokens", "num_evicted_blocks"):  # per step: readmissions included
        summary[key] = int(steps_df[key].sum()) if key in steps_df and len(steps_df) else 0
    summary["rejection_reasons"] = rejection_reasons(requests_df)
    stats = workload_stats or {}
    summary["num_clipped"] = int(stats.get("num_clipped", 0) or 0)
    summary["num_dropped"] = int(stats.get("num_dropped", 0) or 0)
    summary["workload_fingerprint"] = workload_fingerprint
    for name in LATENCIES:
        values = inter_token_latencies(done) if name == "itl_s" else done[name].to_numpy()
        summary[name] = latency_stats(values)
    summary["per_tenant"] = _brief_slices(slice_summaries(requests_df, "tenant", duration, slo))
    summary["per_priority"] = _brief_slices(slice_summaries(requests_df, "priority", duration, slo))
    summary["fairness_jain"] = jain_index(
        [t["service_tokens"] for t in summary["per_tenant"].values()]
    )
    return summary


def service_tokens(requests_df: pd.DataFrame) -> int:
    """A slice's service: prompt + output tokens of its finished requests, both weighted 1
    (plain tokens, not VTC's default w_p=1, w_q=2, so that no policy's own weights are the
    yardstick). Rejected and aborted requests count nothing."""
    done = requests_df[requests_df["status"] == RequestStatus.FINISHED.value]
    return int(done["prompt_tokens"].sum() + done["output_tokens"].sum())


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all are equal, 1/n when one has
    everything; None with fewer than 2 values or when all are 0."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or not (x**2).sum() > 0:
        return None
    return float(x.sum() ** 2 / (x.size * (x**2).sum()))


def slice_summary(requests_df: pd.DataFrame, duration_s: float, slo: dict | None = None) -> dict:
    """The summary of one slice of a run's requests (a tenant, a priority): counts, throughputs
    over the whole run's makespan `duration_s`, goodput, preemptions, `service_tokens`, and the
    latencies of its finished requests (the same rules as the run's)."""
    slo = slo or {}
    status = requests_df["status"]
    done = requests_df[status == RequestStatus.FINISHED.value]
    per_s = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    good = meets_slo(requests_df, slo.get("ttft_s"), slo.get("tpot_s"), slo.get("e2e_s"))
    out = {
        "num_requests": len(requests_df),
        "num_finished": len(done),
        "num_rejected": int((status == RequestStatus.REJECTED.value).sum()),
        "num_aborted": int((status == RequestStatus.ABORTED.value).sum()),
        "output_throughput_tok_s": per_s(int(done["output_tokens"].sum())),
        "request_throughput_req_s": per_s(len(done)),
        "goodput_req_s": per_s(int(good.sum())),
        "num_preemptions": int(requests_df["num_preemptions"].sum()),
        "service_tokens": service_tokens(requests_df),
    }
    for name in LATENCIES:
        values = inter_token_latencies(done) if name == "itl_s" else done[name].to_numpy()
        out[name] = latency_stats(values)
    return out


def slice_summaries(
    requests_df: pd.DataFrame, by: str, duration_s: float, slo: dict | None = None
) -> dict[str, dict]:
    """{value as text: slice_summary} over the values of column `by` (`tenant`, `priority`),
    sorted; empty when the records lack the column (files older than it)."""
    if by not in requests_df or not len(requests_df):
        return {}
    keys = requests_df[by].map(str)
    return {
        key: slice_summary(requests_df[keys == key], duration_s, slo)
        for key in sorted(keys.unique(), key=_natural)
    }


def _natural(text: str):
    """Numbers by value (priority "10" after "2"), then other text."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


BRIEF_LATENCIES = ("ttft_s", "tpot_s", "e2e_s")


def _brief_slices(slices: dict[str, dict]) -> dict[str, dict]:
    """What summary.json keeps of each slice: counts, throughputs, service, P50/P99 latencies."""
    keep = ("num_requests", "num_finished", "output_throughput_tok_s",
            "request_throughput_req_s", "service_tokens")  # fmt: skip
    return {
        key: {
            **{k: s[k] for k in keep},
            **{n: {p: s[n][p] for p in ("p50", "p99")} for n in BRIEF_LATENCIES},
        }
        for key, s in slices.items()
    }


def utilisation(
    steps_df: pd.DataFrame,
    duration_s: float,
    num_gpu_blocks: int | None,
    max_num_batched_tokens: int | None,
) -> dict:
    """How busy the device was and how full the KV cache: `busy_share` (device time, or the
    cpu's compute time, over the makespan), `useful_token_share` (request tokens over all tokens
    computed, padding included), `kv_usage_mean` (weighted by step duration) and
    `kv_usage_peak` (fractions of the KV blocks), and steps over the token budget."""
    out = {"busy_share": None, "useful_token_share": None, "kv_usage_mean": None,
           "kv_usage_peak": None, "num_oversized_steps": 0}  # fmt: skip
    if not len(steps_df) or "num_prefill_tokens" not in steps_df:
        return out
    device = pd.to_numeric(steps_df.get("device_time_s", pd.Series(dtype=float)), errors="coerce")
    if duration_s > 0 and device.notna().any():
        out["busy_share"] = float(device.sum() / duration_s)
    useful = steps_df["num_prefill_tokens"] + steps_df["num_decode_tokens"]
    computed = float(useful.sum() + steps_df["num_padding_tokens"].sum())
    if computed > 0:
        out["useful_token_share"] = float(useful.sum()) / computed
    if num_gpu_blocks:
        usage = steps_df["num_kv_blocks_used"].to_numpy(np.float64) / num_gpu_blocks
        weights = steps_df["duration_s"].to_numpy(np.float64)
        mean = np.average(usage, weights=weights) if weights.sum() > 0 else usage.mean()
        out["kv_usage_mean"], out["kv_usage_peak"] = float(mean), float(usage.max())
    if max_num_batched_tokens is not None:
        out["num_oversized_steps"] = int((useful > max_num_batched_tokens).sum())
    return out


def prefix_cache_hit_rate(requests_df: pd.DataFrame) -> float | None:
    """Prompt tokens taken from the prefix cache at the requests' first admission over the
    prompt tokens of the requests admitted (0.0 with caching off; None when no request was
    admitted, or for records older than the `num_cached_tokens` column)."""
    if "num_cached_tokens" not in requests_df or not len(requests_df):
        return None
    admitted = requests_df[requests_df["first_scheduled_s"].notna()]
    prompt = int(admitted["prompt_tokens"].sum())
    return float(admitted["num_cached_tokens"].sum()) / prompt if prompt else None


def rejection_reasons(requests_df: pd.DataFrame) -> dict[str, int]:
    """Rejected requests counted by the kind of reason (the text before the first colon)."""
    if not len(requests_df):
        return {}
    reasons = requests_df.loc[requests_df["status"] == RequestStatus.REJECTED.value, "reason"]
    kinds = reasons.astype(str).str.split(":", n=1).str[0]
    return {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}
