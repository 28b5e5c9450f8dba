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


def test_a_pipelined_swap_waits_for_the_step_in_flight_once(tmp_path):
    # A pipelined calibration times a swap from its call: the wait for the step in flight is
    # inside the fitted time (its fixed part). With a 10 ms step in flight, a swap whose fitted
    # fixed part is 4 ms ends when that step does, plus the copy (2 blocks of 0.5 ms): 11 ms,
    # not 10 + 4 + 1.
    from harness.serve import VirtualClock
    from harness.sim_model import ProfileStepCost
    from harness.step_cost import Timeline

    p = load_profile(str(_profile(tmp_path, True)))
    p["swap_model"] = {d: {"fixed_s": 0.004, "per_block_s": 0.0005} for d in ("out", "in")}
    clock = VirtualClock()
    t = Timeline(ProfileStepCost(p), clock)
    t.launch(_one_row_batch())
    assert t.device_free_s == pytest.approx(D)
    t.swap(2, swap_in=True)
    assert clock.now() == pytest.approx(0.011) and t.device_free_s == pytest.approx(0.011)
    # nothing in flight: the fitted time as it is (4 ms + the copy), from now
    t.swap(2, swap_in=False)
    assert clock.now() == pytest.approx(0.011 + 0.005)
    # a profile measured without pipelining: its swaps never waited for a step; they follow it
    p["settings"]["async_scheduling"] = False
    clock = VirtualClock()
    t = Timeline(ProfileStepCost(p), clock)
    t.launch(_one_row_batch())
    t.swap(2, swap_in=True)
    assert clock.now() == pytest.approx(D + 0.005)


def _one_row_batch():
    import numpy as np

    from harness.batch import Batch

    return Batch(
        input_ids=np.zeros(1, np.int64), positions=np.zeros(1, np.int64),
        slot_mapping=np.zeros(1, np.int64), query_start_loc=np.array([0, 1], np.int32),
        seq_lens=np.array([8], np.int32), block_tables=np.zeros((1, 1), np.int32),
        logits_indices=np.array([0]), max_query_len=1, max_seq_len=8, num_decode_seqs=1,
    )  # fmt: skip


def test_calibration_leaves_a_swap_out_of_the_previous_steps_host_time():
    # Step 1 swapped for 30 ms while preparing: that is step 1's, not step 0's after-launch work.
    from harness.calibrate import host_times
    from harness.records import StepRecord

    def rec(host, swap):
        return StepRecord(**{**dict.fromkeys(StepRecord.__dataclass_fields__, 0),
                             "host_time_s": host, "swap_time_s": swap})  # fmt: skip

    r = RecordingExecutor(executor=None)
    r.launch_s = [0.0, 0.050, 0.060]
    r.waits = []
    before, after = host_times([rec(0.001, 0.0), rec(0.032, 0.030), rec(0.001, 0.0)], r)
    assert before == pytest.approx([0.001, 0.002, 0.001])
    assert after[0] == pytest.approx(0.050 - 0.032) and after[1] == pytest.approx(0.010 - 0.001)
