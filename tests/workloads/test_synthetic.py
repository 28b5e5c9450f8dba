"""Synthetic arrival processes and length distributions: statistics, seeding, config keys."""

from __future__ import annotations

import numpy as np
import pytest

from tests.workloads.conftest import trace_path
from workloads.arrivals import sample_arrivals
from workloads.errors import WorkloadError
from workloads.lengths import sample_lengths
from workloads.synthetic import SyntheticWorkload

N = 20_000


def rate_and_cv(times: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(times)
    return 1.0 / gaps.mean(), gaps.std() / gaps.mean()


@pytest.mark.parametrize(
    "spec, rate, cv",
    [
        ({"process": "poisson", "rate": 5.0}, 5.0, 1.0),
        ({"process": "gamma", "rate": 20.0, "burstiness": 0.25}, 20.0, 2.0),
        ({"process": "gamma", "rate": 2.0, "burstiness": 4.0}, 2.0, 0.5),
        ({"rate": 10.0, "burstiness": 1.0}, 10.0, 1.0),  # the original keys: gamma
    ],
)
def test_renewal_processes_rate_and_cv(spec, rate, cv):
    times = sample_arrivals(spec, N, np.random.default_rng(0))
    assert times[0] == 0.0 and (np.diff(times) >= 0).all()
    got_rate, got_cv = rate_and_cv(times)
    assert got_rate == pytest.approx(rate, rel=0.05)
    assert got_cv == pytest.approx(cv, rel=0.07)


def test_onoff_mean_rate_and_burstiness():
    spec = {
        "process": "onoff",
        "burst_rate": 50.0,
        "idle_rate": 2.0,
        "mean_burst_s": 2.0,
        "mean_idle_s": 8.0,
    }
    times = sample_arrivals(spec, N, np.random.default_rng(1))
    expected = (50 * 2 + 2 * 8) / 10
    rate, cv = rate_and_cv(times)
    assert rate == pytest.approx(expected, rel=0.1)
    assert cv > 1.5  # bursts make gaps far more variable than Poisson's CV of 1


def test_ramp_rate_grows_linearly():
    spec = {"process": "ramp", "start_rate": 2.0, "end_rate": 20.0, "duration_s": 600.0}
    times = sample_arrivals(spec, 7000, np.random.default_rng(2))  # 6600 expected in the ramp
    counts, _ = np.histogram(times, bins=6, range=(0, 600))
    expected = [(2 + 18 * (i + 0.5) / 6) * 100 for i in range(6)]  # rate at the bin centre * 100 s
    np.testing.assert_allclose(counts, expected, rtol=0.1)
    assert times[-1] > 600  # past the ramp, arrivals go on at end_rate


def test_ramp_down_to_zero_runs_out():
    spec = {"process": "ramp", "start_rate": 1.0, "end_rate": 0.0, "duration_s": 10.0}
    with pytest.raises(WorkloadError, match="do not fit"):
        sample_arrivals(spec, 1000, np.random.default_rng(0))


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"process": "weibull", "rate": 1}, "process"),
        ({"process": "poisson", "rate": 1, "burstiness": 2}, "burstiness"),
        ({"process": "poisson"}, "rate is required"),
        ({"process": "poisson", "rate": -1}, "must be > 0"),
        (
            {"process": "onoff", "burst_rate": 1, "mean_burst_s": 0, "mean_idle_s": 1},
            "mean_burst_s > 0",
        ),
    ],
)
def test_bad_arrival_specs(spec, match):
    with pytest.raises(WorkloadError, match=match):
        sample_arrivals(spec, 10, np.random.default_rng(0))


def test_lengths_distributions():
    rng = np.random.default_rng(0)
    assert set(sample_lengths({"kind": "fixed", "value": 7}, 10, rng, "k")) == {7}
    u = sample_lengths({"kind": "uniform", "min": 3, "max": 5}, 1000, rng, "k")
    assert set(u) == {3, 4, 5}
    ln = sample_lengths({"kind": "lognormal", "mean": 200, "sigma": 0.5}, N, rng, "k")
    assert ln.mean() == pytest.approx(200, rel=0.03)
    capped = sample_lengths(
        {"kind": "lognormal", "mean": 200, "sigma": 1.5, "max": 300}, 1000, rng, "k"
    )
    assert capped.max() <= 300 and capped.min() >= 1
    mix = {"kind": "mixture", "components": [
        {"weight": 3, "kind": "fixed", "value": 10}, {"weight": 1, "kind": "fixed", "value": 1000},
    ]}  # fmt: skip
    m = sample_lengths(mix, N, rng, "k")
    assert (m == 1000).mean() == pytest.approx(0.25, abs=0.02)
    with pytest.raises(WorkloadError, match="k.kind"):
        sample_lengths({"kind": "zipf"}, 3, rng, "k")
    with pytest.raises(WorkloadError, match="k.max is required"):
        sample_lengths({"kind": "uniform", "min": 1}, 3, rng, "k")


def test_empirical_lengths_come_from_the_trace(write_file):
    path = write_file("l.csv", "num_prefill_tokens,num_decode_tokens\n5,1\n9,2\n5,3\n")
    out = sample_lengths(
        {"kind": "empirical", "path": str(path), "column": "prompt"},
        3000,
        np.random.default_rng(0),
        "k",
    )
    assert set(out) == {5, 9} and (out == 5).mean() == pytest.approx(2 / 3, abs=0.03)
    public = trace_path("AzureLLMInferenceTrace_code.csv")
    out = sample_lengths(
        {"kind": "empirical", "path": str(public), "column": "output"},
        100,
        np.random.default_rng(0),
        "k",
    )
    assert out.min() >= 1


def make_synthetic(**kw) -> SyntheticWorkload:
    args = dict(
        num_requests=50,
        arrival={"rate": 20.0, "burstiness": 0.25},
        prompt_len={"kind": "uniform", "min": 10, "max": 3000},
        output_len={"kind": "uniform", "min": 16, "max": 2000},
    )
    return SyntheticWorkload(**{**args, **kw})


def test_synthetic_is_seeded_and_clipped():
    w = make_synthetic()
    a = w.build(seed=0, vocab_size=100, max_model_len=2048)
    b = make_synthetic().build(seed=0, vocab_size=100, max_model_len=2048)
    c = make_synthetic().build(seed=1, vocab_size=100, max_model_len=2048)
    assert a == b and a != c
    assert all(s.num_prompt_tokens + s.max_output_tokens <= 2048 for s in a)
    assert all(0 <= t < 100 for s in a for t in s.prompt_ids)
    assert w.stats["num_clipped"] > 0 and w.stats["num_requests"] == 50
    w = make_synthetic(clip="drop")
    assert len(w.build(0, 100, 2048)) == 50 - w.stats["num_dropped"]


def test_uniform_min_above_max_names_both_keys():
    with pytest.raises(WorkloadError, match=r"workload.output_len.min=16 is above .*max=8"):
        sample_lengths(
            {"kind": "uniform", "min": 16, "max": 8}, 3, np.random.default_rng(0),
            "workload.output_len",
        )  # fmt: skip
