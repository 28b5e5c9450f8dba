"""Capacity search as a user meets it: --help with defaults, a progress line per probe, and
the workload each probe serves."""

from __future__ import annotations

import argparse
import json
import math
import re

import pytest

import harness.capacity as capacity
import harness.run
from tests.sweeps.test_capacity_interrupt import FAKE_ARGS, FakeRun

LINE = re.compile(
    r"probe (\d+) of at most (\d+): policy (\w+), rate ([\d.]+) req/s -> (pass|miss) "
    r"\(P99 TTFT .+, P99 TPOT .+\), bracket \[([\d.]+), ([\d.]+|inf)\) req/s, \d+ s"
)


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exc:
        capacity.main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    knobs = [
        a
        for a in capacity.build_parser()._actions
        if a.option_strings and a.default not in (None, argparse.SUPPRESS)
    ]
    assert {k.dest for k in knobs} >= {"low", "high", "iters", "rel_tol"}
    for knob in knobs:
        assert f"(default: {knob.default})" in text, knob.dest


def test_a_progress_line_per_probe(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(harness.run, "run", FakeRun())  # passes iff rate <= 20 req/s
    results = capacity.main([*FAKE_ARGS, "policy=fcfs,chunked_prefill", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    lines = [LINE.fullmatch(x) for x in out.splitlines() if x.startswith("probe ")]
    assert all(lines) and len(lines) == sum(len(r.probes) for r in results)
    bound = capacity.max_probes(1.0, 64.0, 6, 0.05)
    lo, hi = {}, {}
    for k, m in enumerate(lines, start=1):
        policy, rate, outcome = m[3], float(m[4]), m[5]
        assert (int(m[1]), int(m[2])) == (k, 2 * bound)
        assert outcome == ("pass" if rate <= 20 else "miss")
        if outcome == "pass":
            lo[policy] = max(lo.get(policy, 0.0), rate)
        else:
            hi[policy] = min(hi.get(policy, math.inf), rate)
        assert float(m[6]) == pytest.approx(lo.get(policy, 0.0), rel=1e-3)
        assert float(m[7]) == pytest.approx(hi.get(policy, math.inf), rel=1e-3)
    for r in results:  # the last line's bracket is the result's
        assert r.bracket == pytest.approx((lo[r.policy], hi[r.policy]), rel=1e-3)


@pytest.mark.parametrize(
    ("low", "high", "iters", "rel_tol"),
    [(1.0, 64.0, 6, 0.05), (1.0, 64.0, 20, 0.05), (0.5, 2.0, 10, 0.2), (1.0, 1000.0, 3, 0.01)],
)
def test_max_probes_is_the_worst_case_of_the_bisection(low, high, iters, rel_tol):
    counts = []
    for threshold in [low * (high / low) ** (i / 97) for i in range(98)]:
        probed = []
        capacity.bisect_capacity(
            lambda r, t=threshold, p=probed: p.append(r) or r <= t, low, high, iters, rel_tol
        )
        counts.append(len(probed))
    assert max(counts) == capacity.max_probes(low, high, iters, rel_tol)


def _probe_sizes(monkeypatch, *argv) -> list[int]:
    """workload.num_requests of every probe the search ran."""
    fake = FakeRun()
    monkeypatch.setattr(harness.run, "run", fake)
    capacity.main([*argv, "--iters", "1"])
    return [cfg.workload.num_requests for cfg in fake.cfgs]


def test_probes_serve_the_workload_as_configured_on_every_engine(monkeypatch, capsys, tmp_path):
    """No smaller workload behind the user's back, not even on the slow cpu engine: fewer
    requests per probe overstate a capacity that queueing limits (docs/sweeps.md)."""
    out = ("--out", str(tmp_path))
    default = capacity.compose([])[0].workload.num_requests
    for engine in ("engine=cpu", "engine=cuda", "engine=auto"):
        argv = [engine if a == "engine=cpu" else a for a in FAKE_ARGS]
        assert set(_probe_sizes(monkeypatch, *argv, *out)) == {default}
        assert f"probes of {default} requests" in capsys.readouterr().out.splitlines()[0]
        added = json.loads((tmp_path / "capacity.json").read_text())["probe_defaults"]
        assert not [o for o in added if o.startswith("workload.")]
    assert set(_probe_sizes(monkeypatch, *FAKE_ARGS, "workload.num_requests=40", *out)) == {40}
