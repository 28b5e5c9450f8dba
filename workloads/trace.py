"""Trace replay: any supported trace file, read in chunks, transformed, clipped to the model.

Order of the transformations: time window -> `sample_fraction` (thinning) -> `sample_requests`
(random subset) -> `max_requests` (the first N) -> `time_scale` / `target_rate` -> clipping.
With sorted times and no `sample_requests`, reading stops once the window or N is filled, so
a small replay of a huge trace reads only the head of the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from workloads.arrivals import sample_arrivals
from workloads.base import ARRIVALS, SAMPLING, LoadKnob, Workload
from workloads.errors import WorkloadError
from workloads.readers import read_trace, resolve_path
from workloads.table import RequestTable
from workloads.transforms import check_clip_mode, clip, in_window, random_subset, rescale, thin


class TraceWorkload(Workload):
    """Requests of the trace at `path` (`format`: auto, azure, mooncake, burstgpt or vidur).

    `arrival` (a synthetic process, see `workloads.arrivals`) replaces the trace's times; a
    length-only trace needs it. `sort`: sort unsorted times with a warning instead of failing.
    `models`, `log_types`, `failed` (drop|keep): BurstGPT's filters and failed requests.
    """

    def __init__(
        self,
        path: str,
        format: str = "auto",
        arrival: Mapping | None = None,
        start_s: float = 0.0,
        duration_s: float | None = None,
        sample_fraction: float | None = None,
        sample_requests: int | None = None,
        max_requests: int | None = None,
        time_scale: float | None = None,
        target_rate: float | None = None,
        clip: str = "truncate",
        sort: bool = False,
        models: Sequence[str] | None = None,
        log_types: Sequence[str] | None = None,
        failed: str = "drop",
        prefix_block_tokens: int = 512,
        seed_offset: int = 0,
    ) -> None:
        super().__init__()
        _check_positive("duration_s", duration_s)
        _check_positive("time_scale", time_scale)
        _check_positive("target_rate", target_rate)
        _check_positive("prefix_block_tokens", prefix_block_tokens)
        for key, n in (("sample_requests", sample_requests), ("max_requests", max_requests)):
            if n is not None and n < 1:
                raise WorkloadError(f"workload.{key}={n} must be >= 1")
        if sample_fraction is not None and not 0 < sample_fraction <= 1:
            raise WorkloadError(f"workload.sample_fraction={sample_fraction} must be in (0, 1]")
        if start_s < 0:
            raise WorkloadError(f"workload.start_s={start_s} must be >= 0")
        if time_scale is not None and target_rate is not None:
            raise WorkloadError("set workload.time_scale or workload.target_rate, not both")
        self.path, self.format, self.arrival = path, format, arrival
        self.start_s, self.duration_s = float(start_s), duration_s
        self.sample_fraction, self.sample_requests = sample_fraction, sample_requests
        self.max_requests, self.time_scale, self.target_rate = max_requests, time_scale, target_rate
        check_clip_mode(clip)
        self.clip, self.sort = clip, sort
        self.reader_options = {"models": models, "log_types": log_types, "failed": failed}
        self.prefix_block_tokens, self.seed_offset = prefix_block_tokens, seed_offset

    @classmethod
    def load_knob(cls, cfg: Mapping) -> LoadKnob:
        """`target_rate`: the selected requests' mean rate (first to last arrival), whatever
        the window, sampling or `arrival` process chose; `time_scale` is then left unset."""
        return LoadKnob(
            "target_rate", "the selected requests' mean rate, their times rescaled",
            unset=("time_scale",),
        )  # fmt: skip

    def load(self, seed: int, max_model_len: int) -> RequestTable:
        path = resolve_path(self.path)
        self.stats = stats = {"source": str(path)}
        chunks = read_trace(path, self.format, self.sort, stats, **self.reader_options)
        if self.sort:
            chunks = [_sorted(RequestTable.concat(list(chunks)), path)]
        sampling = self.rng(seed, SAMPLING)
        table = self._select(chunks, sampling)
        if self.sample_requests is not None:
            table = random_subset(table, self.sample_requests, sampling)
        if self.max_requests is not None:
            table = table.head(self.max_requests)
        if self.arrival is not None:
            table.arrival_s = sample_arrivals(self.arrival, len(table), self.rng(seed, ARRIVALS))
            if self.start_s or self.duration_s is not None:
                table = table.take(in_window(table.arrival_s, self.start_s, self.duration_s))
        elif table.arrival_s is None:
            raise WorkloadError(
                f"the trace has lengths but no arrival times ({stats['format']}); set "
                "workload.arrival, e.g. {process: poisson, rate: 4}",
                path,
            )
        stats["num_selected"] = len(table)
        if len(table) == 0:
            raise WorkloadError("no request left after the window and sampling", path)
        table.arrival_s = table.arrival_s - table.arrival_s[0]
        table.arrival_s, stats["time_scale"] = rescale(
            table.arrival_s, self.time_scale, self.target_rate
        )
        table = clip(table, max_model_len, self.clip, stats)
        self._record_totals(table)
        return table

    def _select(self, chunks, rng: np.random.Generator) -> RequestTable:
        """Window and thinning chunk by chunk; stop early once the window or N is full."""
        window = self.arrival is None and (self.start_s > 0 or self.duration_s is not None)
        enough = self.max_requests if self.sample_requests is None else None
        kept, num_kept = [], 0
        for chunk in chunks:
            past_end = False
            if window and chunk.arrival_s is not None:
                mask = in_window(chunk.arrival_s, self.start_s, self.duration_s)
                if self.duration_s is not None:
                    past_end = bool((chunk.arrival_s >= self.start_s + self.duration_s).any())
                chunk = chunk.take(mask)
            if self.sample_fraction is not None:
                chunk = thin(chunk, self.sample_fraction, rng)
            kept.append(chunk)
            num_kept += len(chunk)
            if past_end or (enough is not None and num_kept >= enough):
                break
        if hasattr(chunks, "close"):
            chunks.close()
        return RequestTable.concat(kept)


def _sorted(table: RequestTable, path) -> RequestTable:
    if table.arrival_s is None or len(table) == 0:
        return table
    if (np.diff(table.arrival_s) < 0).any():
        warnings.warn(f"{path}: timestamps are not sorted; sorting them", stacklevel=3)
        table = table.take(np.argsort(table.arrival_s, kind="stable"))
    table.arrival_s = table.arrival_s - table.arrival_s[0]
    return table


def _check_positive(key: str, value) -> None:
    if value is not None and not value > 0:
        raise WorkloadError(f"workload.{key}={value} must be > 0")
