"""Synthetic workloads: an arrival process and two length distributions, random prompt ids."""

from __future__ import annotations

from collections.abc import Mapping

from workloads.arrivals import sample_arrivals
from workloads.base import ARRIVALS, LENGTHS, Workload
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
    ) -> None:
        super().__init__()
        if num_requests < 1:
            raise WorkloadError(f"workload.num_requests must be >= 1, got {num_requests}")
        self.num_requests = num_requests
        self.arrival, self.prompt_len, self.output_len = arrival, prompt_len, output_len
        check_clip_mode(clip)
        self.seed_offset, self.clip = seed_offset, clip

    def load(self, seed: int, max_model_len: int) -> RequestTable:
        n = self.num_requests
        lengths_rng = self.rng(seed, LENGTHS)
        table = RequestTable(
            arrival_s=sample_arrivals(self.arrival, n, self.rng(seed, ARRIVALS)),
            prompt_tokens=sample_lengths(self.prompt_len, n, lengths_rng, "workload.prompt_len"),
            output_tokens=sample_lengths(self.output_len, n, lengths_rng, "workload.output_len"),
        )
        self.stats = {"source": "synthetic"}
        table = clip(table, max_model_len, self.clip, self.stats)
        self._record_totals(table)
        return table
