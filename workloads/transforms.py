"""Transformations of a RequestTable, applied in a fixed order by the workloads:
time window -> thinning -> random subset -> first N -> time scale / target rate -> clipping."""

from __future__ import annotations

import numpy as np

from workloads.errors import WorkloadError
from workloads.table import RequestTable

CLIP_MODES = ("truncate", "drop", "none")


def in_window(arrival_s: np.ndarray, start_s: float, duration_s: float | None) -> np.ndarray:
    """Mask of arrivals in [start_s, start_s + duration_s) (no end when duration_s is None)."""
    mask = arrival_s >= start_s
    if duration_s is not None:
        mask &= arrival_s < start_s + duration_s
    return mask


def thin(table: RequestTable, fraction: float, rng: np.random.Generator) -> RequestTable:
    """Keep each request with probability `fraction` (the process keeps its shape, rate * fraction)."""
    return table.take(rng.random(len(table)) < fraction)


def random_subset(table: RequestTable, n: int, rng: np.random.Generator) -> RequestTable:
    """`n` requests chosen uniformly without replacement, kept in their original order."""
    if n >= len(table):
        return table
    return table.take(np.sort(rng.choice(len(table), size=n, replace=False)))


def mean_rate(arrival_s: np.ndarray) -> float | None:
    """Requests per second between the first and the last arrival (None if undefined)."""
    if len(arrival_s) < 2 or arrival_s[-1] <= arrival_s[0]:
        return None
    return (len(arrival_s) - 1) / float(arrival_s[-1] - arrival_s[0])


def rescale(
    arrival_s: np.ndarray, time_scale: float | None, target_rate: float | None
) -> tuple[np.ndarray, float]:
    """Arrivals multiplied by `time_scale`, or scaled to a mean rate of `target_rate` req/s."""
    if time_scale is not None and target_rate is not None:
        raise WorkloadError("set workload.time_scale or workload.target_rate, not both")
    factor = 1.0 if time_scale is None else float(time_scale)
    if target_rate is not None:
        rate = mean_rate(arrival_s)
        if rate is None:
            raise WorkloadError(
                "workload.target_rate needs at least two requests at different times"
            )
        factor = rate / float(target_rate)
    return arrival_s * factor, factor


def check_clip_mode(mode: str) -> None:
    if mode not in CLIP_MODES:
        raise WorkloadError(f"workload.clip={mode!r}: use one of {', '.join(CLIP_MODES)}")


def clip(table: RequestTable, max_model_len: int, mode: str, stats: dict) -> RequestTable:
    """Fit each request in `max_model_len` (prompt + output tokens) by `mode`:
    truncate (shorten the prompt, then the output), drop, or none (left for the engine to
    reject). Requests with an empty prompt are dropped. Counts go into `stats`."""
    check_clip_mode(mode)
    empty = table.prompt_tokens < 1
    stats["num_dropped_empty_prompt"] = int(empty.sum())
    if empty.any():
        table = table.take(~empty)
    too_long = table.prompt_tokens + table.output_tokens > max_model_len
    stats["num_too_long"] = int(too_long.sum())
    stats["num_clipped"] = stats["num_dropped"] = 0
    if mode == "drop" and too_long.any():
        stats["num_dropped"] = int(too_long.sum())
        return table.take(~too_long)
    if mode == "truncate" and too_long.any():
        output = np.minimum(table.output_tokens, max_model_len - 1)
        prompt = np.minimum(table.prompt_tokens, max_model_len - output)
        stats["num_clipped"] = int(too_long.sum())
        table.prompt_tokens, table.output_tokens = prompt, np.maximum(output, 1)
    return table
