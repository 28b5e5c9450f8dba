"""BurstGPT CSV: `Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,
Total tokens,Log Type`, times in seconds. Filters by model and log type; a failed request (0
response tokens) is dropped or kept with one output token, and counted either way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workloads.errors import WorkloadError
from workloads.readers.csv_common import (
    SortCheck,
    attribute_columns,
    attribute_types,
    check_any,
    check_count,
    check_seconds,
    counts,
    csv_batches,
    line_of_row,
    read_header,
    require_columns,
)
from workloads.table import RequestTable

COLUMNS = ["Timestamp", "Model", "Request tokens", "Response tokens", "Log Type"]


def read_burstgpt(
    path: Path,
    allow_unsorted: bool = False,
    stats: dict | None = None,
    models: Sequence[str] | None = None,
    log_types: Sequence[str] | None = None,
    failed: str = "drop",
) -> Iterator[RequestTable]:
    """Yield chunks of the rows that pass the filters; times are seconds since the first row."""
    if failed not in ("drop", "keep"):
        raise WorkloadError(f"workload.failed={failed!r}: use drop or keep")
    header = read_header(path)
    require_columns(path, header, COLUMNS)
    attr_types, attr_checks = attribute_types(header)
    types = {
        "Timestamp": pa.float64(), "Model": pa.string(), "Request tokens": pa.int64(),
        "Response tokens": pa.int64(), "Log Type": pa.string(),
    }  # fmt: skip
    checks = {
        "Timestamp": check_seconds, "Request tokens": check_count,
        "Response tokens": check_count, "Model": check_any, "Log Type": check_any, **attr_checks,
    }  # fmt: skip
    stats = stats if stats is not None else {}
    for key in ("num_rows", "num_filtered_out", "num_failed"):
        stats.setdefault(key, 0)
    stats["failed_requests"] = failed
    sort_check = SortCheck(path, "Timestamp", allow_unsorted)
    t0 = None
    for start, cols in csv_batches(path, types | attr_types, checks):
        times = cols["Timestamp"].to_numpy(zero_copy_only=False)
        t0 = times[0] if t0 is None else t0
        sort_check(times, start, lambda i: line_of_row(path, i))
        keep = np.ones(len(times), dtype=bool)
        if models:
            keep &= pc.is_in(cols["Model"], pa.array(list(models))).to_numpy(zero_copy_only=False)
        if log_types:
            keep &= pc.is_in(cols["Log Type"], pa.array(list(log_types))).to_numpy(
                zero_copy_only=False
            )
        outputs = counts(cols["Response tokens"])
        is_failed = keep & (outputs == 0)
        stats["num_rows"] += len(times)
        stats["num_filtered_out"] += int((~keep).sum())
        stats["num_failed"] += int(is_failed.sum())
        if failed == "drop":
            keep &= ~is_failed
        index = np.flatnonzero(keep)
        attributes = {"tenants": cols["Model"].to_numpy(zero_copy_only=False).astype(str)}
        attributes |= attribute_columns(path, cols, start)  # a `tenant` column wins over Model
        yield RequestTable(
            arrival_s=times[index] - t0,
            prompt_tokens=counts(cols["Request tokens"])[index],
            output_tokens=np.maximum(outputs[index], 1),  # a kept failure still answers a token
            **{name: column[index] for name, column in attributes.items()},
        )
