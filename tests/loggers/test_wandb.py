"""The W&B logger, checked by reading the offline run's own files (no mocks)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.loggers.wandb import WandbFailure, run_name
from harness.run import run

from .wandb_files import read_offline_run

SMALL = (
    "engine=cpu", "logger=wandb", "workload.num_requests=12", "workload.arrival.rate=200",
    "workload.output_len.min=2", "workload.output_len.max=6", "engine.progress=false",
    "logger.print_table=false", "budget.num_gpu_blocks=512", "budget.num_cpu_blocks=64",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _no_wandb_litter(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_env"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_offline_run_holds_config_steps_summary_requests_and_cdfs(compose_cfg, tmp_path):
    cfg = compose_cfg(*SMALL)
    out = tmp_path / "run"
    names = {"policy_name": "fcfs", "workload_name": "bursty", "sweep_name": "multirun_test"}
    result = run(cfg, out, names)

    # The local results are all there, as with logger=local.
    for name in ("config.yaml", "summary.json", "requests.parquet", "steps.parquet"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())

    wb = read_offline_run(out / "wandb")
    assert wb.run.display_name == "fcfs-b2048-bursty-r200"
    assert wb.run.run_group == "multirun_test"
    assert wb.config["budget"]["max_num_batched_tokens"] == 2048
    assert wb.config["resolved"]["policy_name"] == "fcfs"
    assert wb.exit_code == 0

    steps = [h for h in wb.history if "step/step" in h]
    assert len(steps) == len(result.steps) == summary["num_steps"]
    decode = sum(h["step/num_decode_tokens"] for h in steps)
    assert decode == result.steps["num_decode_tokens"].sum()
    for key in ("step/duration_s", "step/num_kv_blocks_used", "step/num_waiting"):
        assert key in steps[0]

    for key in ("ttft_s/p99", "tpot_s/p50", "itl_s/p999", "e2e_s/p90"):
        metric, pct = key.split("/")
        assert wb.summary[key] == pytest.approx(summary[metric][pct])
    assert wb.summary["goodput_req_s"] == pytest.approx(summary["goodput_req_s"])
    assert wb.summary["num_finished"] == 12

    table = wb.table("requests")
    assert len(table["data"]) == 12
    assert "ttft_s" in table["columns"] and "token_times_s" not in table["columns"]
    cdf = wb.table("cdf/ttft_s")
    fractions = [row[1] for row in cdf["data"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_bad_key_warns_and_keeps_local_results(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "not-a-key")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: no network
    cfg = compose_cfg(*SMALL, "logger.mode=online", "logger.init_timeout_s=5")
    out = tmp_path / "run"
    with pytest.warns(WandbFailure, match="local results are kept"):
        result = run(cfg, out, {"policy_name": "fcfs", "workload_name": "bursty"})
    assert result.summary["num_finished"] == 12
    assert json.loads((out / "summary.json").read_text())["num_finished"] == 12
    assert len(pd.read_parquet(out / "requests.parquet")) == 12


def test_run_name_from_policy_budget_workload():
    config = {
        "resolved": {"policy_name": "chunked_prefill", "workload_name": "poisson"},
        "budget": {"max_num_batched_tokens": 512},
        "workload": {"arrival": {"rate": 7.5}},
    }
    assert run_name(config) == "chunked_prefill-b512-poisson-r7.5"
    config = {
        "policy": {"_target_": "policies.fcfs.FcfsPolicy"},
        "workload": {"_target_": "workloads.trace.AzureTrace"},
        "budget": {"max_num_batched_tokens": 256},
    }
    assert run_name(config) == "FcfsPolicy-b256-AzureTrace"


def test_wandb_cdfs_count_unserved_requests():
    """W&B's CDFs use the report's definition: an unserved request sits at +inf, so a run that
    served 2 of 4 requests tops out at 0.5 (before, W&B's CDFs counted finished requests only)."""
    from harness.metrics import latency_cdf, requests_frame
    from harness.request import Request, RequestSpec, RequestStatus

    reqs = []
    for i, status in enumerate([RequestStatus.FINISHED] * 2 + [RequestStatus.REJECTED] * 2):
        r = Request(RequestSpec(f"r{i}", 0.0, (1, 2, 3), 2), status)
        if status is RequestStatus.FINISHED:
            r.token_times_s, r.output_ids = [0.1 * (i + 1), 0.2 * (i + 1)], [0, 0]
        reqs.append(r)
    values, fractions = latency_cdf(requests_frame(reqs), "ttft_s")
    assert list(values) == pytest.approx([0.1, 0.2]) and fractions[-1] == pytest.approx(0.5)
