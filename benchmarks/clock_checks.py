"""Issue 13's two clock checks on the CPU, for a before/after record (benchmarks/*.md).

    python benchmarks/clock_checks.py gaps       # 5 isolated requests: smallest vs median gap
    python benchmarks/clock_checks.py startup    # P50 TTFT with logger=local and logger=wandb

`gaps`: five requests (800-token prompt, 6 outputs) 2 s apart, each alone in the engine, on the
default CPU config (wall clock, engine.async_scheduling=true). Every gap between two tokens is
one decode step, so the smallest gap should be close to the median one.
`startup`: `python -m harness policy=fcfs engine=cpu workload.num_requests=40`'s P50 TTFT with
the local logger and with W&B (offline): W&B's start-up must not be inside any latency.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from harness.config import register
from harness.request import RequestSpec
from harness.run import run

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _cfg(*overrides: str):
    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("config", overrides=["engine=cpu", "engine.progress=false", *overrides])


def gaps() -> None:
    rng = np.random.default_rng(0)
    specs = [
        RequestSpec(f"r{i}", 2.0 * i, tuple(rng.integers(0, 2048, 800).tolist()), 6)
        for i in range(5)
    ]
    result = run(_cfg("logger=none", "policy=fcfs"), None, specs=specs)
    per_request = [np.diff(t) for t in result.requests["token_times_s"]]
    all_gaps = np.concatenate(per_request)
    last = [g[-1] for g in per_request]
    print(f"gaps: min {1e3 * all_gaps.min():.2f} ms, median {1e3 * np.median(all_gaps):.2f} ms, "
          f"each request's last gap {[round(1e3 * x, 2) for x in last]} ms")  # fmt: skip


def startup() -> None:
    for logger in ("local", "wandb"):
        with tempfile.TemporaryDirectory() as out:
            cfg = _cfg(f"logger={logger}", "policy=fcfs", "workload.num_requests=40")
            s = run(cfg, Path(out)).summary
        print(f"logger={logger}: P50 TTFT {1e3 * s['ttft_s']['p50']:.0f} ms")


if __name__ == "__main__":
    {"gaps": gaps, "startup": startup}[sys.argv[1]]()
