"""Trace readers, one per file format, and the format's recognition from a file's header.

Every reader yields `RequestTable` chunks with times in seconds since the file's first row.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from workloads.errors import WorkloadError
from workloads.fetch import fetch_command, source_for_file, traces_dir
from workloads.readers import azure, burstgpt, mooncake, vidur
from workloads.readers.csv_common import read_header
from workloads.table import RequestTable

READERS = {
    "azure": azure.read_azure,
    "mooncake": mooncake.read_mooncake,
    "burstgpt": burstgpt.read_burstgpt,
    "vidur": vidur.read_vidur,
}
_CSV_COLUMNS = {"azure": azure.COLUMNS, "burstgpt": burstgpt.COLUMNS, "vidur": vidur.COLUMNS}
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def resolve_path(path: str | os.PathLike) -> Path:
    """`path` as given, else (when relative) under the project root; missing is an error."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [p, PROJECT_ROOT / p]
    for c in candidates:
        if c.is_file():
            return c
    tried = " or ".join(dict.fromkeys(str(c.resolve()) for c in candidates))
    source = source_for_file(p.name)
    if source is not None:
        how = (
            f"fetch it with `{fetch_command(source)}` (into {traces_dir()}), or set "
            "HARNESS_TRACES to a folder holding it"
        )
    else:
        how = "set workload.path, or HARNESS_TRACES to the folder holding the public traces"
    raise WorkloadError(f"trace file not found (looked for {tried}); {how}", path)


def detect_format(path: Path) -> str:
    """The format whose columns best match the header (`.jsonl` or a JSON line: mooncake)."""
    if path.suffix in (".jsonl", ".json"):
        return "mooncake"
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "mooncake"
    header = read_header(path)
    scores = {fmt: len(set(cols) & set(header)) for fmt, cols in _CSV_COLUMNS.items()}
    best = max(scores, key=scores.get)
    if scores[best] == 0:
        raise WorkloadError(
            f"unknown trace format: header {header} matches none of {sorted(READERS)}; "
            "name it with workload.format",
            path,
            line=1,
        )
    return best


def read_trace(
    path: Path,
    fmt: str = "auto",
    allow_unsorted: bool = False,
    stats: dict | None = None,
    **options,
) -> Iterator[RequestTable]:
    """Chunks of the trace at `path` in format `fmt` (`auto`: recognised from the header)."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in READERS:
        raise WorkloadError(f"workload.format={fmt!r}: use auto or one of {sorted(READERS)}", path)
    if fmt != "burstgpt":
        used = sorted(k for k, v in options.items() if v and k != "failed")
        if used:
            raise WorkloadError(f"workload.{used[0]} applies to burstgpt traces, not {fmt}", path)
        options = {}
    if stats is not None:
        stats["format"] = fmt
    return READERS[fmt](path, allow_unsorted=allow_unsorted, stats=stats, **options)
