"""Mooncake JSONL: `timestamp` (ms), `input_length`, `output_length`, `hash_ids` (one id per
512-token prefix block; requests with equal ids share that block of prompt tokens), and the
optional `tenant` (string), `priority` (integer) and `slo_class` (string or null)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from workloads.errors import WorkloadError
from workloads.table import RequestTable

FIELDS = ["timestamp", "input_length", "output_length", "hash_ids"]
# Optional field -> (RequestTable column, the value of a row without it).
ATTRIBUTE_FIELDS = {
    "tenant": ("tenants", "default"),
    "priority": ("priorities", 0),
    "slo_class": ("slo_classes", None),
}
CHUNK_ROWS = 100_000


def read_mooncake(
    path: Path, allow_unsorted: bool = False, stats: dict | None = None
) -> Iterator[RequestTable]:
    """Yield chunks; times are seconds since the first row."""
    rows: list[tuple[float, int, int, np.ndarray, dict]] = []
    t0, last, num_rows = None, -math.inf, 0
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            t, p, o, h, attributes = _parse(path, line_no, text)
            t0 = t if t0 is None else t0
            if t < last and not allow_unsorted:
                raise WorkloadError(
                    "timestamps are not sorted (this row is earlier than the one before); "
                    "set workload.sort=true to sort them",
                    path, line=line_no, column="timestamp",
                )  # fmt: skip
            last = max(last, t)
            rows.append((t - t0, p, o, h, attributes))
            num_rows += 1
            if len(rows) == CHUNK_ROWS:
                yield _table(rows, stats)
                rows = []
    if rows:
        yield _table(rows, stats)
    if num_rows == 0:
        raise WorkloadError("empty trace: no rows", path, line=1)


def _parse(path: Path, line_no: int, text: str) -> tuple[float, int, int, np.ndarray, dict]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkloadError(
            f"not JSON: {exc.msg} at character {exc.pos}", path, line=line_no
        ) from None
    if not isinstance(row, dict):
        raise WorkloadError("expected a JSON object", path, line=line_no)
    for name in FIELDS:
        if name not in row:
            raise WorkloadError(f"missing field; the row has {sorted(row)}", path, line_no, name)
    values = []
    for name in FIELDS[:3]:
        v = row[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise WorkloadError(f"not a number >= 0: {v!r}", path, line_no, name)
        if name != "timestamp" and v != int(v):
            raise WorkloadError(f"not an integer: {v!r}", path, line_no, name)
        values.append(v)
    hashes = row["hash_ids"]
    if not isinstance(hashes, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in hashes
    ):
        raise WorkloadError("not a list of integers >= 0", path, line_no, "hash_ids")
    hashes = np.asarray(hashes, dtype=np.int64)
    return (
        values[0] / 1000.0,
        int(values[1]),
        int(values[2]),
        hashes,
        _attributes(path, line_no, row),
    )


def _attributes(path: Path, line_no: int, row: dict) -> dict:
    """The optional fields of `row` that it has, type-checked."""
    out = {}
    for name in ATTRIBUTE_FIELDS.keys() & row.keys():
        v = row[name]
        if name == "priority":
            if isinstance(v, bool) or not isinstance(v, int) or abs(v) >= 10**18:
                raise WorkloadError(f"priority must be an integer, got {v!r}", path, line_no, name)
        elif not isinstance(v, str) and not (name == "slo_class" and v is None):
            kind = "a string or null" if name == "slo_class" else "a string"
            raise WorkloadError(f"{name} must be {kind}, got {v!r}", path, line_no, name)
        out[name] = v
    return out


def _table(rows: list, stats: dict | None) -> RequestTable:
    if stats is not None:
        stats["num_rows"] = stats.get("num_rows", 0) + len(rows)
    t, p, o, h, attributes = zip(*rows, strict=True)
    columns = {}
    for name, (column, default) in ATTRIBUTE_FIELDS.items():
        if any(name in a for a in attributes):
            values = [a.get(name, default) for a in attributes]
            dtype = np.int64 if name == "priority" else object
            columns[column] = np.asarray(values, dtype=dtype)
    if "tenants" in columns:
        columns["tenants"] = columns["tenants"].astype(str)
    return RequestTable(
        arrival_s=np.asarray(t, dtype=np.float64),
        prompt_tokens=np.asarray(p, dtype=np.int64),
        output_tokens=np.asarray(o, dtype=np.int64),
        hash_ids=list(h),
        **columns,
    )
