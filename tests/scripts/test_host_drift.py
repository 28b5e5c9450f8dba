"""benchmarks/host_drift.py: one calibration cell repeated on the real (cpu, tiny) executor; every
mixed step is in a window, and each launch's wall and CPU times are the launch call's own."""

from __future__ import annotations

import json

import pytest

from . import load_script


@pytest.fixture(scope="module")
def drift(tmp_path_factory):
    module = load_script("benchmarks/host_drift.py")
    out = tmp_path_factory.mktemp("drift") / "drift.json"
    rc = module.main(["--out", str(out), "--repeats", "4", "--batch", "4", "--context", "32",
                      "--chunk", "32", "--mixed-steps", "3", "--window", "0.5",
                      "model=tiny", "engine=cpu"])  # fmt: skip
    assert rc == 0
    return module, json.loads(out.read_text())


def test_every_repeat_of_the_cell_is_measured(drift):
    module, data = drift
    pts = data["points"]
    mixed = [p for p in pts if p["prefill"] > 0 and p["mixed_decode"] > 0]
    assert len(mixed) == 4 * 3  # repeats x mixed steps
    assert all(p["mixed_decode"] == 4 and p["prefill_tokens"] == 32 for p in mixed)
    at = [p["launch_at"] for p in pts]
    assert at == sorted(at) and all(p["launch_wall_s"] > 0 for p in pts)
    rows = module.windows(data, 0.5)
    assert rows and sum(r["mixed_steps"] for r in rows) <= len(mixed)
    # a window's median launch CPU time is this thread's own, never above its wall time by more
    # than the clocks' resolution
    assert all(r["launch_cpu_s"] <= r["launch_wall_s"] + 2e-3 for r in rows)
