"""Capacity search cut short: an interrupted or incomplete probe is neither a pass nor a miss;
the search stops, exits non-zero and marks its output incomplete."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import harness.capacity as capacity
import harness.run
from policies.base import Decision
from policies.fcfs import FcfsPolicy
from tests.sweeps.test_capacity import SMALL


class FakeRun:
    """Stands in for `harness.run.run`: P99 TTFT is rate / 10 s, so under slo.ttft_s=2 a rate
    passes iff it is at most 20 req/s. `cut` {probe number: "interrupt" | "stall"} cuts that
    probe short: KeyboardInterrupt out of the run, or a run that ends incomplete."""

    def __init__(self, cut: dict[int, str] | None = None) -> None:
        self.cut = cut or {}
        self.cfgs = []

    def __call__(self, cfg, output_dir, names=None, specs=None, model=None):
        self.cfgs.append(cfg)
        what = self.cut.get(len(self.cfgs))
        if what == "interrupt":
            raise KeyboardInterrupt
        rate = cfg.workload.arrival.rate
        summary = {
            "num_requests": 8, "num_finished": 8 if what is None else 3, "complete": what is None,
            "error": "policy FcfsPolicy scheduled nothing at step 7 (injected)" if what else None,
            "ttft_s": {"p99": rate / 10}, "tpot_s": {"p99": 0.01}, "output_throughput_tok_s": 1.0,
        }  # fmt: skip
        return SimpleNamespace(summary=summary)


FAKE_ARGS = ("engine=cpu", "slo.ttft_s=2", "slo.tpot_s=1", "--low", "1", "--high", "64")
# real probes under an SLO no run meets: 400 req/s misses, and the second probe comes
MISSING_AT_400 = (*SMALL, "slo.ttft_s=1e-9", "--low", "50", "--high", "400")


def stopped_search(argv) -> int:
    """Run the search; the exit status it stopped with (any other outcome fails the test)."""
    try:
        capacity.main(argv)
    except SystemExit as exc:
        return exc.code
    except BaseException as exc:  # e.g. a KeyboardInterrupt let through
        pytest.fail(f"the search did not stop with an exit status: {type(exc).__name__}")
    pytest.fail("the search went on to the end after a probe was cut short")


@pytest.fixture
def titles(monkeypatch):
    """The plot titles written (the plot itself is still drawn)."""
    seen, real = [], capacity.plot_capacity

    def plot(results, slo, path, *args, **kwargs):
        seen.append(args[0] if args else kwargs.get("title"))
        return real(results, slo, path, *args, **kwargs)

    monkeypatch.setattr(capacity, "plot_capacity", plot)
    return seen


def test_ctrl_c_out_of_a_probe_stops_with_130_and_an_incomplete_result(
    tmp_path, monkeypatch, capsys, titles
):
    monkeypatch.setattr(harness.run, "run", FakeRun(cut={2: "interrupt"}))
    out = tmp_path / "cap"
    assert stopped_search([*FAKE_ARGS, "--out", str(out)]) == 130
    saved = json.loads((out / "capacity.json").read_text())
    assert saved["complete"] is False
    assert saved["stopped"]["reason"] == "interrupted" and saved["stopped"]["signal"] == "SIGINT"
    cut = saved["stopped"]["cut_short_probe"]["rate"]
    assert cut == 8.0  # the second probe: --high (64) missed, then the geometric midpoint
    (fcfs,) = saved["policies"]
    assert (fcfs["status"], fcfs["capacity_req_s"]) == ("incomplete", None)
    assert [(p["rate"], p["meets_slo"]) for p in fcfs["probes"]] == [(64.0, False)]
    assert list(pd.read_csv(out / "capacity.csv")["rate"]) == [64.0]  # no row for the cut one
    assert titles and titles[-1].startswith("INCOMPLETE")
    logged = capsys.readouterr()
    assert "rate 8 req/s -> pass" not in logged.out and "rate 8 req/s -> miss" not in logged.out
    assert "probe 2 of at most 8: policy fcfs, rate 8 req/s -> cut short" in logged.out
    assert "exit 130" in logged.err


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_a_real_probe_stops_the_search(tmp_path, monkeypatch, sig, status):
    """The signal arrives while the second probe's engine is serving; `run()` then returns a
    partial result (complete: false) rather than raising, which must not count as a miss."""
    real, policies = FcfsPolicy.schedule, []

    def schedule(self, view):
        if self not in policies:
            policies.append(self)  # one policy object per probe
        if len(policies) == 2:
            signal.raise_signal(sig)
        return real(self, view)

    monkeypatch.setattr(FcfsPolicy, "schedule", schedule)
    # Python's own Ctrl-C handler, as in a terminal: a process started in the background by a
    # non-interactive shell (a CI script's `cmd &`) inherits SIGINT ignored, and then no SIGINT
    # would reach the search at all
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "cap"
    try:
        code = stopped_search([*MISSING_AT_400, "--out", str(out)])
    finally:
        signal.signal(signal.SIGINT, old_int)
    assert code == status
    saved = json.loads((out / "capacity.json").read_text())
    assert saved["complete"] is False and saved["stopped"]["signal"] == sig.name
    cut = saved["stopped"]["cut_short_probe"]
    assert cut["rate"] == pytest.approx(math.sqrt(50 * 400))
    assert [p["rate"] for p in saved["policies"][0]["probes"]] == [400.0]
    summary = json.loads((Path(cut["run_dir"]) / "summary.json").read_text())
    assert summary["complete"] is False  # the probe really was cut short inside the run
    assert signal.getsignal(signal.SIGTERM) is not capacity._raise_keyboard_interrupt


def test_a_probe_that_stalls_is_an_error_of_the_search_not_a_miss(tmp_path, monkeypatch, capsys):
    """A run that ends incomplete without a signal (here a real stall: the policy schedules
    nothing in the second probe) stops the search with status 1, naming the run's error."""
    real, policies = FcfsPolicy.schedule, []

    def schedule(self, view):
        if self not in policies:
            policies.append(self)
        return Decision() if len(policies) == 2 else real(self, view)

    monkeypatch.setattr(FcfsPolicy, "schedule", schedule)
    out = tmp_path / "cap"
    assert stopped_search([*MISSING_AT_400, "--out", str(out)]) == 1
    saved = json.loads((out / "capacity.json").read_text())
    stopped = saved["stopped"]
    assert saved["complete"] is False and stopped["reason"] == "probe_incomplete"
    assert stopped["cut_short_probe"]["rate"] == pytest.approx(math.sqrt(50 * 400))
    assert [p["rate"] for p in saved["policies"][0]["probes"]] == [400.0]
    run_dir = Path(stopped["cut_short_probe"]["run_dir"])
    error = json.loads((run_dir / "summary.json").read_text())["error"]
    assert error and stopped["signal"] is None and error in stopped["message"]
    assert error in capsys.readouterr().err


