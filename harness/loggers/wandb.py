"""Weights & Biases logging on top of the local run folder (offline by default, `wandb sync` later).

The local files are written first and stay the source of truth: any W&B failure (no network, bad
key, an error while logging) is a warning, never a lost run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from harness.loggers.local import LocalLogger
from harness.metrics import latency_cdf
from harness.records import STEP_SERIES

CDF_POINTS = 200  # points per latency CDF line


class WandbFailure(RuntimeWarning):
    """W&B could not start or log; the local results are unaffected."""


def run_name(config: dict) -> str:
    """`<policy>-b<max_num_batched_tokens>-<workload>[-r<rate>]`, e.g. `fcfs-b2048-bursty-r20`."""
    resolved = config.get("resolved", {})
    policy = resolved.get("policy_name") or _class_name(config.get("policy"))
    workload = resolved.get("workload_name") or _class_name(config.get("workload"))
    name = f"{policy}-b{config['budget']['max_num_batched_tokens']}-{workload}"
    rate = (config.get("workload") or {}).get("arrival", {}).get("rate")
    return f"{name}-r{rate:g}" if isinstance(rate, (int, float)) else name


def _class_name(node) -> str:
    target = (node or {}).get("_target_", "") if isinstance(node, dict) else ""
    return target.rsplit(".", 1)[-1] or "unknown"


def flat_summary(summary: dict) -> dict:
    """summary.json with latency objects flattened to `ttft_s/p99`-style keys."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


class WandbLogger(LocalLogger):
    """Writes the run folder (as `LocalLogger`), then logs the run to W&B."""

    def __init__(
        self,
        project: str = "sched-harness",
        entity: str | None = None,
        mode: str = "offline",
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        dir: str | None = None,
        init_timeout_s: float = 60.0,
        max_step_points: int = 20_000,
        print_table: bool = True,
    ) -> None:
        super().__init__(print_table=print_table)
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.name, self.tags = group, name, list(tags or [])
        self.dir, self.init_timeout_s = dir, init_timeout_s
        self.max_step_points = max_step_points
        self.run = None

    def start(self, cfg, resolved: dict, output_dir: Path | None) -> None:
        super().start(cfg, resolved, output_dir)
        try:
            self.run = self._init(output_dir)
        except Exception as exc:  # wandb raises many types (CommError, UsageError, ...)
            self._warn("could not start", exc)
            self.run = None

    def finish(self, summary: dict, requests: pd.DataFrame, steps: pd.DataFrame) -> None:
        super().finish(summary, requests, steps)  # local files first: they must survive W&B
        if self.run is None:
            return
        exit_code = 0
        try:
            self._log_steps(steps)
            self._log_summary(summary)
            self._log_requests(requests)
        except Exception as exc:
            exit_code = 1
            self._warn("failed while logging", exc)
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            self._warn("failed to finish", exc)
        self.run = None

    def _init(self, output_dir: Path | None):
        import wandb

        directory = Path(self.dir or output_dir or os.environ.get("WANDB_DIR") or ".")
        directory.mkdir(parents=True, exist_ok=True)
        resolved = self.config.get("resolved", {})
        return wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            group=self.group or resolved.get("sweep_name") or None,
            name=self.name or run_name(self.config),
            tags=self.tags,
            dir=str(directory),
            config=self.config,
            reinit="finish_previous",
            settings=wandb.Settings(init_timeout=self.init_timeout_s, console="off"),
        )

    def _log_steps(self, steps: pd.DataFrame) -> None:
        if not len(steps):
            return
        self.run.define_metric("step/step")
        self.run.define_metric("step/*", step_metric="step/step")
        stride = max(1, -(-len(steps) // self.max_step_points))  # keep long runs light
        columns = [c for c in ("start_s", *STEP_SERIES) if c in steps.columns]
        for row in steps.iloc[::stride].itertuples(index=False):
            row = row._asdict()
            self.run.log({"step/step": int(row["step"]), **{f"step/{c}": row[c] for c in columns}})

    def _log_summary(self, summary: dict) -> None:
        self.run.summary.update(flat_summary(summary))

    def _log_requests(self, requests: pd.DataFrame) -> None:
        import wandb

        # Token lists do not fit a table cell well; their length is `output_tokens`.
        table = requests.drop(columns=["token_times_s", "output_ids"], errors="ignore")
        self.run.log({"requests": wandb.Table(dataframe=table.reset_index(drop=True))})
        for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
            values, fractions = latency_cdf(requests, key) if len(requests) else ([], [])
            if not len(values):
                continue
            idx = np.unique(np.linspace(0, len(values) - 1, min(CDF_POINTS, len(values))).round())
            idx = idx.astype(int)
            rows = [[float(values[i]) * 1e3, float(fractions[i])] for i in idx]
            cdf = wandb.Table(columns=["latency_ms", "fraction"], data=rows)
            label = key.removesuffix("_s").upper()
            self.run.log(
                {
                    f"cdf/{key}": wandb.plot.line(
                        cdf, "latency_ms", "fraction", title=f"{label} CDF (ms)"
                    )
                }
            )

    def _warn(self, what: str, exc: BaseException) -> None:
        where = self.output_dir if self.output_dir is not None else "(no run folder)"
        warnings.warn(
            f"W&B {what} ({type(exc).__name__}: {exc}); local results are kept in {where}",
            WandbFailure,
            stacklevel=3,
        )
