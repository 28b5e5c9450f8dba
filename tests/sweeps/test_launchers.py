"""A sweep runs unchanged on a Ray cluster (hydra-ray-launcher, against a local cluster that this
test starts with `ray start --head`) and through submitit (`hydra/launcher=submitit_local`, how a
SLURM sweep is exercised without a cluster): every job's run folder equals the one the same sweep
writes under Hydra's basic launcher, which the virtual clock makes exactly reproducible.

The launchers come with `pip install -e ".[dev]"` (the `cluster` extra). Without them the tests
skip, except under CI (`CI=true`), where they fail."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ["fcfs", "chunked_prefill"]
# Each job: the simulator (issue 15's point: sweeps of simulated runs on a cluster) with the
# cpu_tiny profile, 16 requests; its virtual clock makes the figures exact.
SWEEP = [
    f"policy={','.join(POLICIES)}", "engine=sim", "engine.profile=cpu_tiny", "logger=local",
    "engine.progress=false", "logger.print_table=false", "workload.num_requests=16",
]  # fmt: skip
JOBS = [f"{i}_policy={p}" for i, p in enumerate(POLICIES)]
TIMEOUT_S = 300  # a sweep that hangs (e.g. a Ray task that no node can place) fails, not waits


def need(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed: pip install -e '.[{extra}]' (or '.[dev]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def sweep(sweep_dir: Path, *launcher: str) -> str:
    """`python -m harness -m SWEEP LAUNCHER...` into `sweep_dir`; its stdout + stderr."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "harness", "-m", *SWEEP, *launcher, f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def run_folders(sweep_dir: Path) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Each job folder's summary and requests (every token's time), by folder name."""
    found = {}
    for job in JOBS:
        folder = sweep_dir / job
        assert (folder / "summary.json").is_file(), f"no run folder {folder}"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["complete"] and summary["num_finished"] == 16, summary
        found[job] = (summary, pd.read_parquet(folder / "requests.parquet"))
    return found


def assert_same_runs(got: Path, expected: Path) -> None:
    a, b = run_folders(got), run_folders(expected)
    for job in JOBS:
        assert a[job][0] == b[job][0], f"{job}: summary.json differs from the basic launcher's"
        pd.testing.assert_frame_equal(a[job][1], b[job][1])


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory) -> Path:
    """The sweep under Hydra's basic launcher (one job after another, in this process's env)."""
    sweep_dir = tmp_path_factory.mktemp("basic") / "sweep"
    sweep(sweep_dir)
    return sweep_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster (`ray start --head --block` in its own process group, 2 CPUs, no
    GPU); yields its address; stopped afterwards, and its process group with it."""
    need("hydra_plugins.hydra_ray_launcher", "ray")
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray puts sockets under it
    ray = Path(sys.executable).with_name("ray")  # the venv's; else the one on PATH
    ray = ray if ray.is_file() else shutil.which("ray")
    proc = subprocess.Popen(
        [str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "Ray runtime started" in line:
                started.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not started.wait(0.5):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)  # `ray start --block` then stops what it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        with contextlib.suppress(ProcessLookupError):  # anything of its process group still there
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_launcher_sweep_on_a_local_cluster_equals_the_basic_launcher(
    ray_cluster, basic_sweep, tmp_path
):
    output = sweep(
        tmp_path / "sweep",
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address={ray_cluster}",
        # the preset asks one GPU and 8 CPUs per job; this cluster has 2 CPUs and no GPU
        "hydra.launcher.ray.remote.num_gpus=0",
        "hydra.launcher.ray.remote.num_cpus=1",
    )
    assert "Ray Launcher is launching 2 jobs" in output
    # it joined the cluster above (not a Ray instance of its own)
    port = ray_cluster.rsplit(":", 1)[1]  # Ray names the node by its IP, not 127.0.0.1
    joined = re.search(rf"Connecting to existing Ray cluster at address: [\d.]+:{port}\b", output)
    assert joined, [line for line in output.splitlines() if "Ray" in line]
    assert_same_runs(tmp_path / "sweep", basic_sweep)


@pytest.fixture(scope="module")
def submitit_launcher() -> None:
    need("hydra_plugins.hydra_submitit_launcher", "slurm")


def test_submitit_local_sweep_equals_the_basic_launcher(submitit_launcher, basic_sweep, tmp_path):
    output = sweep(tmp_path / "sweep", "hydra/launcher=submitit_local")
    assert "Submitit 'local' sweep output dir" in output
    submitted = list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))
    assert len(submitted) == len(JOBS), "each job ran as a submitit job"
    assert_same_runs(tmp_path / "sweep", basic_sweep)