def test_policies_searched_before_the_interrupt_keep_their_result(tmp_path, monkeypatch):
    rates = []  # what a whole search of one policy probes (FakeRun: pass iff rate <= 20)
    capacity.bisect_capacity(lambda r: rates.append(r) or r <= 20, 1.0, 64.0, 6, 0.05)
    fake = FakeRun(cut={len(rates) + 2: "interrupt"})  # chunked_prefill's second probe
    monkeypatch.setattr(harness.run, "run", fake)
    out = tmp_path / "cap"
    argv = [*FAKE_ARGS, "policy=fcfs,chunked_prefill,static", "--out", str(out)]
    assert stopped_search(argv) == 130
    saved = json.loads((out / "capacity.json").read_text())
    fcfs, chunked = saved["policies"]
    assert fcfs["status"] == "ok" and fcfs["bracket"][0] <= 20 < fcfs["bracket"][1]
    assert [p["rate"] for p in fcfs["probes"]] == pytest.approx(rates)
    assert (chunked["status"], chunked["capacity_req_s"], len(chunked["probes"])) == (
        "incomplete", None, 1,
    )  # fmt: skip
    assert saved["stopped"]["cut_short_probe"]["policy"] == "chunked_prefill"
    assert saved["not_searched"] == ["static"]
    rows = pd.read_csv(out / "capacity.csv")
    assert set(rows[rows["policy"] == "chunked_prefill"]["status"]) == {"incomplete"}


def test_an_incomplete_summary_is_neither_pass_nor_miss():
    summary = {"complete": False, "num_requests": 8, "num_finished": 8,
               "ttft_s": {"p99": 0.1}, "tpot_s": {"p99": 0.01}}  # fmt: skip
    with pytest.raises(ValueError, match="neither a pass nor a miss"):
        capacity.meets_slo(summary, 2.0, 0.1)
    assert capacity.meets_slo({**summary, "complete": True}, 2.0, 0.1) is True
