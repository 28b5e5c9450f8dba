"""The report's comparison table as a W&B table (`python -m harness.report --wandb`).

Offline unless the user set `WANDB_MODE`: the run lands in `<report>/wandb/offline-run-*`, to
`wandb sync` later. A failure is a warning; the local report is already written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from harness.loggers.wandb import WandbFailure


def upload_comparison(
    table: pd.DataFrame,
    group: str | None,
    directory: Path,
    project: str = "sched-harness",
    init_timeout_s: float = 60.0,
) -> str | None:
    """Log `table` as the W&B table `comparison` in a `report` run of `group` (the sweep's
    group, so it sits beside the sweep's runs); returns the run's folder, None on failure."""
    try:
        import wandb

        run = wandb.init(
            project=project,
            group=group,
            job_type="report",
            name=f"report-{group}" if group else "report",
            mode=os.environ.get("WANDB_MODE", "offline"),
            dir=str(directory),
            reinit="finish_previous",
            settings=wandb.Settings(init_timeout=init_timeout_s, console="off"),
        )
        run.log({"comparison": wandb.Table(dataframe=cells(table))})
        run.finish()
        return str(Path(run.dir).parent)
    except Exception as exc:  # wandb raises many types (CommError, UsageError, ...)
        warnings.warn(
            f"W&B upload of the report failed ({type(exc).__name__}: {exc}); the local "
            f"report in {directory} is complete",
            WandbFailure,
            stacklevel=2,
        )
        return None


def cells(table: pd.DataFrame) -> pd.DataFrame:
    """The table with text in place of values a W&B table cell cannot hold (None, tuples)."""
    out = table.reset_index(drop=True).copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: "" if v is None else str(v))
    return out
