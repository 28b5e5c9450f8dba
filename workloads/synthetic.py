"""Synthetic workloads: gamma/Poisson arrivals (vLLM's burstiness) and simple length distributions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from harness.request import RequestSpec


def gamma_arrivals(n: int, rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s) with gamma inter-arrival gaps of mean 1/rate, as vLLM's benchmark.

    Shape = burstiness, so the coefficient of variation is 1/sqrt(burstiness): 1 is Poisson,
    below 1 is burstier (CV > 1), above 1 is more regular.
    """
    if rate <= 0 or burstiness <= 0:
        raise ValueError(
            f"workload.arrival: rate and burstiness must be > 0, got {rate}, {burstiness}"
        )
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    return np.cumsum(gaps) - gaps[0]  # the first request arrives at t=0


def sample_lengths(dist: Mapping, n: int, rng: np.random.Generator, key: str) -> np.ndarray:
    """Integer lengths >= 1 from `dist`: {kind: fixed, value} | {kind: uniform, min, max} |
    {kind: lognormal, mean, sigma, max}."""
    kind = dist.get("kind")
    if kind == "fixed":
        out = np.full(n, int(dist["value"]))
    elif kind == "uniform":
        out = rng.integers(int(dist["min"]), int(dist["max"]) + 1, size=n)
    elif kind == "lognormal":
        sigma = float(dist["sigma"])
        mu = np.log(float(dist["mean"])) - sigma**2 / 2  # so that the mean is `mean`
        out = np.rint(rng.lognormal(mu, sigma, size=n))
        if "max" in dist:
            out = np.minimum(out, int(dist["max"]))
    else:
        raise ValueError(f"{key}.kind={kind!r}: use fixed, uniform or lognormal")
    return np.maximum(out, 1).astype(np.int64)


class SyntheticWorkload:
    """`num_requests` requests with gamma arrivals and random prompt token ids (seeded)."""

    def __init__(
        self,
        num_requests: int,
        arrival: Mapping,
        prompt_len: Mapping,
        output_len: Mapping,
        seed_offset: int = 0,
    ) -> None:
        if num_requests < 1:
            raise ValueError(f"workload.num_requests must be >= 1, got {num_requests}")
        self.num_requests = num_requests
        self.arrival, self.prompt_len, self.output_len = arrival, prompt_len, output_len
        self.seed_offset = seed_offset

    def build(self, seed: int, vocab_size: int, max_model_len: int) -> list[RequestSpec]:
        rng = np.random.default_rng(seed + self.seed_offset)
        n = self.num_requests
        arrivals = gamma_arrivals(
            n, float(self.arrival["rate"]), float(self.arrival.get("burstiness", 1.0)), rng
        )
        prompt_lens = sample_lengths(self.prompt_len, n, rng, "workload.prompt_len")
        output_lens = sample_lengths(self.output_len, n, rng, "workload.output_len")
        return [
            RequestSpec(
                request_id=f"r{i:06d}",
                arrival_s=float(arrivals[i]),
                prompt_ids=tuple(rng.integers(0, vocab_size, size=int(prompt_lens[i])).tolist()),
                max_output_tokens=int(output_lens[i]),
            )
            for i in range(n)
        ]
