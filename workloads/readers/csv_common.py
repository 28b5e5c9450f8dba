"""Chunked CSV reading shared by the readers: only the needed columns, arrow batches, exact errors.

The fast path converts whole batches with pyarrow; when a batch holds a bad value, a slow scan of
the file finds the first bad row so the error can name its line and column.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from workloads.errors import WorkloadError

BLOCK_BYTES = 1 << 20  # ~1 MB of CSV text per batch (~25k Azure rows): arrow reads ahead
# several batches, so larger blocks cost memory (16 MB blocks: ~0.5 GB resident) for no speed.

MAX_COUNT = 2**31 - 1
# Optional per-request columns any CSV trace may carry; a blank cell is the default.
PRIORITY_PATTERN = r"[+-]?\d{1,18}"  # fits int64 with room for arithmetic
ATTRIBUTE_COLUMNS = {"tenant": "tenants", "priority": "priorities", "slo_class": "slo_classes"}
Check = Callable[[str], str | None]  # a cell's text -> why it is bad, or None


def read_header(path: Path) -> list[str]:
    """The CSV header's column names; an empty file is an error."""
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if any(cell.strip() for cell in row):
                return [cell.strip() for cell in row]
    raise WorkloadError("empty trace: no header and no rows", path, line=1)


def require_columns(path: Path, header: list[str], needed: list[str]) -> None:
    for name in needed:
        if name not in header:
            raise WorkloadError(
                f"missing column {name!r}; the header has {header}", path, line=1, column=name
            )


def csv_batches(
    path: Path, types: dict[str, pa.DataType], checks: dict[str, Check]
) -> Iterator[tuple[int, dict[str, pa.Array]]]:
    """Yield (index of the batch's first data row, {column: arrow array}) for `types`' columns.

    Integer and float columns must be non-null and >= 0; a violation raises a WorkloadError that
    names the line, found by rescanning the file with `checks`.
    """
    convert = pcsv.ConvertOptions(
        include_columns=list(types), column_types=types, strings_can_be_null=False
    )
    try:  # open_csv converts the first batch already
        reader = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES), convert_options=convert
        )
    except pa.ArrowInvalid as exc:
        raise_first_bad_row(path, checks, 0, fallback=str(exc))
    start = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            raise_first_bad_row(path, checks, start, fallback=str(exc))
        cols = {name: batch.column(name) for name in types}
        for name, arr in cols.items():
            numeric = pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)
            bad = arr.null_count > 0
            if numeric and not bad:
                values = arr.to_numpy(zero_copy_only=False)
                bad = bool((values < 0).any() or not np.isfinite(values).all())
                bad = bad or (pa.types.is_integer(arr.type) and bool((values > MAX_COUNT).any()))
            if bad:
                raise_first_bad_row(path, {name: checks[name]}, start, fallback="bad value")
        yield start, cols
        start += batch.num_rows
    if start == 0:
        raise WorkloadError("empty trace: a header but no rows", path, line=2)


def scan_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every non-blank data row; slow, used only to locate errors."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = None
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                continue
            yield reader.line_num, dict(zip(header, row, strict=False))


def line_of_row(path: Path, row_index: int) -> int | None:
    """The line number of the data row at `row_index` (0-based, blank lines skipped)."""
    for i, (line, _) in enumerate(scan_rows(path)):
        if i == row_index:
            return line
    return None


def raise_first_bad_row(path: Path, checks: dict[str, Check], start: int = 0, fallback: str = ""):
    """Raise a WorkloadError for the first row (from data row `start`) that fails a check."""
    for i, (line, row) in enumerate(scan_rows(path)):
        if i < start:
            continue
        for name, check in checks.items():
            value = row.get(name)
            why = "missing value" if value is None else check(value)
            if why:
                raise WorkloadError(why, path, line=line, column=name)
    raise WorkloadError(f"could not read the CSV: {fallback}", path)


def check_count(text: str) -> str | None:
    """A token count: a non-negative integer."""
    s = text.strip()
    if not s:
        return "empty value"
    if not re.fullmatch(r"\+?\d+", s):
        return f"not a non-negative integer: {text!r}"
    if int(s) > MAX_COUNT:
        return f"too large for a token count: {text!r}"
    return None


def counts(arr: pa.Array) -> np.ndarray:
    """A checked token-count column as int32 (half the memory of int64 on huge traces)."""
    return arr.to_numpy(zero_copy_only=False).astype(np.int32)


def check_priority(text: str) -> str | None:
    """A priority: an integer (larger is more important), or blank for 0."""
    s = text.strip()
    if s and not re.fullmatch(PRIORITY_PATTERN, s):
        return f"priority must be an integer (at most 18 digits), got {text!r}"
    return None


def attribute_types(header: list[str]) -> tuple[dict[str, pa.DataType], dict[str, Check]]:
    """Arrow types and checks of the optional `ATTRIBUTE_COLUMNS` that `header` has."""
    present = [name for name in ATTRIBUTE_COLUMNS if name in header]
    checks = {name: check_priority if name == "priority" else check_any for name in present}
    return {name: pa.string() for name in present}, checks


def attribute_columns(path: Path, cols: dict[str, pa.Array], start: int) -> dict[str, np.ndarray]:
    """RequestTable keyword arguments (`tenants`, ...) of the attribute columns in `cols`:
    blank tenant -> "default", blank priority -> 0, blank slo_class -> None."""
    out = {}
    for name, field in ATTRIBUTE_COLUMNS.items():
        if name not in cols:
            continue
        text = pc.utf8_trim_whitespace(cols[name])
        blank = pc.equal(text, "").to_numpy(zero_copy_only=False)
        if name == "priority":
            ok = pc.or_(pc.match_substring_regex(text, f"^{PRIORITY_PATTERN}$"), pc.equal(text, ""))
            if not pc.all(ok).as_py():
                raise_first_bad_row(path, {name: check_priority}, start, "bad priority")
            text = pc.if_else(pc.equal(text, ""), "0", text)
            out[field] = pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False)
            continue
        values = text.to_numpy(zero_copy_only=False).astype(object)
        values[blank] = "default" if name == "tenant" else None
        out[field] = values.astype(str) if name == "tenant" else values
    return out


def check_any(text: str) -> str | None:
    """Any text (a free-form column such as a model name)."""
    return None


def check_seconds(text: str) -> str | None:
    """A time in seconds: a finite number >= 0."""
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        return f"not a number: {text!r}" if s else "empty value"
    if not math.isfinite(value) or value < 0:
        return f"not a finite time >= 0: {text!r}"
    return None


class SortCheck:
    """Checks that times never decrease across batches; fails or only records it."""

    def __init__(self, path: Path, column: str, allow_unsorted: bool) -> None:
        self.path, self.column, self.allow_unsorted = path, column, allow_unsorted
        self.last = -math.inf
        self.is_sorted = True

    def __call__(self, times: np.ndarray, start: int, line_of: Callable[[int], int | None]):
        if len(times) == 0:
            return
        prev = np.concatenate([[self.last], times[:-1]])
        bad = np.flatnonzero(times < prev)
        self.last = max(self.last, float(times.max())) if len(bad) else float(times[-1])
        if len(bad) and self.is_sorted:
            self.is_sorted = False
            if not self.allow_unsorted:
                raise WorkloadError(
                    "timestamps are not sorted (this row is earlier than the one before); "
                    "set workload.sort=true to sort them",
                    self.path,
                    line=line_of(start + int(bad[0])),
                    column=self.column,
                )
