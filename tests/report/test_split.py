"""`--by tenant|priority`: comparison rows split by a column of requests.parquet, and the
fairness column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.report import comparison, load_runs, main, split_runs, to_markdown

from .runs import make_run


def _tag(folder: Path) -> None:
    """Give a fake run's requests tenants (every third request is B's) and priorities."""
    path = folder / "requests.parquet"
    requests = pd.read_parquet(path)
    requests["tenant"] = ["B" if i % 3 == 0 else "A" for i in range(len(requests))]
    requests["priority"] = [i % 2 for i in range(len(requests))]
    requests.to_parquet(path)


@pytest.fixture
def tenants(tmp_path):
    """fast (tokens every 10 ms) serves all 12; slow (50 ms) rejects request 3, one of B's."""
    make_run(tmp_path / "fast", "fast", 256, 0.01)
    make_run(tmp_path / "slow", "slow", 256, 0.05, statuses={3: "rejected"})
    for name in ("fast", "slow"):
        _tag(tmp_path / name)
    return tmp_path


def test_split_rows_are_recomputed_from_the_records(tenants):
    df = load_runs([tenants])
    split = split_runs(df, "tenant")
    assert sorted(zip(split["policy"], split["tenant"], split["num_finished"], strict=True)) == [
        ("fast", "A", 8), ("fast", "B", 4), ("slow", "A", 8), ("slow", "B", 3),
    ]  # fmt: skip
    fast = split[split["policy"] == "fast"].set_index("tenant")
    duration = df.loc[df["policy"] == "fast", "duration_s"].item()
    assert fast.loc["A", "output_throughput_tok_s"] == pytest.approx(8 * 8 / duration)
    assert fast.loc["B", "tpot_s.p99"] == pytest.approx(0.01)
    # 32 prompt + 8 output tokens a request: A 8 of 12 requests' service, B 4
    assert fast.loc["A", "service_share"] == pytest.approx(2 / 3)
    assert fast["busy_share"].isna().all()  # a run-wide figure is not a tenant's


def test_split_ranks_each_tenant_apart_and_never_crowns_fewer_served(tenants):
    table = comparison(split_runs(load_runs([tenants]), "tenant"), "tenant").set_index(
        ["policy", "tenant"]
    )
    assert table.loc[("slow", "B"), "served_fewer"]  # 3/4 of B's requests
    assert table.loc[("slow", "B"), "best_in"] == ""
    assert not table.loc[("slow", "A"), "served_fewer"]  # A's 8 were all served by both
    assert "p99_tpot_ms" in table.loc[("fast", "A"), "best_in"].split(",")
    assert table.loc[("fast", "B"), "served"] == "4/4"
    assert table.loc[("fast", "B"), "p99_tpot_ms"] == pytest.approx(10.0)


def test_cli_by_priority_writes_the_split_and_default_is_unchanged(tenants, capsys):
    main([str(tenants), "-o", str(tenants / "by"), "--by", "priority", "--max-timelines", "0"])
    report = pd.read_csv(tenants / "by" / "report.csv")
    assert sorted(zip(report["policy"], report["priority"], strict=True)) == [
        ("fast", 0), ("fast", 1), ("slow", 0), ("slow", 1),
    ]  # fmt: skip
    assert "by priority" in (tenants / "by" / "report.md").read_text()
    main([str(tenants), "-o", str(tenants / "whole"), "--max-timelines", "0"])
    whole = pd.read_csv(tenants / "whole" / "report.csv")
    assert len(whole) == 2 and "priority" not in whole.columns


def test_fairness_column_only_where_a_run_has_it(tmp_path):
    make_run(tmp_path / "a", "fcfs", 256, 0.01, summary={"fairness_jain": 0.8})
    make_run(tmp_path / "b", "vtc", 256, 0.01, summary={"fairness_jain": 0.99})
    md = to_markdown(comparison(load_runs([tmp_path])))
    assert "fairness (Jain)" in md.splitlines()[0] and "| 0.8 |" in md
    assert "**0.99**" not in md  # shown, never ranked
    make_run(tmp_path / "c" / "x", "fcfs", 256, 0.01)
    assert "fairness" not in to_markdown(comparison(load_runs([tmp_path / "c"])))


def test_a_run_without_tenants_has_no_fairness_index(tmp_path):
    make_run(tmp_path / "r", "fcfs", 256, 0.01)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "fairness_jain" in summary and summary["fairness_jain"] is None  # no tenants
