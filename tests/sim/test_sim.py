"""engine=sim: calibrate the cpu executor on the tiny model, then hold a simulated run to a real
one on a workload the calibration never saw; simulated runs are exactly reproducible; a profile
of another model, a wall clock or a missing profile fail with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness.calibrate import ProcessClock, RecordingExecutor, calibrate
from harness.config import ConfigError
from harness.run import build_executor, run
from harness.sim_model import ProfileStepCost, load_profile

# A small grid around what the workload below needs (prompts <= 512, a few running requests).
GRID = dict(decode_batches=(1, 4, 16, 48), contexts=(32, 256, 768), chunks=(32, 256, 1024),
            prefill_contexts=(0, 512), swap_blocks=(2, 16, 128), decode_steps=2, mixed_steps=2,
            repeats=1)  # fmt: skip
# Poisson arrivals at about 2/3 of the tiny cpu model's capacity: never part of the grid.
WORKLOAD = ("workload=poisson", "workload.num_requests=48", "workload.arrival.rate=8",
            "workload.prompt_len.mean=128", "workload.prompt_len.max=512",
            "workload.output_len.min=16", "workload.output_len.max=64", "seed=1")  # fmt: skip
QUIET = ("engine.progress=false", "logger=none")
# Measured on this 2-core host while other jobs shared it (load average 4-8; docs/simulator.md,
# "Accuracy"), seven runs: throughput -0.4..+2.4%; P50 TTFT -43..+20%; P50 TPOT -34..0%; the
# model's sum over the real run's own batches -23..+1.8% (five runs). The calibration (seconds)
# and the real run see different loads: the bounds are that spread plus a margin, and still fail
# a profile off by a factor 2 (or 1.55 on the step sum).
THROUGHPUT_TOL, P50_TOL, STEP_SUM_TOL = 0.10, 0.50, 0.35


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory):
    profile = calibrate(["engine=cpu", "model=tiny"], quick=True, name="test_tiny",
                        clock="process", grid=GRID)  # fmt: skip
    path = tmp_path_factory.mktemp("profiles") / "test_tiny.json"
    path.write_text(json.dumps(profile))
    return path


def _sim(compose_cfg, profile_file, *extra):
    return run(compose_cfg("engine=sim", f"engine.profile={profile_file}", *QUIET, *WORKLOAD,
                           *extra), None)  # fmt: skip


def test_the_profile_records_what_it_measured(profile_file):
    p = json.loads(profile_file.read_text())
    assert p["model"]["preset"] == "tiny" and p["dtype"] == "float32"
    assert p["kv_capacity"]["num_gpu_blocks"] > 0 and p["settings"]["clock"] == "process"
    m = p["step_model"]
    assert m["num_points"] == len(p["points"]["rows"]) > 30
    assert m["in_sample_mape"] < 0.35 and m["held_out_mape"] < 0.5
    assert p["swap_model"]["out"]["num_points"] >= 2 and p["swap_model"]["out"]["per_block_s"] > 0


def test_simulated_run_tracks_the_real_cpu_run(compose_cfg, profile_file):
    cfg = compose_cfg("engine=cpu", "model=tiny", *QUIET, *WORKLOAD)
    executor = RecordingExecutor(build_executor(cfg))
    result = run(cfg, None, clock=ProcessClock(), executor=executor)
    real = result.summary
    sim = _sim(compose_cfg, profile_file).summary
    # the model on the real run's own batches: what each step added to the clock, summed
    model = ProfileStepCost(load_profile(str(profile_file)))
    predicted = sum(model.step_time(b) for b in executor.batches)
    measured = float((result.steps.duration_s - result.steps.swap_time_s).sum())
    assert sim["num_finished"] == real["num_finished"] == 48
    assert sim["workload_fingerprint"] == real["workload_fingerprint"]
    errors = {
        "output_throughput": sim["output_throughput_tok_s"] / real["output_throughput_tok_s"] - 1,
        "ttft_p50": sim["ttft_s"]["p50"] / real["ttft_s"]["p50"] - 1,
        "tpot_p50": sim["tpot_s"]["p50"] / real["tpot_s"]["p50"] - 1,
        "step_time_sum": predicted / measured - 1,
    }
    print("sim vs real:", {k: f"{v:+.1%}" for k, v in errors.items()})
    assert abs(errors["output_throughput"]) <= THROUGHPUT_TOL, errors
    assert abs(errors["ttft_p50"]) <= P50_TOL, errors
    assert abs(errors["tpot_p50"]) <= P50_TOL, errors
    assert abs(errors["step_time_sum"]) <= STEP_SUM_TOL, errors


def test_simulated_runs_are_exactly_reproducible(compose_cfg, profile_file):
    a, b = _sim(compose_cfg, profile_file), _sim(compose_cfg, profile_file)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert (a.steps.device_time_s > 0).all() and a.resolved["tokens"].startswith("not produced")


def test_a_profile_of_another_model_is_refused(compose_cfg, profile_file):
    with pytest.raises(ConfigError, match=r"engine.profile=.*tiny.*llama3_8b"):
        _sim(compose_cfg, profile_file, "model=llama3_8b")


def test_sim_needs_the_virtual_clock(compose_cfg, profile_file):
    with pytest.raises(ConfigError, match="engine.clock=wall must be virtual"):
        _sim(compose_cfg, profile_file, "engine.clock=wall")


def test_the_packaged_profile_runs_by_default(compose_cfg):
    result = run(compose_cfg("engine=sim", *QUIET, "workload.num_requests=20"), None)
    assert result.summary["num_finished"] == 20
    assert result.resolved["profile"] == "cpu_tiny" and result.resolved["model_preset"] == "tiny"


def test_a_missing_profile_is_one_line(tmp_path):
    missing = tmp_path / "nope.json"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "engine=sim", f"engine.profile={missing}",
         f"results_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: engine.profile={missing}: no such profile file {missing}"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "engine=sim", "engine.profile=h100_nothing",
         f"results_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "not a packaged profile (cpu_tiny" in proc.stderr


def test_refit_derives_a_missing_feature_and_merges_calibrations(profile_file, tmp_path):
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    cols = p["points"]["columns"]
    drop = cols.index("decode_max_ctx")
    old = dict(p, points={"columns": cols[:drop] + cols[drop + 1 :],
                          "rows": [r[:drop] + r[drop + 1 :] for r in p["points"]["rows"]]})  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    one = refit([str(path)], "one")
    assert one["refit"]["derived_features"] == ["decode_max_ctx"]
    assert len(one["step_model"]["coef"]) == len(p["step_model"]["coef"])
    # the rows of a decode cell share one context: there the derived feature is the measured
    # one (a swap cell's two rows do not: the refit's docstring says so)
    rows, c = one["points"]["rows"], one["points"]["columns"]
    i, cell, out = c.index("decode_max_ctx"), c.index("cell"), c.index("swap_out_blocks")
    swap_cells = {r[cell] for r in rows if r[out] > 0}
    pairs = [(r[i], m[drop]) for r, m in zip(rows, p["points"]["rows"], strict=True)
             if r[cell] not in swap_cells]  # fmt: skip
    assert len(pairs) > 30 and all(a == b for a, b in pairs)
    two = refit([str(profile_file), str(path)], "two")
    assert two["step_model"]["num_points"] == 2 * len(rows)
    cells = [r[0] for r in two["points"]["rows"]]
    assert len(two["points"]["rows"]) == 2 * len(rows) and len(set(cells)) == 2 * len(set(
        r[0] for r in rows))  # fmt: skip


def test_a_calibration_records_each_points_load_from_its_timeline(profile_file):
    from harness.sim_model import loads

    p = json.loads(profile_file.read_text())
    t = p["timeline"]["rows"]
    assert len(t) == p["settings"]["num_steps"]
    assert all(a[0] < b[0] for a, b in zip(t, t[1:], strict=False))
    cols, rows = p["points"]["columns"], p["points"]["rows"]
    start, load = cols.index("device_start_s"), cols.index("load")
    u = dict(zip((r[0] for r in t), loads(*(np.array(c) for c in zip(*t, strict=True)),
                                          p["settings"]["load_tau_s"],
                                          p["settings"]["load_heat_tokens"],
                                          p["settings"]["load_heat_knee"]), strict=True))  # fmt: skip
    # the timeline is written to the microsecond: its loads to 1e-4 (tau 50 ms)
    assert all(r[load] == pytest.approx(u[r[start]], abs=1e-4) for r in rows)
    assert 0 < max(r[load] for r in rows) <= 1 and "load_model" in p


def test_refit_recomputes_the_loads_from_the_timeline_and_merges_none(profile_file, tmp_path):
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    load = p["points"]["columns"].index("load")
    for r in p["points"]["rows"]:
        r[load] = 0.5  # as another version's load constants would have left them
    path = tmp_path / "stale.json"
    path.write_text(json.dumps(p))
    one = refit([str(path)], "one")
    fresh = json.loads(profile_file.read_text())["points"]["rows"]
    got = one["points"]["columns"].index("load")
    assert [r[got] for r in one["points"]["rows"]] == pytest.approx([r[load] for r in fresh],
                                                                     abs=1e-4)  # fmt: skip
    assert "timeline" in one and "load_model" in one
    # a calibration from before the load model (no loads, no timeline) merged in: no load model
    cols = p["points"]["columns"]
    keep = [i for i, c in enumerate(cols) if c not in ("load", "device_start_s")]
    old = dict(p, points={"columns": [cols[i] for i in keep],
                          "rows": [[r[i] for i in keep] for r in p["points"]["rows"]]})  # fmt: skip
    old.pop("timeline")
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    two = refit([str(profile_file), str(old_path)], "two")
    assert "load_model" not in two and "timeline" not in two
    assert "load" not in two["points"]["columns"]


def test_refit_refuses_profiles_of_two_models(profile_file, tmp_path):
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    p["model"]["args"]["num_layers"] += 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps(p))
    with pytest.raises(ConfigError, match="another model"):
        refit([str(profile_file), str(other)])


def test_a_run_says_which_steps_were_beyond_what_the_profile_measured(compose_cfg, profile_file,
                                                                       capfd):  # fmt: skip
    inside = _sim(compose_cfg, profile_file).summary["sim_profile_range"]
    assert inside["num_steps"] > 0 and inside["num_beyond"] == 0
    assert "beyond what the profile measured" not in capfd.readouterr().err
    # whole prompts of up to 3,500 tokens in one step: the calibration's steps (budget 2048)
    # held at most 2,048
    long = _sim(compose_cfg, profile_file, "workload.prompt_len.mean=3000",
                "workload.prompt_len.max=3500", "budget.max_num_batched_tokens=4096").summary  # fmt: skip
    r = long["sim_profile_range"]
    measured = r["measured_max"]["prefill_tokens"]
    assert measured == 2048 and r["beyond"]["prefill_tokens"] > 0
    assert 0 < r["num_beyond"] <= r["num_steps"]
    err = capfd.readouterr().err
    assert f"engine=sim: {r['num_beyond']:,} of {r['num_steps']:,} steps" in err
    assert f"prefill_tokens > {measured:,.0f}: {r['beyond']['prefill_tokens']:,}" in err


def test_refit_takes_calibrations_measured_alike_only(profile_file, tmp_path):
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    cols = p["points"]["columns"]
    keep = [i for i, c in enumerate(cols) if not c.startswith("host_")]
    bare = dict(p, points={"columns": [cols[i] for i in keep],
                           "rows": [[r[i] for i in keep] for r in p["points"]["rows"]]})  # fmt: skip
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    for paths in ([profile_file, tmp_path / "bare.json"], [tmp_path / "bare.json", profile_file]):
        with pytest.raises(ConfigError, match="host"):
            refit([str(x) for x in paths])
    other = dict(p, settings={**p["settings"], "async_scheduling": True})
    (tmp_path / "pipelined.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="async_scheduling"):
        refit([str(profile_file), str(tmp_path / "pipelined.json")])
    # a refit's models are its own fit, none copied from the first file
    only_bare = refit([str(tmp_path / "bare.json")])
    assert "host_model" not in only_bare


def test_refit_takes_the_next_steps_swap_out_of_older_host_points(profile_file, tmp_path):
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    assert p["settings"]["host_after_excludes_swaps"]
    cols = p["points"]["columns"]
    after, swap = cols.index("host_after_s"), cols.index("swap_time_s")
    rows = p["points"]["rows"]
    old = [list(r) for r in rows]  # as measured before: the next step's swap inside
    for r, nxt in zip(old, rows[1:], strict=False):
        if r[after] is not None:
            r[after] += nxt[swap]
    del p["settings"]["host_after_excludes_swaps"]
    p["points"]["rows"] = old
    (tmp_path / "old.json").write_text(json.dumps(p))
    fixed = refit([str(tmp_path / "old.json")])
    assert "host_after_s" in fixed["refit"]["derived_features"]
    c = fixed["points"]["columns"]
    got = [r[c.index("host_after_s")] for r in fixed["points"]["rows"]]
    want = [r[after] for r in rows]
    assert any(nxt[swap] > 0 for nxt in rows[1:])
    assert got == pytest.approx(want)


def test_refit_derives_the_split_kernels_tail_for_older_cuda_points(profile_file, tmp_path):
    """A cuda calibration measured before decode_tail_ctx: the refit derives it from the split
    rule of a calibration of this version in the merge, and refuses without one."""
    from harness.refit import refit
    from kernels.decode_splits import decode_num_splits

    p = json.loads(profile_file.read_text())
    buckets = [1, 2, 4, 8, 16, 32, 64]
    split = {"num_sms": 2, "num_kv_heads": 2, "graph_bound": 4096}
    new = dict(p, settings={**p["settings"], "kind": "cuda", "cuda_graphs": True,
                            "decode_buckets": buckets, "decode_split": split})  # fmt: skip
    cols = p["points"]["columns"]
    drop = cols.index("decode_tail_ctx")
    old = dict(new, settings={k: v for k, v in new["settings"].items() if k != "decode_split"},
               points={"columns": cols[:drop] + cols[drop + 1 :],
                       "rows": [r[:drop] + r[drop + 1 :] for r in p["points"]["rows"]]})  # fmt: skip
    (tmp_path / "new.json").write_text(json.dumps(new))
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="decode_split"):
        refit([str(tmp_path / "old.json")])
    merged = refit([str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    assert merged["refit"]["derived_features"] == ["decode_tail_ctx"]
    assert merged["settings"]["decode_split"] == split
    # the Triton attention skips masked scores: no cost for the dense ones (prefill_qk)
    from harness.sim_model import FEATURES

    qk = FEATURES.index("prefill_qk")
    assert merged["step_model"]["unused"] == ["prefill_qk"]
    assert merged["step_model"]["coef"][qk] == 0.0
    cpu = refit([str(profile_file)])
    assert cpu["step_model"]["unused"] == [] and cpu["settings"]["decode_split"] is None
    c = merged["points"]["columns"]
    n = len(p["points"]["rows"])
    rows = [dict(zip(c, r, strict=True)) for r in merged["points"]["rows"][:n]]
    tails = 0
    for r in rows:
        # by hand: a decode-only step replays its bucket's graph (bound 4096: 16 splits at
        # most), a mixed step runs its decode rows with their longest context as the bound;
        # the even share of 2 SMs x 2 programs is the rows' context x 2 KV heads / 4
        want = 0.0
        if r["decode_max_ctx"]:
            graph = not r["prefill"]
            seen = r["decode_rows"] if graph else r["mixed_decode"]
            bound = 4096 if graph else r["decode_max_ctx"]
            splits = decode_num_splits(int(seen), 2, int(bound), 2)
            want = max(0.0, r["decode_max_ctx"] / splits - r["decode_ctx"] * 2 / 4)
        assert r["decode_tail_ctx"] == pytest.approx(want)
        tails += want > 0
    assert tails > 0  # some steps have a tail (and every one was checked above)


def test_refit_refuses_calibrations_of_two_split_rules(profile_file, tmp_path):
    """Two calibrations whose decode kernel split differently (another graph bound: another
    max_model_len) cannot share one decode_tail_ctx."""
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    paths = []
    for bound in (4096, 2048):
        split = {"num_sms": 2, "num_kv_heads": 2, "graph_bound": bound}
        q = dict(p, settings={**p["settings"], "kind": "cuda", "decode_split": split})
        paths.append(tmp_path / f"bound{bound}.json")
        paths[-1].write_text(json.dumps(q))
    with pytest.raises(ConfigError, match="decode_split"):
        refit([str(x) for x in paths])
    assert refit([str(paths[0]), str(paths[0])])["settings"]["decode_split"]["graph_bound"] == 4096


def test_refit_keeps_only_the_unchanged_paths_of_calibrations_without_piecewise_graphs(
    profile_file, tmp_path
):
    """Merged with a calibration measured with piecewise graphs, an older one keeps its
    decode-graph steps and its eager steps beyond the largest bucket only: the others ran a
    path the graphs change (eager launches), so their times are not the new engine's."""
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    cols = p["points"]["columns"]
    eager, tokens = cols.index("host_eager"), cols.index("host_tokens")
    rows = p["points"]["rows"]
    top = 256
    assert any(r[tokens] <= top for r in rows) and any(r[tokens] > top for r in rows)
    pieces = [8, *range(16, top + 1, 16)]
    new = dict(p, settings={**p["settings"], "piecewise_buckets": pieces})
    old = json.loads(profile_file.read_text())  # as measured before: no piecewise columns
    keep = [i for i, c in enumerate(cols) if c not in ("host_piecewise", "host_piece_mixed")]
    old["points"] = {"columns": [cols[i] for i in keep],
                     "rows": [[r[i] for i in keep] for r in rows]}  # fmt: skip
    del old["settings"]["piecewise_buckets"]
    (tmp_path / "new.json").write_text(json.dumps(new))
    (tmp_path / "old.json").write_text(json.dumps(old))
    merged = refit([str(tmp_path / "new.json"), str(tmp_path / "old.json")])
    kept = sum(1 for r in rows if not r[eager] or r[tokens] > top)
    assert merged["refit"]["dropped_points"] == {"old.json": len(rows) - kept}
    assert len(merged["points"]["rows"]) == len(rows) + kept
    assert merged["settings"]["piecewise_buckets"] == pieces
    assert "host_piecewise" in merged["refit"]["derived_features"]
    # points recorded before piece_mixed: derived (0: that calibration replayed no pieces)
    assert "host_piece_mixed" in merged["refit"]["derived_features"]
    # alone, or among calibrations all without piecewise graphs, nothing is dropped
    assert refit([str(tmp_path / "old.json")])["refit"]["dropped_points"] == {}
    # calibrations with piecewise graphs of two extents do not merge
    other = dict(new, settings={**new["settings"], "piecewise_buckets": pieces[:-1]})
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="piecewise_max_tokens"):
        refit([str(tmp_path / "new.json"), str(tmp_path / "other.json")])


