"""`python -m harness.report` on run folders written by the real result writer."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.report import SkippedRun, comparison, load_runs, main, to_markdown

from .runs import make_run


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
