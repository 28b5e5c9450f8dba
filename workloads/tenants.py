"""Several tenants in one workload: each a synthetic workload of its own (arrival process,
length distributions, priority, SLO class), merged in arrival order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from workloads.base import ARRIVALS, LENGTHS, LoadKnob, Workload
from workloads.errors import WorkloadError
from workloads.synthetic import SyntheticWorkload
from workloads.table import RequestTable
from workloads.transforms import check_clip_mode, clip, rescale

TENANT_KEYS = {"name", "num_requests", "arrival", "prompt_len", "output_len"}
TENANT_KEYS |= {"priority", "slo_class"}


class MultiTenantWorkload(Workload):
    """`tenants`: a list of {name, num_requests, arrival, prompt_len, output_len, priority: 0,
    slo_class: null}, each keyed as in `SyntheticWorkload`. Every tenant starts at t=0; its
    random streams depend on the seed and its position in the list only, so changing one
    tenant leaves the others' requests as they were. `target_rate` (req/s): the merged arrival
    times are rescaled to this mean rate (first to last arrival), which scales every tenant's
    rate by the same factor: their ratio and the shape of each process are kept."""

    def __init__(
        self,
        tenants: Sequence[Mapping],
        clip: str = "truncate",
        seed_offset: int = 0,
        target_rate: float | None = None,
    ) -> None:
        super().__init__()
        if target_rate is not None and not target_rate > 0:
            raise WorkloadError(f"workload.target_rate={target_rate} must be > 0")
        self.target_rate = target_rate
        if isinstance(tenants, (str, Mapping)) or not tenants:
            raise WorkloadError("workload.tenants must be a non-empty list of tenants")
        self.tenants = [_tenant(spec, f"workload.tenants[{i}]") for i, spec in enumerate(tenants)]
        names = [t.tenant for t in self.tenants]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise WorkloadError(f"workload.tenants[{i}].name={name!r} is used twice")
        check_clip_mode(clip)
        self.clip, self.seed_offset = clip, seed_offset

    @classmethod
    def load_knob(cls, cfg: Mapping) -> LoadKnob:
        """`target_rate`: every tenant's rate scaled by one factor, their ratio kept."""
        return LoadKnob("target_rate", "the mean rate of all tenants together, ratio kept")

    def load(self, seed: int, max_model_len: int) -> RequestTable:
        base = seed + self.seed_offset
        parts = [
            tenant.sample(
                np.random.default_rng([base, ARRIVALS, i + 1]),
                np.random.default_rng([base, LENGTHS, i + 1]),
            )
            for i, tenant in enumerate(self.tenants)
        ]
        table = RequestTable.concat(parts)
        table = table.take(np.argsort(table.arrival_s, kind="stable"))  # ties: list order
        self.stats = {"source": "synthetic", "tenants": [t.tenant for t in self.tenants]}
        if self.target_rate is not None:
            table.arrival_s, self.stats["time_scale"] = rescale(
                table.arrival_s, None, self.target_rate
            )
        table = clip(table, max_model_len, self.clip, self.stats)
        self._record_totals(table)
        return table


def _tenant(spec: Mapping, key: str) -> SyntheticWorkload:
    if not isinstance(spec, Mapping):
        raise WorkloadError(f"{key} must be a mapping of {sorted(TENANT_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - TENANT_KEYS)
    if unknown:
        raise WorkloadError(f"{key}.{unknown[0]}: unknown key (use {sorted(TENANT_KEYS)})")
    for required in ("name", "num_requests", "arrival", "prompt_len", "output_len"):
        if required not in spec:
            raise WorkloadError(f"{key}.{required} is required")
    args = {k: v for k, v in spec.items() if k != "name"}
    return SyntheticWorkload(**args, tenant=spec["name"], key=key)
