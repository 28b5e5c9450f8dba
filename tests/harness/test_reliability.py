"""Reliability: accounting, interruption, faults, overload, determinism, valid decisions."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import harness.executors.model_runner as model_runner
from harness.decisions import check_decision as engine_check
from harness.run import run
from policies.base import RequestView, SchedulerView
from tests.conftest import CONF_DIR

SMALL = ("engine=cpu", "model=tiny", "engine.progress=false", "logger=local",
         "workload.prompt_len.max=256", "workload.output_len.max=32")  # fmt: skip


def _accounting_holds(folder: Path, n: int) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    requests = pd.read_parquet(folder / "requests.parquet")
    pd.read_parquet(folder / "steps.parquet")
    assert len(requests) == n == summary["num_requests"]
    counted = summary["num_finished"] + summary["num_rejected"] + summary["num_aborted"]
    assert counted == n
    assert set(requests["status"]) <= {"finished", "rejected", "aborted"}
    assert not list(folder.glob(".*.tmp"))
    return summary


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_writes_partial_results_and_exits_nonzero(tmp_path, sig):
    log = tmp_path.parent / f"{tmp_path.name}.stderr"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", *SMALL, "workload.num_requests=400",
             "workload.arrival.rate=20", "engine.progress=true", f"hydra.run.dir={tmp_path}"],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
        # Wait until serving has started (the progress log's first line), however long the
        # start-up takes on a loaded machine, then let a few requests finish.
        deadline = time.time() + 180
        while "serving 400 requests" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        proc.send_signal(sig)
        proc.communicate(timeout=120)
    err = log.read_text()
    assert proc.returncode == 128 + sig, err  # 130 for SIGINT, 143 for SIGTERM
    assert "interrupted at step" in err
    summary = _accounting_holds(tmp_path, 400)
    assert summary["complete"] is False and summary["num_aborted"] > 0
    assert summary["num_finished"] > 0


def test_device_fault_mid_step_keeps_partial_results(compose_cfg, tmp_path, monkeypatch):
    real = model_runner.ModelRunner.launch
    calls = {"n": 0}

    def flaky(self, batch, feed_from=None):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        return real(self, batch, feed_from)

    monkeypatch.setattr(model_runner.ModelRunner, "launch", flaky)
    cfg = compose_cfg(*SMALL, "workload.num_requests=30", "workload.arrival.rate=300")
    result = run(cfg, tmp_path)
    assert result.summary["complete"] is False
    assert "step 5 failed: RuntimeError: CUDA error" in result.summary["error"]
    summary = _accounting_holds(tmp_path, 30)
    assert summary["num_aborted"] > 0


def test_overload_with_small_kv_completes_in_bounded_memory(compose_cfg):
    """Bursty arrivals at ~5x what the engine serves, 64 KV blocks: queueing and admission hold."""
    cfg = compose_cfg(
        *SMALL, "logger=none", "engine.clock=virtual", "workload.num_requests=300",
        "workload.arrival.rate=500", "budget.num_gpu_blocks=64", "budget.max_num_seqs=16",
    )  # fmt: skip
    result = run(cfg, None)
    s = result.summary
    assert s["complete"] and s["num_finished"] + s["num_rejected"] == 300
    assert s["num_finished"] > 250
    assert (result.steps["num_kv_blocks_used"] <= 64).all()
    assert result.steps["num_waiting"].max() > 100  # really overloaded: a long queue formed
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the test process: {peak_mb:.0f} MB")
    assert peak_mb < 4096


def test_same_seed_same_schedule_and_tokens(compose_cfg):
    cfg = compose_cfg(*SMALL, "logger=none", "engine.clock=virtual", "workload.num_requests=40",
                      "workload.arrival.rate=100", "budget.num_gpu_blocks=48",
                      "budget.max_num_seqs=8")  # fmt: skip
    a, b = run(cfg, None), run(cfg, None)
    timing = ["host_time_s", "device_time_s"]
    pd.testing.assert_frame_equal(a.steps.drop(columns=timing), b.steps.drop(columns=timing))
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.summary["num_preemptions"] > 0  # the schedule exercised preemption too


# -- every policy's decisions are valid on random views ----------------------------------------

POLICY_FILES = sorted((CONF_DIR / "policy").glob("*.yaml"))


@st.composite
def views(draw, fresh: bool = False):
    """Random consistent views; `fresh`: nothing running or swapped (a policy's first step)."""
    block_size = draw(st.sampled_from([4, 16]))
    num_total = draw(st.integers(8, 200))

    def request(i, state):
        prompt = draw(st.integers(1, 300))
        out = draw(st.integers(0, 40)) if state != "waiting" else draw(st.integers(0, 5))
        tokens = prompt + out
        if state == "running":
            computed = (
                draw(st.integers(max(0, tokens - 40), tokens - 1))
                if out
                else draw(st.integers(0, prompt - 1))
            )
        else:
            computed = 0 if state == "waiting" else tokens - 1
        blocks = -(-computed // block_size)
        return RequestView(f"{state}{i}", float(draw(st.integers(0, 50))), draw(st.integers(0, 2)),
                           prompt, tokens, computed, out, out + draw(st.integers(1, 50)),
                           blocks, draw(st.integers(0, 3)))  # fmt: skip

    running = [request(i, "running") for i in range(0 if fresh else draw(st.integers(0, 12)))]
    used = sum(r.num_blocks for r in running)
    num_total = max(num_total, used)
    return SchedulerView(
        now_s=100.0,
        waiting=tuple(request(i, "waiting") for i in range(draw(st.integers(0, 12)))),
        running=tuple(running),
        swapped=tuple(request(i, "swapped") for i in range(0 if fresh else draw(st.integers(0, 4)))),
        num_free_blocks=num_total - used, num_total_blocks=num_total,
        num_free_cpu_blocks=draw(st.integers(0, 100)), watermark_blocks=draw(st.integers(0, 2)),
        block_size=block_size, max_num_batched_tokens=draw(st.sampled_from([16, 64, 512, 2048])),
        max_num_seqs=max(len(running), draw(st.integers(1, 16))), max_model_len=4096,
        max_num_prefill_tokens=draw(st.sampled_from([None, None, 8, 100])),
    )  # fmt: skip


def check_decision(view: SchedulerView, d, bounded_by_token_budget: bool = True) -> None:
    """The engine's rules, restated independently of engine.py. The token budget binds every
    step but one request's whole remaining computation run alone (a prompt longer than the
    budget under a policy that does not split prompts), and binds no static batch."""
    running = {r.request_id: r for r in view.running}
    waiting = {r.request_id: r for r in view.waiting}
    swapped = {r.request_id: r for r in view.swapped}
    assert set(d.preempt) <= set(running) and not set(d.preempt) & set(d.num_scheduled_tokens)
    assert set(d.swap_in) <= set(swapped)
    total = sum(d.num_scheduled_tokens.values()) + d.num_padding_tokens
    if bounded_by_token_budget and total > view.max_num_batched_tokens:
        ((rid, n),) = d.num_scheduled_tokens.items()  # alone: exactly one request
        r = running.get(rid) or waiting.get(rid) or swapped.get(rid)
        assert not d.padding and n == r.num_uncomputed_tokens > view.max_num_batched_tokens
    cap = view.max_num_prefill_tokens
    prefill = {rid: n for rid, n in d.num_scheduled_tokens.items()
               if not (n == 1 and (running.get(rid) or waiting.get(rid) or swapped.get(rid)).is_decode)}  # fmt: skip
    if bounded_by_token_budget and cap is not None and sum(prefill.values()) > cap:
        ((rid, n),) = prefill.items()  # the step's only prefill, whole
        r = running.get(rid) or waiting.get(rid) or swapped.get(rid)
        assert not d.padding and n == r.num_uncomputed_tokens > cap
    need, admitted = 0, 0
    for rid, n in d.num_scheduled_tokens.items():
        r = running.get(rid) or waiting.get(rid) or (swapped.get(rid) if rid in d.swap_in else None)
        assert r is not None, rid
        assert 1 <= n <= r.num_uncomputed_tokens
        admitted += rid in waiting
        need += max(0, -(-(r.num_computed_tokens + n) // view.block_size) - r.num_blocks)
    need += sum(swapped[rid].num_blocks for rid in d.swap_in)
    freed = sum(running[rid].num_blocks for rid in d.preempt)
    assert need <= view.num_free_blocks + freed
    assert len(running) - len(d.preempt) + len(d.swap_in) + admitted <= view.max_num_seqs


@pytest.mark.parametrize("policy_file", POLICY_FILES, ids=[p.stem for p in POLICY_FILES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_policy_decisions_are_valid_on_random_views(policy_file, data):
    policy = instantiate(OmegaConf.load(policy_file))
    # Static batching remembers the batch it started: a fresh instance can only face a view with
    # nothing in flight (it checks the running set against that memory and raises otherwise).
    view = data.draw(views(fresh=policy_file.stem == "static"))
    decision = policy.schedule(view)
    check_decision(view, decision, policy.bounded_by_token_budget)  # the rules, restated here
    engine_check(view, decision, policy.name, policy.bounded_by_token_budget)  # the engine's own


def test_an_interrupt_between_a_steps_booking_and_its_launch_record_loses_no_request(
    compose_cfg, monkeypatch
):
    """A signal lands between any two bytecodes. Here: after `_advance` took the step's
    finishing requests off the running queue, before the step joined the steps in flight. The
    run must still account for every request (finished, rejected or aborted)."""
    from harness.engine import Engine

    advance = Engine._advance

    def interrupted(self, scheduled):
        rows = advance(self, scheduled)
        if rows[1]:  # this step samples some request's last token: it left the running queue
            raise KeyboardInterrupt
        return rows

    monkeypatch.setattr(Engine, "_advance", interrupted)
    cfg = compose_cfg("engine=sim", "engine.progress=false", "logger=none", "workload=poisson",
                      "workload.num_requests=30", "workload.arrival.rate=20")  # fmt: skip
    result = run(cfg, None)
    s = result.summary
    assert not s["complete"] and "interrupted at step" in s["error"]
    assert s["num_finished"] + s["num_rejected"] + s["num_aborted"] == 30, s
    # no aborted request keeps a placeholder for a token that step never produced
    assert all(min(ids, default=0) >= 0 for ids in result.requests.output_ids)
    assert (result.requests.output_tokens == result.requests.token_times_s.map(len)).all()
