"""Synthetic arrival processes: Poisson, gamma (vLLM's burstiness), on/off bursts, linear ramp.

Each returns `n` sorted arrival times in seconds with the first request at t=0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from workloads.errors import WorkloadError

_KEYS = {
    "poisson": {"rate"},
    "gamma": {"rate", "burstiness"},
    "onoff": {"burst_rate", "idle_rate", "mean_burst_s", "mean_idle_s"},
    "ramp": {"start_rate", "end_rate", "duration_s"},
}


def sample_arrivals(
    spec: Mapping, n: int, rng: np.random.Generator, key: str = "workload.arrival"
) -> np.ndarray:
    """`n` arrivals from `spec`: {process: poisson|gamma|onoff|ramp, ...its parameters}.

    Without `process`, {rate, burstiness} means gamma (the original synthetic keys).
    """
    spec = dict(spec)
    process = spec.pop("process", "gamma")
    if process not in _KEYS:
        raise WorkloadError(f"{key}.process={process!r}: use one of {sorted(_KEYS)}")
    unknown = set(spec) - _KEYS[process]
    if unknown:
        raise WorkloadError(
            f"{key}.{sorted(unknown)[0]}: not a parameter of {process} "
            f"(it takes {sorted(_KEYS[process])})"
        )
    try:
        params = {k: float(v) for k, v in spec.items()}
    except (TypeError, ValueError) as exc:
        raise WorkloadError(f"{key}: {exc}") from None
    if n == 0:
        return np.zeros(0)
    if process == "poisson":
        return gamma_arrivals(n, _get(params, "rate", key), 1.0, rng, key)
    if process == "gamma":
        burstiness = params.get("burstiness", 1.0)
        return gamma_arrivals(n, _get(params, "rate", key), burstiness, rng, key)
    if process == "onoff":
        return onoff_arrivals(n, rng=rng, key=key, **params)
    return ramp_arrivals(n, rng=rng, key=key, **params)


def _get(params: dict, name: str, key: str) -> float:
    if name not in params:
        raise WorkloadError(f"{key}.{name} is required")
    return params[name]


def gamma_arrivals(
    n: int, rate: float, burstiness: float, rng: np.random.Generator, key: str = "workload.arrival"
) -> np.ndarray:
    """Gamma inter-arrival gaps of mean 1/rate and shape `burstiness`, as vLLM's benchmark.

    The coefficient of variation is 1/sqrt(burstiness): 1 is Poisson, below 1 burstier.
    """
    if rate <= 0 or burstiness <= 0:
        raise WorkloadError(f"{key}: rate and burstiness must be > 0, got {rate}, {burstiness}")
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    return np.cumsum(gaps) - gaps[0]


def onoff_arrivals(
    n: int,
    burst_rate: float,
    mean_burst_s: float,
    mean_idle_s: float,
    rng: np.random.Generator,
    idle_rate: float = 0.0,
    key: str = "workload.arrival",
) -> np.ndarray:
    """A two-state Markov-modulated Poisson process: exponential periods of mean `mean_burst_s`
    at `burst_rate` alternate with periods of mean `mean_idle_s` at `idle_rate`; starts bursting.

    Mean rate = (burst_rate * mean_burst_s + idle_rate * mean_idle_s) / (mean_burst_s + mean_idle_s).
    """
    if burst_rate <= 0 or idle_rate < 0 or mean_burst_s <= 0 or mean_idle_s <= 0:
        raise WorkloadError(
            f"{key}: need burst_rate > 0, idle_rate >= 0, mean_burst_s > 0, mean_idle_s > 0"
        )
    parts, count, t, bursting = [], 0, 0.0, True
    while count < n:
        length = rng.exponential(mean_burst_s if bursting else mean_idle_s)
        k = rng.poisson((burst_rate if bursting else idle_rate) * length)
        parts.append(t + np.sort(rng.uniform(0.0, length, size=k)))
        count, t, bursting = count + k, t + length, not bursting
    times = np.concatenate(parts)[:n]
    return times - times[0]


def ramp_arrivals(
    n: int,
    start_rate: float,
    end_rate: float,
    duration_s: float,
    rng: np.random.Generator,
    key: str = "workload.arrival",
) -> np.ndarray:
    """A Poisson process whose rate goes linearly from `start_rate` to `end_rate` over
    `duration_s`, then stays at `end_rate` (inverting the cumulative rate of unit-rate arrivals)."""
    if start_rate < 0 or end_rate < 0 or duration_s <= 0 or start_rate + end_rate == 0:
        raise WorkloadError(f"{key}: need rates >= 0 (not both 0) and duration_s > 0")
    work = np.cumsum(rng.exponential(1.0, size=n))  # cumulative intensity of each arrival
    a = (end_rate - start_rate) / (2 * duration_s)
    in_ramp = (start_rate + end_rate) * duration_s / 2  # intensity spent by the ramp's end
    if end_rate == 0 and work[-1] > in_ramp:
        raise WorkloadError(
            f"{key}: {n} requests do not fit in a ramp down to 0 req/s; lengthen duration_s"
        )
    inside = work <= in_ramp
    times = np.empty(n)
    w = work[inside]
    times[inside] = 2 * w / (start_rate + np.sqrt(np.maximum(start_rate**2 + 4 * a * w, 0.0)))
    if end_rate > 0:
        times[~inside] = duration_s + (work[~inside] - in_ramp) / end_rate
    return times - times[0]
