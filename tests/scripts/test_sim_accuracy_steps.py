"""benchmarks/sim_accuracy.py `steps`: a recording made before the profile's newest features
(an older `run --record-steps`) still gets its predictions, the missing features derived as
`--refit` derives them."""

from __future__ import annotations

import numpy as np
import pytest

from . import load_script


@pytest.fixture
def script():
    return load_script("benchmarks/sim_accuracy.py")


def test_steps_of_an_older_recording(script, tmp_path, capsys):
    # ten features (before decode_max_ctx): 6 decode-only steps of 5 rows at 20k each (graph
    # bucket 8), then 6 mixed steps with a 512-token chunk beside the 5 decodes
    decode = [1, 0, 0, 0, 0, 8, 100_000, 0, 0, 0]
    mixed = [1, 1, 512, 512 * 256.5, 512 * 512, 5, 100_000, 1, 1, 5]
    x = np.array([decode] * 6 + [mixed] * 6, dtype=float)
    h = np.array([[1, 0, 0, 5, 5]] * 6 + [[1, 1, 1, 6, 517]] * 6, dtype=float)
    n = len(x)
    np.savez(tmp_path / "old.npz", **{
        "old/x": x, "old/h": h, "old/device_time_s": np.full(n, 0.01),
        "old/duration_s": np.full(n, 0.01), "old/host_before_s": np.full(n, 5e-4),
        "old/host_after_s": np.full(n, 2e-3)})  # fmt: skip
    assert script.main(["steps", str(tmp_path / "old.npz")]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| old |")]
    assert [r.split("|")[2].strip() for r in rows] == ["decode", "mixed"]
