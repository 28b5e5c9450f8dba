"""The run folder: config.yaml, summary.json, requests.parquet, steps.parquet, written atomically."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from harness.report_table import print_summary


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, then rename over `path`: readers never see a half-written file.

    The file's mode follows the umask, as `open()`'s would (mkstemp's would be owner-only), so
    a colleague can read a shared results folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(
    output_dir: Path, config: dict, summary: dict, requests: pd.DataFrame, steps: pd.DataFrame
) -> None:
    """Write the four result files (README, "Reading the output"); summary.json last, as the
    completion mark."""
    atomic_write(output_dir / "config.yaml", lambda p: p.write_text(OmegaConf.to_yaml(config)))
    atomic_write(output_dir / "requests.parquet", lambda p: requests.to_parquet(p, index=False))
    atomic_write(output_dir / "steps.parquet", lambda p: steps.to_parquet(p, index=False))
    atomic_write(
        output_dir / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n")
    )


class LocalLogger:
    """Writes the run folder and prints the summary table."""

    def __init__(self, print_table: bool = True) -> None:
        self.print_table = print_table
        self.output_dir: Path | None = None
        self.config: dict = {}

    def start(self, cfg, resolved: dict, output_dir: Path | None) -> None:
        self.output_dir = output_dir
        self.config = {**OmegaConf.to_container(cfg, resolve=True), "resolved": resolved}

    def finish(self, summary: dict, requests: pd.DataFrame, steps: pd.DataFrame) -> None:
        if self.output_dir is not None:
            write_results(self.output_dir, self.config, summary, requests, steps)
        if self.print_table:
            print_summary(summary, self.output_dir)


class NoLogger(LocalLogger):
    """Writes nothing; prints the summary only."""

    def finish(self, summary: dict, requests: pd.DataFrame, steps: pd.DataFrame) -> None:
        if self.print_table:
            print_summary(summary, None)
