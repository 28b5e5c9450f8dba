"""Azure LLM inference traces, 2023 and 2024: `TIMESTAMP,ContextTokens,GeneratedTokens`.

Timestamps are ISO dates with fractional seconds of any precision and, in some files, a zone
offset (`+00:00`); times are returned in seconds since the file's first row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workloads.errors import WorkloadError
from workloads.readers.csv_common import (
    SortCheck,
    attribute_columns,
    attribute_types,
    check_count,
    counts,
    csv_batches,
    line_of_row,
    raise_first_bad_row,
    read_header,
    require_columns,
)
from workloads.table import RequestTable

COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d{1,9})?")
_ZONE = re.compile(r"(Z|[+-]\d\d:?\d\d)")


def _time_check(zoned: bool):
    def check(text: str) -> str | None:
        s = text.strip()
        m = _TIME.match(s)
        rest = s[m.end() :] if m else ""
        if not m or (rest and not _ZONE.fullmatch(rest)):
            return f"not a timestamp like 2023-11-16 18:15:46.6805900: {text!r}"
        if bool(rest) != zoned:
            return f"zone offset {'missing' if zoned else 'unexpected'} (the first row's differs): {text!r}"
        return None

    return check


def read_azure(
    path: Path, allow_unsorted: bool = False, stats: dict | None = None
) -> Iterator[RequestTable]:
    """Yield chunks of the trace; times are seconds since the first row."""
    header = read_header(path)
    require_columns(path, header, COLUMNS)
    types = {"TIMESTAMP": pa.string(), "ContextTokens": pa.int64(), "GeneratedTokens": pa.int64()}
    attr_types, attr_checks = attribute_types(header)
    zoned, t0_ns = None, None
    sort_check = SortCheck(path, "TIMESTAMP", allow_unsorted)
    checks = {
        "TIMESTAMP": _time_check(False),
        "ContextTokens": check_count,
        "GeneratedTokens": check_count,
        **attr_checks,
    }
    for start, cols in csv_batches(path, types | attr_types, checks):
        stamps = cols["TIMESTAMP"]
        if zoned is None:
            zoned = bool(_ZONE.search(stamps[0].as_py().strip()[19:]))
            checks["TIMESTAMP"] = _time_check(zoned)
        try:
            ns = pc.cast(
                pc.utf8_trim_whitespace(stamps), pa.timestamp("ns", "UTC" if zoned else None)
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise_first_bad_row(path, {"TIMESTAMP": checks["TIMESTAMP"]}, start, str(exc))
        ns = ns.cast(pa.int64()).to_numpy(zero_copy_only=False)
        if t0_ns is None:
            t0_ns = int(ns[0])
        times = (ns - t0_ns).astype(np.float64) * 1e-9
        sort_check(times, start, lambda i: line_of_row(path, i))
        if stats is not None:
            stats["num_rows"] = stats.get("num_rows", 0) + len(times)
        yield RequestTable(
            arrival_s=times,
            prompt_tokens=counts(cols["ContextTokens"]),
            output_tokens=counts(cols["GeneratedTokens"]),
            **attribute_columns(path, cols, start),
        )
    if zoned is None:
        raise WorkloadError("empty trace", path)
