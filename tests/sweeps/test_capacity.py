"""Capacity search: the bisection on a known threshold, and real probes end to end."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import harness.run
from harness.capacity import bisect_capacity, main, peak_in_system, split_policies
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


@pytest.mark.parametrize("threshold", [0.5, 1.0, 1.2, 17.0])
def test_the_slow_low_probe_runs_only_when_no_higher_rate_met_the_slo(threshold):
    """A probe at rate r takes num_requests / r seconds of arrivals: `low` is the slowest, so
    the search starts at `high` and probes `low` last, and only when nothing above it passed."""
    probed = []

    def probe(rate):
        probed.append(rate)
        return rate <= threshold

    capacity, (lo, hi), status = bisect_capacity(probe, 1.0, 64.0, iters=6, rel_tol=0.05)
    assert probed[0] == 64.0
    passed_above_low = any(threshold >= r > 1.0 for r in probed)
    assert (1.0 in probed) == (not passed_above_low)
    if threshold < 1.0:
        assert (status, capacity, probed[-1]) == ("below_low", None, 1.0)
    else:
        assert status == "ok" and lo <= threshold < hi and capacity == lo


def test_split_policies():
    assert split_policies(["policy=fcfs,static", "seed=1"]) == (["fcfs", "static"], ["seed=1"])
    assert split_policies(["seed=1"]) == ([], ["seed=1"])


def test_real_probes_write_json_csv_png_and_run_folders(tmp_path):
    out = tmp_path / "cap"
    # A loose SLO is met at the top rate: one probe and done.
    results = main([*SMALL, "slo.ttft_s=1000", "slo.tpot_s=1000", "--low", "50", "--high", "400", "--out", str(out)])  # fmt: skip
    (r,) = results
    assert (r.policy, r.status, r.capacity_req_s) == ("fcfs", "at_least_high", 400.0)
    assert [p.rate for p in r.probes] == [400.0]
    saved = json.loads((out / "capacity.json").read_text())
    assert saved["complete"] is True and saved["stopped"] is None
    assert saved["policies"][0]["capacity_req_s"] == 400.0 and saved["slo"]["ttft_s"] == 1000
    assert len(pd.read_csv(out / "capacity.csv")) == 1
    assert (out / "capacity.png").read_bytes()[:4] == b"\x89PNG"
    runs = load_runs([out])  # every probe is a run folder the report reads
    assert sorted(runs["workload.arrival.rate"]) == [400.0]
    assert set(runs["policy"]) == {"fcfs"}


def test_an_impossible_slo_stops_at_the_low_bound(tmp_path):
    out = tmp_path / "cap"
    (r,) = main([*SMALL, "policy=fcfs", "slo.ttft_s=1e-9", "--low", "50", "--out", str(out)])
    assert (r.status, r.capacity_req_s, r.probes[-1].rate) == ("below_low", None, 50.0)
    assert not any(p.meets_slo for p in r.probes)


def test_a_pass_with_the_whole_workload_in_flight_is_flagged(tmp_path, capsys):
    """8 requests at 40,000 req/s all arrive (within ~0.2 ms) before the first finishes (two
    steps of >= 2 ms on the virtual clock; on the wall clock a fast host finished one first):
    the engine served one burst, and meeting the SLO then says nothing about a sustained rate."""
    argv = [*SMALL, "engine.clock=virtual", "slo.ttft_s=1000", "slo.tpot_s=1000",
            "--low", "5000", "--high", "40000"]  # fmt: skip
    (r,) = main([*argv, "--out", str(tmp_path)])
    (probe,) = r.probes
    assert probe.meets_slo and probe.peak_in_system == 8
    out = capsys.readouterr().out
    assert "burst: all 8 requests were in the system at once" in out
    assert "fcfs: capacity 40000.0 req/s rests on a burst" in out


def test_peak_in_system_counts_overlapping_requests():
    requests = pd.DataFrame(
        {"arrival_s": [0.0, 1.0, 2.0, 3.0, 4.0], "finish_s": [2.5, 1.5, 3.0, math.nan, 4.5]}
    )  # [0, 2.5) and [2, 3) overlap; a finish at 3.0 leaves before the arrival at 3.0
    assert peak_in_system(requests) == 2
    requests.loc[4, "arrival_s"] = 0.5  # now [0.5, 4.5) overlaps both of the first pair
    assert peak_in_system(requests) == 3
    assert peak_in_system(None) is None


def test_a_policy_typo_fails_before_any_probe(monkeypatch, capsys):
    probes = []
    monkeypatch.setattr(harness.run, "run", lambda *a, **k: probes.append(a))
    with pytest.raises(SystemExit) as exc:
        main([*SMALL, "policy=fcfs,no_such_policy"])
    assert exc.value.code == 2 and probes == []
    assert "policy=no_such_policy" in capsys.readouterr().err
