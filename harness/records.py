"""The step record: one row of steps.parquet, the one schema every logger derives its columns
from (the local writer, W&B's per-step series, the report)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import pandas as pd


def _series(**kw):
    return field(metadata={"series": True}, **kw)


@dataclass(frozen=True)
class StepRecord:
    """One engine step as it was executed. Fields marked `series` are plotted per step."""

    step: int  # index, from 0
    start_s: float  # serving-clock time the step was scheduled
    duration_s: float = _series()  # its own time; pipelined: what it added to the wall time
    host_time_s: float = field(default=0.0)  # scheduling and batch preparation
    device_time_s: float | None = None  # forward + sampling (cuda events, cpu compute, or model)
    num_prefill_tokens: int = _series(default=0)  # prompt (and recompute) tokens computed
    num_decode_tokens: int = _series(default=0)  # one per decode row
    num_padding_tokens: int = _series(default=0)  # executed and discarded (static batching)
    num_scheduled_seqs: int = 0  # requests computing in the step
    num_running: int = _series(default=0)  # queue lengths after the step was launched
    num_waiting: int = _series(default=0)
    num_swapped: int = _series(default=0)
    num_kv_blocks_used: int = _series(default=0)  # GPU KV blocks held
    num_preempted: int = _series(default=0)  # preemptions applied before the step ran
    num_swapped_out_blocks: int = _series(default=0)
    num_swapped_in_blocks: int = _series(default=0)
    swap_time_s: float = 0.0  # time of the step's swap copies
    num_cached_tokens: int = _series(default=0)  # prefix-cache hits of the requests admitted
    num_evicted_blocks: int = _series(default=0)  # cached blocks reused for other contents


STEP_COLUMNS = tuple(f.name for f in fields(StepRecord))
STEP_SERIES = tuple(f.name for f in fields(StepRecord) if f.metadata.get("series"))


class Recorder:
    """Collects one step record per step; the engine calls `on_step_values` (or `on_step`) after
    every step. Rows are kept as plain tuples in `StepRecord`'s field order (`STEP_COLUMNS`):
    the frame is built from them at the end, a `StepRecord` only when `steps` is read."""

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def on_step(self, record: StepRecord) -> None:
        self._rows.append(tuple(getattr(record, c) for c in STEP_COLUMNS))

    def on_step_values(self, **values) -> None:
        """One step's values by `StepRecord` field name, all of them (a missing or unknown name
        fails); kept as a plain tuple in the field order: cheaper than a dataclass per step."""
        if len(values) != len(STEP_COLUMNS):
            raise TypeError(f"step values {sorted(values)} are not StepRecord's {STEP_COLUMNS}")
        self._rows.append(tuple([values[c] for c in STEP_COLUMNS]))

    def row_sink(self) -> Callable[[tuple], None]:
        """A function taking one step's values as a tuple in `STEP_COLUMNS` order (no check:
        the engine builds it in that order)."""
        return self._rows.append

    @property
    def steps(self) -> list[StepRecord]:
        return [StepRecord(*row) for row in self._rows]

    def steps_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows, columns=list(STEP_COLUMNS))


def step_sink(recorder) -> Callable[[tuple], None]:
    """How the engine records a step: a function taking the step's `StepRecord` values as one
    tuple in field order (`STEP_COLUMNS`). For a `Recorder`, its `row_sink`; for any other
    recorder, its `on_step_values` by field name."""
    if type(recorder) is Recorder:
        return recorder.row_sink()
    return lambda row: recorder.on_step_values(**dict(zip(STEP_COLUMNS, row, strict=True)))
