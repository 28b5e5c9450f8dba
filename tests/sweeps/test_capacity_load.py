"""Capacity search on any workload (the load knob) and the verdict on rejected requests."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

import harness.capacity as capacity
import harness.run
from harness.capacity import compose, meets_slo
from harness.decisions import rejection_reason
from harness.load_knob import UNSERVABLE_KINDS, resolve_knob, unservable
from harness.request import Request
from tests.sweeps.test_capacity import SMALL
from workloads.base import Workload
from workloads.errors import WorkloadError
from workloads.spec import RequestSpec
from workloads.tenants import MultiTenantWorkload


def write_trace(path, n: int = 8):
    """An Azure-format trace of `n` short requests, 0.5 s apart (2 req/s)."""
    rows = [
        f"2023-11-16 18:15:{i // 2:02d}.{5 * (i % 2)}000000,{24 + i},{2 + i % 4}" for i in range(n)
    ]
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    return path


class RateRun:
    """Stands in for `harness.run.run`: P99 TTFT is (the knob's value) / 10 s, so under
    slo.ttft_s=2 a probe passes iff the knob is at most 20. Records each probe's workload."""

    def __init__(self, key: str) -> None:
        self.key, self.workloads = key, []

    def __call__(self, cfg, output_dir, names=None, specs=None, model=None):
        self.workloads.append(OmegaConf.to_container(cfg.workload, resolve=False))
        rate = OmegaConf.select(cfg.workload, self.key)
        summary = {
            "num_requests": 8, "num_finished": 8, "complete": True, "error": None,
            "ttft_s": {"p99": rate / 10}, "tpot_s": {"p99": 0.01}, "output_throughput_tok_s": 1.0,
        }  # fmt: skip
        return SimpleNamespace(summary=summary)


def knob_of(*overrides: str):
    cfg, _ = compose(list(overrides))
    return resolve_knob(cfg.workload)


def test_each_workload_declares_its_load_knob(tmp_path):
    synthetic = knob_of("workload=poisson")
    assert (synthetic.key, synthetic.unit, synthetic.unset) == (
        "workload.arrival.rate",
        "req/s",
        (),
    )
    trace = knob_of("workload=trace", f"workload.path={tmp_path}/x.csv")
    assert (trace.key, trace.unset) == ("workload.target_rate", ("workload.time_scale",))
    assert trace.overrides(3.0) == ["workload.target_rate=3.0", "workload.time_scale=null"]
    assert knob_of("workload=two_tenants").key == "workload.target_rate"
    assert knob_of("workload=azure_conv").key == "workload.target_rate"  # a trace preset


ONOFF = (
    "~workload.arrival",
    "+workload.arrival={process:onoff,burst_rate:8,mean_burst_s:1,mean_idle_s:1}",
)


def test_a_workload_without_a_single_rate_cannot_be_scaled():
    with pytest.raises(WorkloadError, match="workload.arrival.process=onoff: no single rate"):
        knob_of("workload=poisson", *ONOFF)
    assert knob_of("workload=poisson", "workload.arrival.rate=3").key == "workload.arrival.rate"


def test_a_workload_that_declares_no_knob_fails_in_one_line():
    class Fixed(Workload):
        def load(self, seed, max_model_len):
            raise AssertionError("never loaded")

    with pytest.raises(WorkloadError, match="declares no load knob"):
        Fixed.load_knob({})
    cfg, _ = compose(["workload=poisson"])
    with pytest.raises(WorkloadError, match="no such key"):
        resolve_knob(cfg.workload, "tenants.0.arrival.rate")
    assert resolve_knob(cfg.workload, "workload.arrival.rate").key == "workload.arrival.rate"


def test_the_search_refuses_an_unscalable_workload_before_any_probe(monkeypatch, capsys):
    probes = []
    monkeypatch.setattr(harness.run, "run", lambda *a, **k: probes.append(a))
    with pytest.raises(SystemExit) as exc:
        capacity.main(["workload=poisson", *ONOFF, "slo.ttft_s=2"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and probes == []
    assert len(err.strip().splitlines()) == 1 and "no single rate" in err


def test_multi_tenant_target_rate_scales_every_tenant_by_one_factor():
    cfg, _ = compose(["workload=two_tenants"])
    spec = OmegaConf.to_container(cfg.workload, resolve=True)
    spec.pop("_target_")
    base = MultiTenantWorkload(**spec).load(0, 4096)
    scaled_workload = MultiTenantWorkload(**{**spec, "target_rate": 5.0})
    scaled = scaled_workload.load(0, 4096)
    assert scaled_workload.stats["mean_rate_req_s"] == pytest.approx(5.0)
    factor = scaled_workload.stats["time_scale"]
    assert factor > 1  # two_tenants runs at ~20 req/s: 5 req/s stretches it
    assert list(scaled.tenants) == list(base.tenants)  # same requests, same order
    np.testing.assert_allclose(scaled.arrival_s, base.arrival_s * factor)
    for name in ("batch", "interactive"):  # each tenant's own mean rate divided by the factor
        t0, t1 = (table.arrival_s[table.tenants == name] for table in (base, scaled))
        assert (len(t1) - 1) / (t1[-1] - t1[0]) == pytest.approx(
            (len(t0) - 1) / (t0[-1] - t0[0]) / factor
        )
    with pytest.raises(WorkloadError, match="target_rate"):
        MultiTenantWorkload(**{**spec, "target_rate": 0})


@pytest.mark.parametrize(
    "workload, extra",
    [
        ("two_tenants", []),
        ("trace", ["workload.path=unused.csv", "workload.time_scale=2"]),
    ],
)
def test_the_search_probes_the_workloads_knob(monkeypatch, tmp_path, workload, extra):
    fake = RateRun("target_rate")
    monkeypatch.setattr(harness.run, "run", fake)
    argv = [f"workload={workload}", *extra, "slo.ttft_s=2", "slo.tpot_s=1", "--low", "1"]
    (r,) = capacity.main([*argv, "--high", "64", "--out", str(tmp_path)])
    assert r.status == "ok" and r.bracket[0] <= 20 < r.bracket[1]
    for w, probe in zip(fake.workloads, r.probes, strict=True):
        assert w["target_rate"] == probe.rate
        assert w.get("time_scale") is None  # a user's time_scale would fight the knob
        if workload == "two_tenants":  # the tenants' own rates are left as they were
            assert [t["arrival"]["rate"] for t in w["tenants"]] == [16.0, 4.0]
    saved = json.loads((tmp_path / "capacity.json").read_text())
    assert saved["load"]["key"] == "workload.target_rate" and saved["load"]["unit"] == "req/s"


def test_load_key_probes_another_key(monkeypatch, tmp_path):
    fake = RateRun("tenants.0.arrival.rate")
    monkeypatch.setattr(harness.run, "run", fake)
    argv = ["workload=two_tenants", "slo.ttft_s=2", "--load-key", "tenants.0.arrival.rate"]
    (r,) = capacity.main([*argv, "--out", str(tmp_path)])
    assert r.bracket[0] <= 20 < r.bracket[1]
    assert {w["target_rate"] for w in fake.workloads} == {None}
    assert [w["tenants"][1]["arrival"]["rate"] for w in fake.workloads] == [4.0] * len(r.probes)


# -- rejected requests -----------------------------------------------------------------------


def summary(num_finished: int, reasons: dict) -> dict:
    return {
        "complete": True, "num_requests": 10, "num_finished": num_finished,
        "num_rejected": sum(reasons.values()), "rejection_reasons": reasons,
        "ttft_s": {"p99": 0.1}, "tpot_s": {"p99": 0.01},
    }  # fmt: skip


def test_unservable_requests_are_left_out_and_shed_ones_are_misses():
    assert meets_slo(summary(8, {"max_model_len": 1, "kv_capacity": 1}), 2.0, 0.1)
    assert not meets_slo(summary(8, {"shed": 2}), 2.0, 0.1)
    assert not meets_slo(summary(7, {"max_model_len": 2}), 2.0, 0.1)  # one more lost: a miss
    assert not meets_slo(summary(7, {"max_model_len": 2, "shed": 1}), 2.0, 0.1)
    with pytest.raises(ValueError, match="none of the 10 requests can be served"):
        meets_slo(summary(0, {"max_model_len": 10}), 2.0, 0.1)


def test_unservable_kinds_are_the_engines_policy_independent_reasons():
    def kind(prompt: int, output: int, max_model_len=64, num_gpu_blocks=2) -> str:
        spec = RequestSpec("r0", 0.0, tuple(range(prompt)), output)
        reason = rejection_reason(Request(spec), max_model_len, num_gpu_blocks, block_size=16)
        return reason.split(":", 1)[0]

    kinds = {kind(0, 4), kind(60, 10), kind(40, 8)}  # empty, too long, more blocks than exist
    assert kinds == set(UNSERVABLE_KINDS)
    assert unservable({"max_model_len": 2, "shed": 3, "kv_capacity": 1}) == 3


def test_a_real_search_judges_the_servable_requests(tmp_path, capsys):
    """A quarter of the prompts are longer than the tiny model's max_model_len (4096), left
    unclipped: the engine rejects them at every rate. A loose SLO then passes at --high
    (before, every probe missed)."""
    prompts = (
        "+workload.prompt_len={kind:mixture,components:[{weight:3,kind:fixed,value:32},"
        "{weight:1,kind:fixed,value:5000}]}"
    )
    argv = [
        *SMALL,
        "++workload.clip=none",
        "~workload.prompt_len",
        prompts,
        "slo.ttft_s=1000",
        "slo.tpot_s=1000",
    ]
    (r,) = capacity.main([*argv, "--low", "50", "--high", "400", "--out", str(tmp_path)])
    (probe,) = r.probes
    assert (r.status, probe.meets_slo) == ("at_least_high", True)
    assert 0 < probe.num_unservable == probe.num_rejected < 8
    assert probe.mean_rate_req_s is not None and probe.mean_rate_req_s > 0
    out = capsys.readouterr().out
    assert f"{probe.num_unservable} of 8 requests can never be served (max_model_len" in out


def test_a_real_search_on_a_trace_slice_probes_its_mean_rate(tmp_path):
    """The trace's own rate is 2 req/s; each probe replays the first 6 requests rescaled to
    the probed rate, which the run's arrivals then show."""
    trace = write_trace(tmp_path / "t.csv")
    argv = [*SMALL[:4], "workload=trace", f"workload.path={trace}", "workload.max_requests=6"]
    argv += ["slo.ttft_s=1e-9", "--low", "50", "--high", "400", "--iters", "1"]
    (r,) = capacity.main([*argv, "--out", str(tmp_path / "cap")])
    assert r.status == "below_low" and [p.rate for p in r.probes] == [
        400.0,
        141.4213562373095,
        50.0,
    ]
    for probe in r.probes:
        assert probe.mean_rate_req_s == pytest.approx(probe.rate)
        cfg = OmegaConf.load(f"{probe.run_dir}/config.yaml")
        assert cfg.workload.target_rate == probe.rate and cfg.workload.max_requests == 6
