"""`python -m harness.report` on run folders written by the real result writer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.loggers.local import write_results
from harness.metrics import summarize
from harness.report import SkippedRun, comparison, load_runs, main, to_markdown


def make_frames(num_requests: int, gap_s: float, seed: int = 0):
    """Requests (and steps) of a fake run whose tokens come every `gap_s` seconds."""
    rng = np.random.default_rng(seed)
    rows, steps = [], []
    for i in range(num_requests):
        arrival = 0.05 * i
        ttft = rng.uniform(0.01, 0.2) * gap_s * 100
        times = arrival + ttft + gap_s * np.arange(8)
        rows.append(
            {
                "request_id": f"r{i}", "arrival_s": arrival, "prompt_tokens": 32,
                "output_tokens": 8, "max_output_tokens": 8, "status": "finished", "reason": None,
                "first_scheduled_s": arrival + ttft / 2, "first_token_s": times[0],
                "finish_s": times[-1], "ttft_s": ttft, "tpot_s": gap_s,
                "e2e_s": times[-1] - arrival, "queue_wait_s": ttft / 2, "num_preemptions": i % 2,
                "num_swaps": 0, "token_times_s": list(times), "output_ids": [1] * 8,
            }
        )  # fmt: skip
    for s in range(20):
        steps.append(
            {
                "step": s, "start_s": 0.01 * s, "duration_s": 0.01, "num_prefill_tokens": 16,
                "num_decode_tokens": 4, "num_padding_tokens": 0, "num_running": 4,
                "num_waiting": 20 - s, "num_swapped": 0, "num_kv_blocks_used": 10 + s,
                "num_preempted": int(s == 5), "num_swapped_out_blocks": 0,
                "num_swapped_in_blocks": 0,
            }
        )  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(steps)


def make_run(folder, policy: str, budget: int, gap_s: float, rate: float = 10.0):
    requests, steps = make_frames(12, gap_s)
    config = {
        "policy": {"_target_": f"policies.{policy}.X"},
        "workload": {
            "_target_": "workloads.synthetic.SyntheticWorkload",
            "arrival": {"rate": rate},
        },
        "budget": {"max_num_batched_tokens": budget, "max_num_seqs": 8},
        "slo": {"ttft_s": 2.0, "tpot_s": 0.1, "e2e_s": None},
        "resolved": {"policy_name": policy, "workload_name": "bursty", "num_gpu_blocks": 64},
    }
    summary = summarize(requests, steps, config["slo"])
    write_results(folder, config, summary, requests, steps)
    return summary


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun_x"
    for i, (policy, budget, gap) in enumerate(
        [("fcfs", 256, 0.02), ("fcfs", 1024, 0.01), ("chunked_prefill", 256, 0.005),
         ("chunked_prefill", 1024, 0.03)]
    ):  # fmt: skip
        make_run(root / f"{i}_{policy}", policy, budget, gap)
    return root


def test_gathers_every_run_with_config_and_summary_columns(sweep):
    df = load_runs([sweep])
    assert len(df) == 4
    assert {"policy", "budget", "workload", "budget.max_num_seqs", "ttft_s.p99"} <= set(df.columns)
    assert sorted(df["policy"].unique()) == ["chunked_prefill", "fcfs"]


def test_best_values_are_marked(sweep):
    table = comparison(load_runs([sweep]))
    fastest = table.loc[table["p99_tpot_ms"].idxmin()]
    assert (fastest["policy"], fastest["budget"]) == ("chunked_prefill", 256)
    assert "p99_tpot_ms" in fastest["best_in"].split(",")
    assert fastest["p99_tpot_ms"] == pytest.approx(5.0)
    md = to_markdown(table)
    assert f"**{fastest['p99_tpot_ms']:.3g}**" in md
    assert "preemptions" in md.splitlines()[0]


def test_varying_config_becomes_a_row_key(tmp_path):
    for rate in (5.0, 20.0):
        make_run(tmp_path / f"r{rate}", "fcfs", 512, 0.01, rate=rate)
    table = comparison(load_runs([tmp_path]))
    assert "workload.arrival.rate" in table.columns
    assert table["best_in"].eq("").all()  # different loads are not compared with each other


def test_broken_and_partial_folders_are_skipped_with_a_warning(sweep, tmp_path, capsys):
    (sweep / "9_partial").mkdir()
    (sweep / "9_partial" / "config.yaml").write_text("seed: 0\n")
    (sweep / "8_bad").mkdir()
    (sweep / "8_bad" / "config.yaml").write_text("seed: 0\n")
    (sweep / "8_bad" / "summary.json").write_text("{not json")
    (sweep / "1_fcfs" / "requests.parquet").write_bytes(b"garbage")  # plots skip it too
    out = tmp_path / "report"
    with pytest.warns(SkippedRun) as record:
        load_runs([sweep])
    messages = " ".join(str(w.message) for w in record)
    assert "9_partial" in messages and "8_bad" in messages
    main([str(sweep), "-o", str(out)])
    assert "9_partial" in capsys.readouterr().err
    assert len(pd.read_csv(out / "report.csv")) == 4


def test_cli_writes_markdown_csv_and_pngs(sweep, tmp_path):
    out = tmp_path / "report"
    main([str(sweep), "-o", str(out)])
    md = (out / "report.md").read_text()
    assert md.count("| fcfs |") == 2 and "P99 TTFT (ms)" in md
    csv = pd.read_csv(out / "report.csv")
    assert {"p99_ttft_ms", "p99_itl_ms", "goodput_req_s", "best_in", "run_dir"} <= set(csv.columns)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "pareto_bursty.png" in pngs
    assert any(p.startswith("cdf_") for p in pngs)
    assert sum(p.startswith("timeline_") for p in pngs) == 4
    for png in pngs:
        assert f"]({png})" in md
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((sweep / "0_fcfs" / "summary.json").read_text())["num_finished"] == 12