def test_refit_drops_the_piecewise_steps_of_an_older_piecewise_engine(profile_file, tmp_path):
    """Two calibrations with the same piecewise buckets but different piecewise engines
    (`settings.piecewise_version`: how the step between the pieces is launched): the older
    one's piece-replayed steps measured another host path and are dropped; its decode-graph
    and eager steps are kept. The first calibration names the engine of the profile."""
    from harness.executors.cuda_graphs import PIECEWISE_VERSION
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    cols = p["points"]["columns"]
    piece, mixed, pm = (cols.index(c) for c in ("host_piecewise", "host_mixed",
                                                "host_piece_mixed"))  # fmt: skip
    top = 256
    pieces = [8, *range(16, top + 1, 16)]
    # the cpu profile replays no pieces: mark those a cuda run with these buckets would have
    eager, tokens = cols.index("host_eager"), cols.index("host_tokens")
    rows = []
    for r in p["points"]["rows"]:
        r = list(r)
        r[piece] = float(bool(r[eager]) and r[tokens] <= top)
        r[pm], r[mixed] = r[mixed] * r[piece], r[mixed] * (1 - r[piece])
        rows.append(r)
    assert 0 < sum(r[piece] for r in rows) < len(rows) and any(r[pm] for r in rows)
    new = dict(p, points={"columns": cols, "rows": rows},
               settings={**p["settings"], "piecewise_buckets": pieces,
                         "piecewise_version": PIECEWISE_VERSION})  # fmt: skip
    # an older engine's, recorded before piece_mixed (its mixed: any mixed step)
    keep = [i for i, c in enumerate(cols) if c != "host_piece_mixed"]
    old_rows = [[r[mixed] + r[pm] if i == mixed else r[i] for i in keep] for r in rows]
    old = dict(p, points={"columns": [cols[i] for i in keep], "rows": old_rows},
               settings={**p["settings"], "piecewise_buckets": pieces})  # fmt: skip
    for name, prof in (("new.json", new), ("old.json", old)):
        (tmp_path / name).write_text(json.dumps(prof))
    merged = refit([str(tmp_path / "new.json"), str(tmp_path / "old.json")])
    replayed = sum(1 for r in rows if r[piece])
    host = ("host_piecewise", "host_mixed", "host_piece_mixed")

    def host_of(prof, n):
        c = [prof["points"]["columns"].index(h) for h in host]
        return [[r[i] for i in c] for r in prof["points"]["rows"][:n]]

    assert host_of(merged, len(rows)) == host_of(new, len(rows))
    # the other way round the old engine's points are kept, their mixed moved to piece_mixed
    assert merged["refit"]["dropped_points"] == {"old.json": replayed}
    assert len(merged["points"]["rows"]) == 2 * len(rows) - replayed
    assert merged["settings"]["piecewise_version"] == PIECEWISE_VERSION
    # the other way round the profile is the older engine's: the newer one's pieces go
    older = refit([str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    assert older["refit"]["dropped_points"] == {"new.json": replayed}
    assert host_of(older, len(rows)) == host_of(new, len(rows))
    assert older["settings"].get("piecewise_version", 1) == 1
    # one engine: nothing dropped
    assert refit([str(tmp_path / "new.json")] * 2)["refit"]["dropped_points"] == {}


def test_the_simulator_sizes_the_piecewise_buckets_as_the_cuda_executor_would(
    compose_cfg, profile_file, tmp_path
):
    from harness.executors.cuda_graphs import piece_sizes

    p = json.loads(profile_file.read_text())
    cuda = dict(p, settings={**p["settings"], "cuda_graphs": True,
                             "piecewise_buckets": piece_sizes(1024)})  # fmt: skip
    path = tmp_path / "cuda.json"
    path.write_text(json.dumps(cuda))

    def pieces(*extra):
        cfg = compose_cfg("engine=sim", f"engine.profile={path}", *QUIET, *WORKLOAD, *extra)
        executor = build_executor(cfg)
        executor.start(cfg.budget, 512)
        return executor.step_cost.pieces

    assert pieces() == piece_sizes(512)  # no larger than a step of this run
    assert pieces("engine.piecewise_max_tokens=256") == piece_sizes(256)
    assert pieces("engine.piecewise_max_tokens=0") is None
    from harness.config import validate

    with pytest.raises(ConfigError, match="piecewise_max_tokens=-1"):
        validate(compose_cfg("engine.piecewise_max_tokens=-1"))


def test_refit_takes_the_next_steps_swap_out_before_it_drops_points(profile_file, tmp_path):
    """An older calibration (the next step's swap inside host_after_s) merged with one measured
    with piecewise graphs: each kept point loses its own next step's swap, even when that next
    step is one the merge drops."""
    from harness.refit import refit

    p = json.loads(profile_file.read_text())
    cols = p["points"]["columns"]
    after, swap = cols.index("host_after_s"), cols.index("swap_time_s")
    eager, tokens = cols.index("host_eager"), cols.index("host_tokens")
    rows = p["points"]["rows"]
    top = 256
    pieces = [8, *range(16, top + 1, 16)]
    new = dict(p, settings={**p["settings"], "piecewise_buckets": pieces})
    old = json.loads(profile_file.read_text())
    drop = cols.index("host_piecewise")
    measured = [list(r) for r in rows]  # as measured before: the next step's swap inside
    for r, nxt in zip(measured, rows[1:], strict=False):
        if r[after] is not None:
            r[after] += nxt[swap]
    old["points"] = {"columns": cols[:drop] + cols[drop + 1 :],
                     "rows": [r[:drop] + r[drop + 1 :] for r in measured]}  # fmt: skip
    del old["settings"]["piecewise_buckets"], old["settings"]["host_after_excludes_swaps"]
    (tmp_path / "new.json").write_text(json.dumps(new))
    (tmp_path / "old.json").write_text(json.dumps(old))
    merged = refit([str(tmp_path / "new.json"), str(tmp_path / "old.json")])
    kept = [r for r in rows if not r[eager] or r[tokens] > top]
    # a kept step whose next step is dropped and swapped: the case this guards
    nxt = {id(r): n for r, n in zip(rows, rows[1:], strict=False)}
    assert any(id(r) in nxt and nxt[id(r)][swap] > 0 and nxt[id(r)][eager]
               and nxt[id(r)][tokens] <= top for r in kept)  # fmt: skip
    c = merged["points"]["columns"]
    got = [r[c.index("host_after_s")] for r in merged["points"]["rows"][len(rows) :]]
    assert got == pytest.approx([r[after] for r in kept])


def test_a_profile_is_written_a_point_a_line_and_reads_back_the_same(profile_file):
    from harness.calibrate import profile_json

    p = json.loads(profile_file.read_text())
    text = profile_json(p)
    assert json.loads(text) == p
    assert len(text.splitlines()) < len(p["points"]["rows"]) + 400
