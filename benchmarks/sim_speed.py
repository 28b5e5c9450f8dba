"""engine=sim's speed on this machine: simulated seconds per wall second and the engine's host
time per step at a given number of running requests; and a trace replayed end to end.

    python benchmarks/sim_speed.py running 16 64 256      # N decoding requests, per-step host time
    python benchmarks/sim_speed.py trace [OVERRIDES...]   # e.g. workload=azure_conv, timed
    python benchmarks/sim_speed.py profile [OVERRIDES...] # the same under cProfile: top 15
Results: benchmarks/sim_speed_cpu_2026-12-02.md.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

# the checkout this script is in, not whatever `harness` an editable install points at
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402

import harness.run  # noqa: E402
from harness.config import CONF_DIR, register  # noqa: E402
from harness.run import run  # noqa: E402

QUIET = ["engine=sim", "engine.progress=false", "logger=none"]
SERVE_S: list[float] = []  # wall time of each run's serving loop (set-up and summary left out)


def _timed_serve(*args, **kwargs):
    t0 = time.perf_counter()
    try:
        return _serve(*args, **kwargs)
    finally:
        SERVE_S.append(time.perf_counter() - t0)


_serve, harness.run.serve = harness.run.serve, _timed_serve


def cfg(overrides):
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=list(overrides))


def running(n: int) -> None:
    """n requests at t=0, 32-token prompts, 512 output tokens each: n decode rows per step."""
    o = [*QUIET, "workload=poisson", f"workload.num_requests={n}", "workload.arrival.rate=1e6",
         "workload.prompt_len.kind=fixed", "+workload.prompt_len.value=32",
         "workload.output_len.kind=fixed", "+workload.output_len.value=512",
         f"budget.max_num_seqs={n}", f"budget.num_gpu_blocks={n * 40}"]  # fmt: skip
    r = run(cfg(o), None)
    wall = SERVE_S[-1]
    steps = r.steps
    decode = steps[steps.num_scheduled_seqs == n]
    per_step = wall / len(steps)
    print(f"running={n}: {len(steps)} steps ({len(decode)} with {n} rows) in {wall:.2f} s wall "
          "(serving loop): "
          f"{per_step * 1e3:.2f} ms/step; {r.summary['duration_s']:.1f} simulated s -> "
          f"{r.summary['duration_s'] / wall:.1f} simulated s per wall s")  # fmt: skip


def trace(overrides) -> None:
    t0 = time.perf_counter()
    r = run(cfg([*QUIET, *overrides]), None)
    total, wall = time.perf_counter() - t0, SERVE_S[-1]
    s = r.summary
    print(f"{' '.join(overrides)}: {s['num_requests']} requests ({s['num_finished']} finished), "
          f"{len(r.steps)} steps, {s['duration_s']:.0f} simulated s in {wall:.1f} s wall "
          f"({wall / len(r.steps) * 1e3:.2f} ms/step, {s['duration_s'] / wall:.1f} sim s/wall s); "
          f"{total:.1f} s with set-up and summary")  # fmt: skip


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "running":
        running(4)  # warm-up: the first run's imports and set-up are not the loop's
        for n in args or ("16", "64", "256"):
            running(int(n))
    elif what == "trace":
        trace(args)
    else:
        prof = cProfile.Profile()
        prof.runcall(trace, args)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
