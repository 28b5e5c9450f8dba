"""scripts/compare_policies.py never hides a rejection: rejected and aborted columns, a run that
served fewer requests flagged and never in bold (nor its --baseline ratio unflagged), and no
ratio across different workloads (fingerprints)."""

from __future__ import annotations

import sys

import pytest

from ..report.runs import make_summary
from . import load_script

DROPPED = {3: "rejected", 7: "rejected", 9: "aborted"}  # 9 of 12 served


@pytest.fixture
def script():
    return load_script("scripts/compare_policies.py")


def compare(script, monkeypatch, capsys, summaries: dict, *options: str) -> str:
    """The script's output for these summaries (one per `--policies` entry), nothing run."""
    monkeypatch.setattr(script, "run_policy", lambda entry, overrides: summaries[entry])
    argv = ["compare_policies.py", "--policies", ",".join(summaries), *options]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    return capsys.readouterr().out


def cells(text: str, policy: str) -> list[str]:
    """The cells of the first table row of `policy` in `text`."""
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {policy}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_rejected_and_aborted_are_columns(script, monkeypatch, capsys):
    summaries = {"fcfs": make_summary(0.01, DROPPED), "sjf": make_summary(0.01)}
    out = compare(script, monkeypatch, capsys, summaries)
    header = cells(out, "policy")
    row = dict(zip(header, cells(out, "fcfs"), strict=True))
    assert (row["finished"], row["rejected"], row["aborted"]) == ("9/12", "2", "1")
    assert dict(zip(header, cells(out, "sjf"), strict=True))["rejected"] == "0"


def test_a_run_that_served_fewer_is_flagged_and_never_in_bold(script, monkeypatch, capsys):
    summaries = {
        "fcfs": make_summary(0.001, DROPPED),  # fastest on the requests it kept
        "sjf": make_summary(0.01),
        "edf": make_summary(0.02),
    }
    out = compare(script, monkeypatch, capsys, summaries)
    assert "†" in cells(out, "fcfs")[0] and "**" not in " ".join(cells(out, "fcfs"))
    assert "**" in " ".join(cells(out, "sjf"))
    assert "served 9/12" in out


def test_baseline_ratios_flag_a_run_that_served_fewer(script, monkeypatch, capsys):
    summaries = {"fcfs": make_summary(0.001, DROPPED), "sjf": make_summary(0.01)}
    out = compare(script, monkeypatch, capsys, summaries, "--baseline", "sjf")
    ratios = out.split("throughput / sjf")[1]
    assert "†" in cells(ratios, "fcfs")[0]
    assert "9/12" in " ".join(cells(ratios, "fcfs"))


def test_no_ratio_and_no_bold_across_different_workloads(script, monkeypatch, capsys):
    summaries = {
        "fcfs": make_summary(0.005, workload_fingerprint="aaaa1111"),
        "sjf": make_summary(0.01, workload_fingerprint="bbbb2222"),
    }
    out = compare(script, monkeypatch, capsys, summaries, "--baseline", "sjf")
    assert "WARNING" in out and "fingerprint" in out
    table, ratios = out.split("throughput / sjf")
    assert "**" not in table
    fcfs = " ".join(cells(ratios, "fcfs"))
    assert "different workload" in fcfs and "x" not in fcfs.replace("different", "")


def test_real_runs_show_a_rejection(script, monkeypatch, capsys):
    # 8 KV blocks of 16 tokens hold no request of 129+ tokens: those are rejected at arrival.
    overrides = [
        "engine=cpu", "model=tiny", "workload.num_requests=6", "workload.arrival.rate=200",
        "workload.prompt_len.max=200", "workload.output_len.min=2", "workload.output_len.max=8", "budget.num_cpu_blocks=16", "budget.max_num_seqs=8",
    ]  # fmt: skip
    monkeypatch.setattr(
        sys, "argv", ["compare_policies.py", "--policies", "fcfs,fcfs:budget.num_gpu_blocks=8",
                      "--baseline", "fcfs", *overrides],
    )  # fmt: skip
    script.main()
    out = capsys.readouterr().out
    header = cells(out, "policy")
    small = dict(zip(header, cells(out, "fcfs:budget.num_gpu_blocks=8"), strict=True))
    assert int(small["rejected"]) > 0 and "†" in small["policy"]


def test_runs_with_different_kv_caches_are_called_out(script, monkeypatch, capsys):
    """In one process a run sized its KV cache from what an earlier run left on the GPU: the
    comparison must show each run's cache and warn when they differ."""
    summaries = {"fcfs": make_summary(0.01), "chunked_prefill": make_summary(0.01)}
    summaries["fcfs"]["num_gpu_blocks"] = 28000
    summaries["chunked_prefill"]["num_gpu_blocks"] = 9000
    out = compare(script, monkeypatch, capsys, summaries)
    header = cells(out, "policy")
    assert dict(zip(header, cells(out, "fcfs"), strict=True))["kv_blocks"] == "28000"
    assert "WARNING: the runs had different KV caches" in out
    summaries["chunked_prefill"]["num_gpu_blocks"] = 27800  # a larger budget's activations
    assert "different KV caches" not in compare(script, monkeypatch, capsys, summaries)
