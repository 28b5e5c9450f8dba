"""Admission control: work that cannot be served in time is shed at arrival, and counted."""

from __future__ import annotations

import pytest

from harness.admission import Admission
from harness.run import run
from tests.conftest import make_specs

CPU = ("engine=cpu", "model=tiny", "engine.progress=false", "logger=none", "engine.clock=virtual")
OVERLOAD = ("workload.num_requests=60", "workload.arrival.rate=400", "workload.prompt_len.max=300",
            "workload.output_len.min=8", "workload.output_len.max=16", "budget.max_num_seqs=4")  # fmt: skip


def test_predicted_queueing_delay_from_the_recent_admission_rate():
    a = Admission(max_predicted_wait_s=1.0, window=4)
    waiting = [_request(500), _request(500), _request(500)]
    assert a.shed_reason(waiting) == ""  # nothing measured yet: admit
    for t in (0.0, 0.3, 0.6, 0.9):  # one admission every 0.3 s (only the last 4 count)
        a.on_admit(t)
    assert a.admission_gap_s == pytest.approx(0.3)
    assert a.shed_reason(waiting[:2]) == ""  # 3 to start before it is served: 0.9 s
    assert a.shed_reason(waiting).startswith("shed: predicted queueing delay 1.200 s")


def test_a_full_waiting_queue_sheds_and_the_summary_counts_it(compose_cfg):
    result = run(compose_cfg(*CPU, *OVERLOAD, "policy=fcfs", "admission.max_waiting=3"), None)
    s, requests = result.summary, result.requests
    shed = requests[requests["reason"].str.startswith("shed:")]
    assert len(shed) > 0 and (shed["status"] == "rejected").all()
    assert s["rejection_reasons"] == {"shed": len(shed)} and s["num_rejected"] == len(shed)
    assert s["num_finished"] + s["num_rejected"] == 60 and s["complete"]


def test_shedding_against_the_ttft_slo_keeps_admitted_requests_within_it(compose_cfg):
    """At overload fcfs queues until the tail misses the TTFT SLO; shedding on the predicted
    queueing delay keeps the admitted requests' P99 TTFT within it, at the cost of the shed."""
    slo = ("slo.ttft_s=0.1",)
    plain = run(compose_cfg(*CPU, *OVERLOAD, *slo, "policy=fcfs"), None).summary
    # the bound is on the predicted (mean) wait: 0.7 x the SLO leaves room for the tail
    shed = run(compose_cfg(*CPU, *OVERLOAD, *slo, "policy=fcfs",
                           "admission.max_predicted_wait_s=0.07"), None).summary  # fmt: skip
    assert plain["num_rejected"] == 0 and plain["ttft_s"]["p99"] > 0.3
    assert shed["num_rejected"] > 0
    assert shed["ttft_s"]["p99"] <= 0.1 * 1.1
    assert shed["goodput_req_s"] > 2 * plain["goodput_req_s"]


def _request(prompt_tokens: int):
    from harness.request import Request

    return Request(make_specs([prompt_tokens], [4])[0])
