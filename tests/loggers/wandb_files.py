"""Read an offline W&B run from its files: the `.wandb` record log and the media tables.

The `.wandb` file is a LevelDB-style log (32 KiB blocks, 7-byte record headers) of
`wandb_internal_pb2.Record` messages, after a 7-byte `:W&B` file header.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a .wandb file"
    records, buf, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if (kind == 0 and length == 0) or pos + _HEADER + length > len(data):
            break  # end of the log, or a record still being written
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        buf = chunk if kind in (_FULL, _FIRST) else buf + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            records.append(record)
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    dir: Path
    run: object = None  # the RunRecord
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    exit_code: int | None = None

    def table(self, prefix: str) -> dict:
        """The logged table whose media file name starts with `prefix`."""
        (path,) = (self.dir / "files" / "media" / "table").glob(f"**/{prefix}*.table.json")
        return json.loads(path.read_text())


def read_offline_run(wandb_dir: Path, wait_s: float = 30.0) -> OfflineRun:
    """The single `offline-run-*` below `wandb_dir`, parsed once its exit record is written
    (W&B's service process writes the file asynchronously, after `run.finish()` returns)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = _read_once(wandb_dir)
        if out.exit_code is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def _read_once(wandb_dir: Path) -> OfflineRun:
    (run_dir,) = Path(wandb_dir).glob("offline-run-*")
    (log,) = run_dir.glob("*.wandb")
    out = OfflineRun(run_dir)
    for rec in read_records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.run = rec.run
            for item in rec.run.config.update:
                out.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            out.history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                out.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            out.exit_code = rec.exit.exit_code
    return out
