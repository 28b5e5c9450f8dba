"""Vidur / Sarathi-Serve CSVs: `num_prefill_tokens,num_decode_tokens` and, when present,
`arrived_at` (seconds). Without `arrived_at` the trace is length-only: the workload supplies a
synthetic arrival process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from workloads.readers.csv_common import (
    SortCheck,
    attribute_columns,
    attribute_types,
    check_count,
    check_seconds,
    counts,
    csv_batches,
    line_of_row,
    read_header,
    require_columns,
)
from workloads.table import RequestTable

COLUMNS = ["num_prefill_tokens", "num_decode_tokens"]


def read_vidur(
    path: Path, allow_unsorted: bool = False, stats: dict | None = None
) -> Iterator[RequestTable]:
    """Yield chunks; `arrival_s` is seconds since the first row, or None without `arrived_at`."""
    header = read_header(path)
    require_columns(path, header, COLUMNS)
    timed = "arrived_at" in header
    types = {"num_prefill_tokens": pa.int64(), "num_decode_tokens": pa.int64()}
    checks = {"num_prefill_tokens": check_count, "num_decode_tokens": check_count}
    if timed:
        types["arrived_at"], checks["arrived_at"] = pa.float64(), check_seconds
    attr_types, attr_checks = attribute_types(header)
    types, checks = types | attr_types, checks | attr_checks
    sort_check = SortCheck(path, "arrived_at", allow_unsorted)
    t0 = None
    for start, cols in csv_batches(path, types, checks):
        times = None
        if timed:
            times = cols["arrived_at"].to_numpy(zero_copy_only=False)
            t0 = times[0] if t0 is None else t0
            sort_check(times, start, lambda i: line_of_row(path, i))
            times = times - t0
        if stats is not None:
            stats["num_rows"] = stats.get("num_rows", 0) + len(cols["num_prefill_tokens"])
        yield RequestTable(
            arrival_s=times,
            prompt_tokens=counts(cols["num_prefill_tokens"]),
            output_tokens=counts(cols["num_decode_tokens"]),
            **attribute_columns(path, cols, start),
        )
