"""End to end: `run()` on the real config writes a complete, reconciling run folder."""

from __future__ import annotations

import json

import pandas as pd

from harness.metrics import summarize
from harness.run import run

SMALL = ("engine=cpu", "model=tiny", "engine.progress=false", "workload.num_requests=24",
         "workload.arrival.rate=200", "workload.prompt_len.max=256", "workload.output_len.max=24")  # fmt: skip


def test_run_folder_is_complete_and_reconciles(compose_cfg, tmp_path, capsys):
    cfg = compose_cfg(*SMALL, "budget.max_num_seqs=8", "budget.num_gpu_blocks=40")
    result = run(cfg, tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "summary.json", "requests.parquet", "steps.parquet"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    summary = json.loads((tmp_path / "summary.json").read_text())
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    steps = pd.read_parquet(tmp_path / "steps.parquet")
    assert len(requests) == 24 == summary["num_requests"]
    assert set(requests["status"]) <= {"finished", "rejected"}
    assert (requests.loc[requests.status == "rejected", "reason"] != "").all()
    n = summary["num_finished"] + summary["num_rejected"] + summary["num_aborted"]
    assert n == summary["num_requests"] and summary["complete"]
    assert summary["num_steps"] == len(steps) > 0
    assert (steps["num_prefill_tokens"] + steps["num_decode_tokens"] <= 2048).all()
    assert (steps["num_kv_blocks_used"] <= 40).all()
    # The summary on disk is exactly what the records give.
    again = summarize(
        requests,
        steps,
        {"ttft_s": 2.0, "tpot_s": 0.1},
        num_gpu_blocks=40,
        max_num_batched_tokens=2048,
        workload_fingerprint=summary["workload_fingerprint"],
        workload_stats=result.resolved["workload_stats"],
    )
    assert again == summary
    done = requests[requests.status == "finished"]
    assert (done["output_tokens"] == done["max_output_tokens"]).all()
    assert result.summary == summary
    out = capsys.readouterr().out
    assert "TTFT" in out and "P99" in out and "output tok/s" in out
