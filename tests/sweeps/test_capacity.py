"""Capacity search: the bisection on a known threshold, and real probes end to end."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import harness.run
from harness.capacity import bisect_capacity, main, split_policies
from harness.report import load_runs

SMALL = (
    "engine=cpu", "engine.num_threads=1", "engine.progress=false", "logger.print_table=false",
    "workload.num_requests=8", "workload.output_len.min=2", "workload.output_len.max=6",
    "workload.prompt_len.max=128", "budget.num_cpu_blocks=64",
)  # fmt: skip


@pytest.mark.parametrize("threshold", [3.0, 17.0, 40.0])
def test_bisection_brackets_a_known_threshold(threshold):
    probed = []

    def probe(rate):
        probed.append(rate)
        return rate <= threshold

    capacity, (lo, hi), status = bisect_capacity(probe, 1.0, 64.0, iters=20, rel_tol=0.01)
    assert status == "ok"
    assert lo <= threshold < hi and hi / lo - 1 <= 0.01
    assert capacity == lo and probe(capacity)


def test_bisection_bounds():
    assert bisect_capacity(lambda r: False, 1.0, 8.0, 5, 0.1)[2] == "below_low"
    capacity, bracket, status = bisect_capacity(lambda r: True, 1.0, 8.0, 5, 0.1)
    assert (capacity, bracket[1], status) == (8.0, math.inf, "at_least_high")
    with pytest.raises(ValueError):
        bisect_capacity(lambda r: True, 8.0, 1.0, 5, 0.1)


def test_split_policies():
    assert split_policies(["policy=fcfs,static", "seed=1"]) == (["fcfs", "static"], ["seed=1"])
    assert split_policies(["seed=1"]) == ([], ["seed=1"])


def test_real_probes_write_json_csv_png_and_run_folders(tmp_path):
    out = tmp_path / "cap"
    # A loose SLO is met at the top rate: two probes and done.
    results = main([*SMALL, "slo.ttft_s=1000", "slo.tpot_s=1000", "--low", "50", "--high", "400", "--out", str(out)])  # fmt: skip
    (r,) = results
    assert (r.policy, r.status, r.capacity_req_s) == ("fcfs", "at_least_high", 400.0)
    assert [p.rate for p in r.probes] == [50.0, 400.0]
    saved = json.loads((out / "capacity.json").read_text())
    assert saved["policies"][0]["capacity_req_s"] == 400.0 and saved["slo"]["ttft_s"] == 1000
    assert len(pd.read_csv(out / "capacity.csv")) == 2
    assert (out / "capacity.png").read_bytes()[:4] == b"\x89PNG"
    runs = load_runs([out])  # every probe is a run folder the report reads
    assert sorted(runs["workload.arrival.rate"]) == [50.0, 400.0]
    assert set(runs["policy"]) == {"fcfs"}


def test_an_impossible_slo_stops_at_the_low_bound(tmp_path):
    out = tmp_path / "cap"
    (r,) = main([*SMALL, "policy=fcfs", "slo.ttft_s=1e-9", "--low", "50", "--out", str(out)])
    assert (r.status, r.capacity_req_s, len(r.probes)) == ("below_low", None, 1)


def test_a_policy_typo_fails_before_any_probe(monkeypatch, capsys):
    probes = []
    monkeypatch.setattr(harness.run, "run", lambda *a, **k: probes.append(a))
    with pytest.raises(SystemExit) as exc:
        main([*SMALL, "policy=fcfs,no_such_policy"])
    assert exc.value.code == 2 and probes == []
    assert "policy=no_such_policy" in capsys.readouterr().err
