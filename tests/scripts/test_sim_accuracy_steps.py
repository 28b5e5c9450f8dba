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


def test_compare_against_the_median_of_several_real_runs(script, tmp_path, capsys):
    """`compare --median-of`: the simulator against the median of the real runs, and each miss
    marked `span` (within tolerance of the real runs' range) or `beyond`."""
    import json

    def write(d, ttft_p50, ttft_p99):
        d.mkdir()
        summary = {"output_throughput_tok_s": 1000.0, "num_finished": 10,
                   "ttft_s": {"p50": ttft_p50, "p99": ttft_p99},
                   "tpot_s": {"p50": 0.01, "p99": 0.02}, "itl_s": {"p50": 0.01, "p99": 0.03}}  # fmt: skip
        (d / "case.json").write_text(json.dumps({"summary": summary}))

    write(tmp_path / "r1", 0.100, 0.200)
    write(tmp_path / "r2", 0.130, 0.210)
    write(tmp_path / "r3", 0.102, 0.205)
    # P50 TTFT: median 0.102, sim 0.120 (+17.6%) but within [0.100 * 0.9, 0.130 * 1.1]: span;
    # P99 TTFT: median 0.205, sim 0.260 (+26.8%), beyond 0.210 * 1.1
    write(tmp_path / "sim", 0.120, 0.260)
    args = ["compare", str(tmp_path / "r1"), str(tmp_path / "sim"), "--median-of",
            str(tmp_path / "r2"), str(tmp_path / "r3")]  # fmt: skip
    assert script.main(args) == 0
    out = capsys.readouterr().out
    assert "| all | 5 / 7 |" in out
    assert "| case | P50 TTFT | 100.0 ms, 130.0 ms, 102.0 ms | 120.0 ms | +17.6% | span |" in out
    assert "| case | P99 TTFT | 200.0 ms, 210.0 ms, 205.0 ms | 260.0 ms | +26.8% | beyond |" in out
