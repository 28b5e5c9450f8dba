"""A profile records the commit it was measured at, or none when the code is not a checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_a_copy_outside_its_repository_records_no_commit(tmp_path):
    # a `git archive` snapshot unpacked inside another repository (a device run's copy)
    outer = tmp_path / "outer"
    outer.mkdir()
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(outer),
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    snap = outer / "snap"
    root = Path(__file__).resolve().parents[2]
    shutil.copytree(
        root / "harness", snap / "harness", ignore=shutil.ignore_patterns("__pycache__", "profiles")
    )
    shutil.copytree(
        root / "policies", snap / "policies", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        root / "workloads", snap / "workloads", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = subprocess.run(
        [sys.executable, "-c", "from harness.calibrate import _git_commit; print(_git_commit())"],
        cwd=snap,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(snap)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
