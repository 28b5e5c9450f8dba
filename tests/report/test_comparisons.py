"""Comparisons never hide a rejection (issue 13, point 4): rejected and aborted counts are shown, a
run that served fewer requests is flagged and never best, CDFs cover every request of the
workload, and runs of different workloads (fingerprints) are never ranked together."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from harness.report import comparison, load_runs, main, to_markdown

from .runs import capture_figures, make_run

UTILISATION = ("busy_share", "useful_token_share", "kv_usage_mean", "kv_usage_peak")


def _row(table, policy: str):
    (index,) = table.index[table["policy"] == policy]
    return table.loc[index]


def _line(markdown: str, policy: str) -> str:
    (line,) = [ln for ln in markdown.splitlines() if ln.startswith(f"| {policy}")]
    return line


def test_rejected_and_aborted_counts_are_columns(tmp_path):
    make_run(tmp_path / "a", "fcfs", 256, 0.01, statuses={0: "rejected", 1: "rejected", 2: "aborted"})  # fmt: skip
    make_run(tmp_path / "b", "sjf", 256, 0.01)
    table = comparison(load_runs([tmp_path]))
    fcfs = _row(table, "fcfs")
    assert (fcfs["num_rejected"], fcfs["num_aborted"]) == (2, 1)
    assert (_row(table, "sjf")["num_rejected"], _row(table, "sjf")["num_aborted"]) == (0, 0)
    header = to_markdown(table).splitlines()[0]
    assert "rejected" in header and "aborted" in header


def test_a_run_that_served_fewer_is_flagged_and_never_best(tmp_path):
    # fcfs dropped two requests and is fastest on what it kept: the trap a table must not fall in.
    make_run(tmp_path / "a", "fcfs", 256, 0.001, statuses={3: "rejected", 7: "rejected"})
    make_run(tmp_path / "b", "chunked_prefill", 256, 0.01)
    make_run(tmp_path / "c", "sjf", 256, 0.02)
    table = comparison(load_runs([tmp_path]))
    fcfs, chunked = _row(table, "fcfs"), _row(table, "chunked_prefill")
    assert fcfs["p99_tpot_ms"] < chunked["p99_tpot_ms"]
    assert fcfs["output_throughput_tok_s"] > chunked["output_throughput_tok_s"]
    assert bool(fcfs["served_fewer"]) and not bool(chunked["served_fewer"])
    assert fcfs["best_in"] == ""
    assert {"p99_tpot_ms", "output_throughput_tok_s"} <= set(chunked["best_in"].split(","))
    md = to_markdown(table)
    assert "**" not in _line(md, "fcfs") and "**" in _line(md, "chunked_prefill")
    assert "served 10/12" in md


def test_cdfs_count_unserved_requests_at_infinity(tmp_path, monkeypatch):
    statuses = {0: "rejected", 1: "rejected", 2: "aborted"}  # 9 of 12 served
    make_run(tmp_path / "runs" / "a", "fcfs", 256, 0.01, statuses=statuses)
    make_run(tmp_path / "runs" / "b", "sjf", 256, 0.01)
    figures = capture_figures(monkeypatch)
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--max-timelines", "0"])
    (cdf,) = [fig for name, fig in figures if name.startswith("cdf")]
    for ax in cdf.axes:
        tops = {
            line.get_label().split()[0]: float(np.max(line.get_ydata()))
            for line in ax.get_lines()
            if not line.get_label().startswith("_")  # the dotted P99 guide
        }
        assert tops["fcfs"] == pytest.approx(9 / 12), ax.get_xlabel()
        assert tops["sjf"] == pytest.approx(1.0), ax.get_xlabel()


def test_different_fingerprints_are_warned_and_ranked_apart(tmp_path):
    # One workload name, two request sets (a trace edited between runs, say).
    make_run(tmp_path / "a", "fcfs", 256, 0.01, summary={"workload_fingerprint": "aaaa1111"})
    make_run(tmp_path / "b", "sjf", 256, 0.005, summary={"workload_fingerprint": "aaaa1111"})
    make_run(tmp_path / "c", "edf", 256, 0.02, summary={"workload_fingerprint": "bbbb2222"})
    make_run(tmp_path / "d", "vtc", 256, 0.001, summary={"workload_fingerprint": "bbbb2222"})
    with pytest.warns(UserWarning, match="fingerprint"):
        table = comparison(load_runs([tmp_path]))
    groups = {p: _row(table, p)["group"] for p in ("fcfs", "sjf", "edf", "vtc")}
    assert groups["fcfs"] == groups["sjf"] != groups["edf"] == groups["vtc"]
    best = {p for p in groups if "p99_tpot_ms" in _row(table, p)["best_in"].split(",")}
    assert best == {"sjf", "vtc"}  # each the best of its own workload, not one across both


def test_a_run_without_fingerprint_is_not_ranked_with_one_that_has_it(tmp_path):
    make_run(tmp_path / "old", "fcfs", 256, 0.01)  # written before fingerprints existed
    make_run(tmp_path / "new", "sjf", 256, 0.005, summary={"workload_fingerprint": "aaaa1111"})
    with pytest.warns(UserWarning, match="unknown"):
        table = comparison(load_runs([tmp_path]))
    assert table["best_in"].eq("").all()


def test_runs_of_one_workload_without_fingerprints_are_compared_without_warning(sweep):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = comparison(load_runs([sweep]))
    assert table["best_in"].ne("").any()


def test_utilisation_columns_are_shown_and_never_ranked(tmp_path):
    for name, gap, share in (("fcfs", 0.01, 0.9), ("sjf", 0.02, 0.4)):
        values = {k: share + i / 100 for i, k in enumerate(UTILISATION)}
        make_run(tmp_path / name, name, 256, gap, summary=values)
    table = comparison(load_runs([tmp_path]))
    assert _row(table, "fcfs")["busy_share"] == pytest.approx(0.9)
    assert _row(table, "sjf")["kv_usage_peak"] == pytest.approx(0.43)
    ranked = {c for cell in table["best_in"] for c in cell.split(",") if c}
    assert ranked and not ranked & set(UTILISATION)
    header = to_markdown(table).splitlines()[0]
    assert "busy" in header and "KV" in header


def test_a_null_budget_reads_the_resolved_budget(tmp_path):
    make_run(tmp_path / "a", "fcfs", None, 0.01, resolved={"max_num_batched_tokens": 2048})
    make_run(tmp_path / "b", "fcfs", 512, 0.01, resolved={"max_num_batched_tokens": 512})
    assert sorted(load_runs([tmp_path])["budget"]) == [512, 2048]


def test_prefix_cache_hit_rate_is_a_column_never_ranked(tmp_path):
    for name, rate in (("fcfs", 0.7), ("cache_aware", 0.91)):
        make_run(tmp_path / name, name, 256, 0.01, summary={"prefix_cache_hit_rate": rate})
    table = comparison(load_runs([tmp_path]))
    assert _row(table, "cache_aware")["prefix_cache_hit_rate"] == pytest.approx(0.91)
    ranked = {c for cell in table["best_in"] for c in cell.split(",") if c}
    assert "prefix_cache_hit_rate" not in ranked
    assert "prefix hit rate" in to_markdown(table).splitlines()[0]
