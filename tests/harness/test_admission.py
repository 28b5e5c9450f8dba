"""Admission control: work that cannot be served in time is shed at arrival, and counted."""

from __future__ import annotations

import pytest

from harness.admission import Admission
from harness.records import StepRecord
from harness.run import run
from tests.conftest import make_specs

CPU = ("engine=cpu", "model=tiny", "engine.progress=false", "logger=none", "engine.clock=virtual")
OVERLOAD = ("workload.num_requests=60", "workload.arrival.rate=400", "workload.prompt_len.max=300",
            "workload.output_len.min=8", "workload.output_len.max=16", "budget.max_num_seqs=4")  # fmt: skip


def test_predicted_queueing_delay_from_the_measured_prefill_rate():
    a = Admission(max_predicted_wait_s=1.0)
    waiting = [_request(500), _request(500), _request(500)]
    assert a.shed_reason(waiting, 500) == ""  # nothing measured yet: admit
    a.on_step(StepRecord(step=0, start_s=0.0, duration_s=0.5, num_prefill_tokens=500))
    assert a.prefill_tok_s == pytest.approx(1000.0)
    assert a.shed_reason(waiting[:1], 400) == ""  # (500 + 400) / 1000 = 0.9 s
    assert a.shed_reason(waiting, 500).startswith("shed: predicted queueing delay 2.000 s")


def test_a_full_waiting_queue_sheds_and_the_summary_counts_it(compose_cfg):
    result = run(compose_cfg(*CPU, *OVERLOAD, "policy=fcfs", "admission.max_waiting=3"), None)
    s, requests = result.summary, result.requests
    shed = requests[requests["reason"].str.startswith("shed:")]
    assert len(shed) > 0 and (shed["status"] == "rejected").all()
    assert s["rejection_reasons"] == {"shed": len(shed)} and s["num_rejected"] == len(shed)
    assert s["num_finished"] + s["num_rejected"] == 60 and s["complete"]


def test_shedding_against_the_ttft_slo_keeps_admitted_requests_within_it(compose_cfg):
    """At overload fcfs queues until the tail misses the TTFT SLO; shedding on the predicted
    queueing delay keeps the admitted requests' P99 TTFT near it, at the cost of the shed."""
    slo = ("slo.ttft_s=0.05",)
    plain = run(compose_cfg(*CPU, *OVERLOAD, *slo, "policy=fcfs"), None).summary
    shed = run(compose_cfg(*CPU, *OVERLOAD, *slo, "policy=fcfs",
                           "admission.max_predicted_wait_s=0.05"), None).summary  # fmt: skip
    assert plain["num_rejected"] == 0 and plain["ttft_s"]["p99"] > 0.05
    assert shed["num_rejected"] > 0
    assert shed["ttft_s"]["p99"] < plain["ttft_s"]["p99"] / 2


def _request(prompt_tokens: int):
    from harness.request import Request

    return Request(make_specs([prompt_tokens], [4])[0])
