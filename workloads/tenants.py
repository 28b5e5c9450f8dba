"""Several tenants in one workload: each a synthetic workload of its own (arrival process,
length distributions, priority, SLO class), merged in arrival order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from workloads.base import ARRIVALS, LENGTHS, Workload
from workloads.errors import WorkloadError
from workloads.synthetic import SyntheticWorkload
from workloads.table import RequestTable
from workloads.transforms import check_clip_mode, clip

TENANT_KEYS = {"name", "num_requests", "arrival", "prompt_len", "output_len"}
TENANT_KEYS |= {"priority", "slo_class"}


class MultiTenantWorkload(Workload):
    """`tenants`: a list of {name, num_requests, arrival, prompt_len, output_len, priority: 0,
    slo_class: null}, each keyed as in `SyntheticWorkload`. Every tenant starts at t=0; its
    random streams depend on the seed and its position in the list only, so changing one
    tenant leaves the others' requests as they were."""

    def __init__(
        self, tenants: Sequence[Mapping], clip: str = "truncate", seed_offset: int = 0
    ) -> None:
        super().__init__()
        if isinstance(tenants, (str, Mapping)) or not tenants:
            raise WorkloadError("workload.tenants must be a non-empty list of tenants")
        self.tenants = [_tenant(spec, f"workload.tenants[{i}]") for i, spec in enumerate(tenants)]
        names = [t.tenant for t in self.tenants]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise WorkloadError(f"workload.tenants[{i}].name={name!r} is used twice")
        check_clip_mode(clip)
        self.clip, self.seed_offset = clip, seed_offset

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
