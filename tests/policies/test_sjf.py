"""SJF: waiting requests by predicted output length (oracle or noisy), aging past max_wait_s."""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest

from policies.fcfs import FcfsPolicy
from policies.sjf import SjfPolicy
from tests.policies.conftest import make_request_view, make_view, tiny_specs


def test_shortest_predicted_output_first():
    long = make_request_view("long", 0.0, 40, max_output_tokens=200)
    short = make_request_view("short", 1.0, 40, max_output_tokens=10)
    resumed = make_request_view(  # 100 outputs of 120 done: 20 left
        "resumed", 0.5, 40, num_output_tokens=100, num_computed_tokens=0, max_output_tokens=120
    )
    view = make_view(waiting=[long, resumed, short], max_num_seqs=2)
    assert SjfPolicy().schedule(view).num_scheduled_tokens == {"short": 40, "resumed": 140}


def test_a_request_waiting_past_max_wait_s_goes_first():
    long = make_request_view("long", 0.0, 40, max_output_tokens=200)
    short = make_request_view("short", 2.5, 40, max_output_tokens=10)
    view = dataclasses.replace(make_view(waiting=[short, long], max_num_seqs=1), now_s=3.0)
    assert SjfPolicy(max_wait_s=5.0).schedule(view).num_scheduled_tokens == {"short": 40}
    assert SjfPolicy(max_wait_s=2.0).schedule(view).num_scheduled_tokens == {"long": 40}


def test_noisy_predictions_are_seeded_lognormal_errors():
    views = [make_request_view(f"r{i}", max_output_tokens=100) for i in range(4000)]
    noisy = SjfPolicy(predictor="noisy", noise=0.5, noise_seed=1)
    log_errors = [math.log(noisy.predicted_output_tokens(r) / 100) for r in views]
    assert statistics.fmean(log_errors) == pytest.approx(0.0, abs=0.03)
    assert statistics.stdev(log_errors) == pytest.approx(0.5, rel=0.05)
    again = SjfPolicy(predictor="noisy", noise=0.5, noise_seed=1)
    assert [again.predicted_output_tokens(r) for r in views[:50]] == [
        noisy.predicted_output_tokens(r) for r in views[:50]
    ]
    other = SjfPolicy(predictor="noisy", noise=0.5, noise_seed=2)
    assert other.predicted_output_tokens(views[0]) != noisy.predicted_output_tokens(views[0])
    assert SjfPolicy(predictor="noisy", noise=0.0).predicted_output_tokens(views[0]) == 100
    assert SjfPolicy(predictor="oracle", noise=0.5).predicted_output_tokens(views[0]) == 100
    with pytest.raises(ValueError, match="predictor"):
        SjfPolicy(predictor="learned")


def test_shortest_jobs_finish_first_and_lower_mean_e2e(scenario):
    # One seat, six requests at once: fcfs serves them in arrival order, SJF shortest first.
    outputs = [40, 5, 30, 3, 20, 8]
    specs = tiny_specs([16] * 6, outputs)
    _, fcfs, _ = scenario(FcfsPolicy(), specs, max_num_seqs=1)
    _, sjf, _ = scenario(SjfPolicy(), specs, max_num_seqs=1)
    assert list(sjf.sort_values("first_scheduled_s").max_output_tokens) == sorted(outputs)
    assert sjf.e2e_s.mean() < 0.7 * fcfs.e2e_s.mean()
    assert (sjf.status == "finished").all()
    assert sjf.output_ids.to_dict() == fcfs.output_ids.to_dict()


def test_aging_bounds_a_long_job_s_wait_behind_a_stream_of_short_ones(scenario):
    # r0 (30 outputs) arrives with a stream of 4-output requests, one every 10 ms, one seat.
    # Without aging every short one passes it; with max_wait_s = 50 ms it goes next after that.
    n = 12
    specs = tiny_specs(
        [16] * n, [30] + [4] * (n - 1), arrivals=[0.0] + [0.01 * i for i in range(n - 1)]
    )
    _, starved, _ = scenario(SjfPolicy(max_wait_s=100.0), specs, max_num_seqs=1)
    _, aged, _ = scenario(SjfPolicy(max_wait_s=0.05), specs, max_num_seqs=1)
    assert starved.first_scheduled_s.idxmax() == "r0"
    assert aged.loc["r0", "first_scheduled_s"] < aged.first_scheduled_s.drop("r0").max()
    service_s = starved.loc["r1", "e2e_s"]  # r1 ran at once: one short job's service time
    assert aged.loc["r0", "queue_wait_s"] < 0.05 + service_s
