"""Synthetic workloads: an arrival process and two length distributions, random prompt ids;
every request carries the workload's tenant, priority and SLO class."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from workloads.arrivals import sample_arrivals
from workloads.base import ARRIVALS, LENGTHS, LoadKnob, Workload
from workloads.errors import WorkloadError
from workloads.lengths import sample_lengths
from workloads.table import RequestTable
from workloads.transforms import check_clip_mode, clip


class SyntheticWorkload(Workload):
    """`num_requests` requests; `arrival` as in `workloads.arrivals.sample_arrivals` (without
    `process`, {rate, burstiness} is vLLM's gamma), lengths as in `workloads.lengths`."""

    def __init__(
        self,
        num_requests: int,
        arrival: Mapping,
        prompt_len: Mapping,
        output_len: Mapping,
        seed_offset: int = 0,
        clip: str = "truncate",
        tenant: str = "default",
        priority: int = 0,
        slo_class: str | None = None,
        key: str = "workload",  # the key errors name (MultiTenantWorkload: workload.tenants[i])
    ) -> None:
        super().__init__()
        if isinstance(num_requests, bool) or not isinstance(num_requests, int):
            raise WorkloadError(f"{key}.num_requests must be an integer, got {num_requests!r}")
        if num_requests < 1:
            raise WorkloadError(f"{key}.num_requests must be >= 1, got {num_requests}")
        check_attributes(tenant, priority, slo_class, key)
        self.num_requests, self.key = num_requests, key
        self.arrival, self.prompt_len, self.output_len = arrival, prompt_len, output_len
        self.tenant, self.priority, self.slo_class = tenant, priority, slo_class
        check_clip_mode(clip)
        self.seed_offset, self.clip = seed_offset, clip

    @classmethod
    def load_knob(cls, cfg: Mapping) -> LoadKnob:
        """`arrival.rate`, for the Poisson and gamma processes (the rate of the process, not
        the realised mean of one draw). On/off and ramp arrivals have no single rate."""
        arrival = cfg.get("arrival") or {}
        process = arrival.get("process", "gamma") if isinstance(arrival, Mapping) else None
        if process not in ("poisson", "gamma"):
            raise WorkloadError(
                f"workload.arrival.process={process}: no single rate for the capacity search to "
                "scale (poisson and gamma arrivals have workload.arrival.rate)"
            )
        return LoadKnob("arrival.rate", f"the {process} arrival rate")

    def sample(self, arrivals_rng: np.random.Generator, lengths_rng: np.random.Generator):
        """The requests as a RequestTable, before clipping, from these random streams."""
        n, key = self.num_requests, self.key
        return RequestTable(
            arrival_s=sample_arrivals(self.arrival, n, arrivals_rng, f"{key}.arrival"),
            prompt_tokens=sample_lengths(self.prompt_len, n, lengths_rng, f"{key}.prompt_len"),
            output_tokens=sample_lengths(self.output_len, n, lengths_rng, f"{key}.output_len"),
            tenants=np.full(n, self.tenant),
            priorities=np.full(n, self.priority, dtype=np.int64),
            slo_classes=np.full(n, self.slo_class, dtype=object),
        )

    def load(self, seed: int, max_model_len: int) -> RequestTable:
        table = self.sample(self.rng(seed, ARRIVALS), self.rng(seed, LENGTHS))
        self.stats = {"source": "synthetic"}
        table = clip(table, max_model_len, self.clip, self.stats)
        self._record_totals(table)
        return table


def check_attributes(tenant, priority, slo_class, key: str = "workload") -> None:
    """A tenant is a non-empty string, a priority an integer, an SLO class a string or None."""
    if not isinstance(tenant, str) or not tenant:
        raise WorkloadError(f"{key}.tenant must be a non-empty string, got {tenant!r}")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise WorkloadError(f"{key}.priority must be an integer, got {priority!r}")
    if slo_class is not None and not isinstance(slo_class, str):
        raise WorkloadError(f"{key}.slo_class must be a string or null, got {slo_class!r}")
