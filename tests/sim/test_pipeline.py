"""The simulator's timeline for a pipelined profile (harness/step_cost.py `Timeline`), held to
the timings derived by hand from the real engine's loop: the host launches step n+1 before it
reads step n's tokens, so an arrival joins the step after the next; a step whose host work
outlasts the device's sets the pace. Without pipelining a step moves the clock by its cost."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from harness.calibrate import RecordingExecutor
from harness.request import RequestSpec
from harness.run import run
from harness.sim_model import FEATURES, HOST_FEATURES, load_profile

D = 0.01  # every step's device time


def _profile(tmp_path, pipelined: bool, host_after_s: float | None = None,
             host_before_s: float = 0.0):  # fmt: skip
    p = load_profile("cpu_tiny")
    p["step_model"]["coef"] = [D] + [0.0] * (len(FEATURES) - 1)
    p["settings"]["async_scheduling"] = pipelined
    if host_after_s is not None:
        zeros = [0.0] * (len(HOST_FEATURES) - 1)
        p["host_model"] = {"features": list(HOST_FEATURES),
                           "before_launch": {"coef": [host_before_s, *zeros]},
                           "after_launch": {"coef": [host_after_s, *zeros]}}  # fmt: skip
    path = tmp_path / f"p_{pipelined}_{host_after_s}_{host_before_s}.json"
    path.write_text(json.dumps(p))
    return path


def _times(compose_cfg, profile, specs, *extra) -> dict[str, list[float]]:
    cfg = compose_cfg("engine=sim", f"engine.profile={profile}", "logger=none",
                      "engine.progress=false", *extra)  # fmt: skip
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    r = run(cfg, None, specs=list(specs))
    return {row.request_id: [t / D for t in row.token_times_s] for row in r.requests.itertuples()}


# A decodes from t=0; B arrives at 0.5 D, while step 0 (A's prefill) runs.
SPECS = [RequestSpec("A", 0.0, tuple(range(1, 17)), 4),
         RequestSpec("B", 0.5 * D, tuple(range(20, 36)), 2)]  # fmt: skip


@pytest.mark.parametrize("policy", ["fcfs", "chunked_prefill"])
def test_a_pipelined_profile_serves_an_arrival_one_step_later(compose_cfg, tmp_path, policy):
    # Pipelined: step 1 (A's decode) is launched at t=0, before step 0's tokens are read at D;
    # B is seen at D, joins step 2, which runs on the device from 2D to 3D.
    t = _times(compose_cfg, _profile(tmp_path, True), SPECS, f"policy={policy}")
    assert t["A"] == pytest.approx([1, 2, 3, 4])
    assert t["B"] == pytest.approx([3, 4])
    # The same profile run without pipelining: B joins step 1 (D to 2D).
    t = _times(compose_cfg, _profile(tmp_path, True), SPECS, f"policy={policy}",
               "engine.async_scheduling=false")  # fmt: skip
    assert t["A"] == pytest.approx([1, 2, 3, 4])
    assert t["B"] == pytest.approx([2, 3])


def test_a_profile_measured_without_pipelining_is_simulated_without(compose_cfg, tmp_path):
    t = _times(compose_cfg, _profile(tmp_path, False), SPECS)
    assert t["B"] == pytest.approx([2, 3])


@pytest.mark.parametrize("host_after", [0.5, 3.0])
def test_the_slower_of_host_and_device_sets_the_pace(compose_cfg, tmp_path, host_after):
    # One request decoding alone: a token every max(D, host's work per step).
    specs = [RequestSpec("A", 0.0, tuple(range(1, 17)), 8)]
    t = _times(compose_cfg, _profile(tmp_path, True, host_after * D, 0.25 * D), specs)["A"]
    period = max(1.0, host_after + 0.25)
    steady = t[1:-1]
    gaps = [b - a for a, b in zip(steady, steady[1:], strict=False)]
    assert len(gaps) == 5 and gaps == pytest.approx([period] * len(gaps)), t


def test_calibration_attributes_the_hosts_time_between_launches():
    # Launches at 0, 10, 25 ms; the host waited 4 ms for tokens between the first two and
    # 6 ms between the next two; preparing each step took 1, 2 and 3 ms.
    rec = RecordingExecutor(executor=None)
    rec.launch_s = [0.0, 0.010, 0.025]
    rec.waits = [(0.015, 0.006), (0.004, 0.004)]
    after = rec.host_after_launch([0.001, 0.002, 0.003])
    assert after[:2] == pytest.approx([0.010 - 0.004 - 0.002, 0.015 - 0.006 - 0.003])
    assert after[2] is None
