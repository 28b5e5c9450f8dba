"""The simulator's load model (sim_model.LoadState): a step's time scaled by the device's recent
prefill load, fitted from a calibration's own timeline, and the grid that sets it apart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.calibrate import FULL, build_plan
from harness.sim_model import LoadState, fit_loaded, fit_relative, load_profile, loads

TAU, HEAT = 0.05, 2048.0


def test_the_load_is_the_decayed_share_of_recent_prefill_time_and_scales_a_step():
    s = LoadState(0.1, TAU, HEAT)
    # a cold device: the step runs its base time
    assert s.run(0.0, 0.050, 2048) == pytest.approx(0.050)
    # 50 ms at full heat from load 0: u = 1 - e^-1
    u1 = 1 - math.exp(-1)
    assert s.u == pytest.approx(u1) and s.at_s == pytest.approx(0.050)
    # right after it, a decode step (no prefill) runs (1 + 0.1 u1) longer
    t = s.run(0.050, 0.010, 0)
    assert t == pytest.approx(0.010 * (1 + 0.1 * u1))
    u2 = u1 * math.exp(-t / TAU)
    assert s.u == pytest.approx(u2)
    # half a second idle: the load has decayed by e^-10
    t3 = s.run(0.050 + t + 0.5, 0.010, 1024)
    assert t3 == pytest.approx(0.010 * (1 + 0.1 * u2 * math.exp(-10)))
    # a 1,024-token step heats at half the rate of a full one
    a = math.exp(-t3 / TAU)
    assert s.u == pytest.approx(u2 * math.exp(-10) * a + 0.5 * (1 - a))


def test_loads_of_a_timeline_are_the_states_a_step_starts_from():
    starts, times, tokens = np.array([0.0, 0.05, 0.2]), np.array([0.05, 0.01, 0.01]), [4096, 0, 0]
    u = loads(starts, times, np.array(tokens, float), TAU, HEAT)
    u1 = 1 - math.exp(-1)  # heat is capped at 1
    assert u[0] == 0.0 and u[1] == pytest.approx(u1)
    assert u[2] == pytest.approx(u1 * math.exp(-0.01 / TAU) * math.exp(-(0.2 - 0.06) / TAU))


def _h200_with_load(coef: float) -> dict:
    p = load_profile("h200_llama3_8b")
    p["load_model"] = {"coef": coef, "tau_s": TAU, "heat_tokens": HEAT}
    return p


def test_on_the_timeline_a_step_after_prefill_runs_longer_than_after_idle():
    from harness.serve import VirtualClock
    from harness.sim_model import ProfileStepCost
    from harness.step_cost import Timeline
    from tests.sim.test_sim_model import _batch

    prefill, decode = _batch([], [(2048, 2048)]), _batch([512] * 16, [])

    def decode_time(coef: float, idle_s: float) -> float:
        clock = VirtualClock()
        t = Timeline(ProfileStepCost(_h200_with_load(coef), list(range(1, 257))), clock)
        t.launch(prefill)
        clock.wait_until(t.device_free_s + idle_s)
        return t.launch(decode)[1]

    base = ProfileStepCost(load_profile("h200_llama3_8b"), list(range(1, 257))).step_time(decode)
    hot, cold = decode_time(0.1, 0.0), decode_time(0.1, 1.0)
    assert cold == pytest.approx(base, rel=1e-6)  # a second idle: cooled
    assert hot > base * 1.04  # right after ~60 ms of prefill: u > 0.6
    assert decode_time(0.0, 0.0) == base  # a load model of coefficient 0 changes nothing


def test_the_fit_recovers_a_known_load_coefficient():
    rng = np.random.default_rng(0)
    n = 600
    x = np.column_stack([np.ones(n), rng.integers(0, 4096, n), rng.integers(0, 256, n)])
    c = np.array([5e-3, 2e-5, 4e-5])
    u = rng.uniform(0, 1, n)
    y = (x @ c) * (1 + 0.08 * u) * rng.normal(1, 0.005, n)
    fit, k = fit_loaded(x, y, u)
    assert k == pytest.approx(0.08, abs=0.005)
    assert np.allclose(fit.coef, c, rtol=0.03)
    assert fit.in_sample_mape < 0.01
    # without the load the same points fit worse
    assert fit_relative(x, y).in_sample_mape > 2 * fit.in_sample_mape


def test_a_load_free_device_fits_a_load_coefficient_of_zero():
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(200), rng.integers(0, 4096, 200)])
    y = x @ np.array([5e-3, 2e-5]) * rng.normal(1, 0.003, 200)
    _, k = fit_loaded(x, y, rng.uniform(0, 1, 200))
    assert k < 0.003


def test_the_grid_pauses_before_every_other_group_of_four_cells():
    grid = dict(FULL, cool_s=0.3)
    p = build_plan(grid, 16, 20000, 2048, 64, 8192, swaps=False)
    paused = {s.cell for s in p.steps if s.pause_s}
    assert paused and all((c // 4) % 2 == 1 for c in paused)
    cells = {s.cell for s in p.steps if s.cell >= 0}
    assert paused == {c for c in cells if (c // 4) % 2 == 1}
    # one pause a cell, and held-out cells (every fourth) both paused and not
    assert sum(1 for s in p.steps if s.pause_s) == len(paused)
    held = {c for c in cells if c % 4 == 3}
    assert held & paused and held - paused
    assert not any(s.pause_s for s in build_plan(dict(FULL, cool_s=0.0), 16, 20000, 2048, 64,
                                                 8192, swaps=False).steps)  # fmt: skip


def test_the_grid_measures_the_largest_batch_a_run_can_have():
    # max_num_seqs 64: batch sizes beyond 63 (a mixed step's prompt takes a row) are measured at 63
    p = build_plan(FULL, 16, 20000, 2048, 64, 8192, swaps=False)
    rows = {
        len(s.tokens) for s in p.steps if s.cell >= 0 and all(n == 1 for n in s.tokens.values())
    }
    assert 63 in rows and max(rows) == 63


def test_a_step_up_to_the_heat_knee_does_not_heat_the_device():
    s = LoadState(0.1, TAU, 1024.0, heat_knee=512.0)
    s.run(0.0, 0.050, 512)  # at the knee: no heat
    assert s.u == 0.0
    s.run(0.050, 0.050, 768)  # halfway from the knee to full heat
    a = math.exp(-1)
    assert s.u == pytest.approx(0.5 * (1 - a))
    u = s.u
    s.run(0.100, 0.050, 4096)  # capped at full heat
    t = 0.050 * (1 + 0.1 * u)
    b = math.exp(-t / TAU)
    assert s.u == pytest.approx(u * b + (1 - b))
    # a profile fitted before the knee reads as knee 0, and a knee at or past full heat is refused
    assert LoadState.of({"coef": 0.1, "tau_s": TAU, "heat_tokens": 1024}).heat_knee == 0.0
    with pytest.raises(ValueError, match="heat_knee"):
        LoadState(0.1, TAU, 1024.0, heat_knee=1024.0)
