"""What every workload shares: `load()` gives the final RequestTable, `build()` turns it into
RequestSpecs with prompt ids, and `stats` records what loading kept, clipped and dropped."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from workloads.errors import WorkloadError
from workloads.spec import RequestSpec
from workloads.table import RequestTable
from workloads.tokens import prompt_ids
from workloads.transforms import mean_rate

# Independent random streams, so e.g. changing the lengths leaves the arrivals as they were.
ARRIVALS, LENGTHS, SAMPLING, TOKENS = range(4)


@dataclass(frozen=True)
class LoadKnob:
    """The config key (under `workload.`) that sets a workload's load: its value is the mean
    arrival rate, in `unit`, that `harness.capacity` probes. `unset`: keys set to null in every
    probe because they would fight the knob (a trace's `time_scale` against `target_rate`);
    `what`: a few words saying what the rate is, for the search's first line."""

    key: str
    what: str
    unit: str = "req/s"
    unset: tuple[str, ...] = ()


class Workload(ABC):
    """A source of requests. Subclasses implement `load`; `stats` is filled by each load."""

    seed_offset: int = 0
    prefix_block_tokens: int = 512  # Mooncake's hash block size

    def __init__(self) -> None:
        self.stats: dict = {}

    @classmethod
    def load_knob(cls, cfg: Mapping) -> LoadKnob:
        """The knob that scales this workload's load, given its config node (`cfg`, plain
        data, before instantiation), for `harness.capacity`. A workload that declares none
        cannot be searched: the WorkloadError says so in one line. A new workload overrides
        this (the multi-turn sessions workload: its session arrival rate, `unit="sessions/s"`;
        the search then reports each probe's request rate beside it)."""
        raise WorkloadError(
            f"{cls.__module__}.{cls.__qualname__} declares no load knob "
            "(Workload.load_knob): the capacity search cannot scale its load"
        )

    def rng(self, seed: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([seed + self.seed_offset, stream])

    @abstractmethod
    def load(self, seed: int, max_model_len: int) -> RequestTable:
        """The requests as arrays, every transformation applied, times from 0, sorted."""

    def build(self, seed: int, vocab_size: int, max_model_len: int) -> list[RequestSpec]:
        """The requests with seeded prompt ids; ids r000000, r000001, ... in arrival order."""
        table = self.load(seed, max_model_len)
        ids = prompt_ids(
            table, vocab_size, seed + self.seed_offset, self.rng(seed, TOKENS),
            self.prefix_block_tokens,
        )  # fmt: skip
        tenants, priorities = table.attribute("tenants"), table.attribute("priorities")
        slo_classes = table.attribute("slo_classes")
        return [
            RequestSpec(
                request_id=f"r{i:06d}",
                arrival_s=float(table.arrival_s[i]),
                prompt_ids=ids[i],
                max_output_tokens=int(table.output_tokens[i]),
                tenant=str(tenants[i]),
                priority=int(priorities[i]),
                slo_class=None if slo_classes[i] is None else str(slo_classes[i]),
            )
            for i in range(len(table))
        ]

    def _record_totals(self, table: RequestTable) -> None:
        t = table.arrival_s
        self.stats["num_requests"] = len(table)
        self.stats["duration_s"] = float(t[-1] - t[0]) if len(t) else 0.0
        self.stats["mean_rate_req_s"] = mean_rate(t)
