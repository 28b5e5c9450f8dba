"""Metric definitions checked on hand-computed timelines."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.metrics import (
    jain_index,
    rejection_reasons,
    requests_frame,
    summarize,
    utilisation,
)
from harness.request import Request, RequestSpec, RequestStatus


def _req(rid, arrival, times, prompt=4, status=RequestStatus.FINISHED, first_sched=None, **spec):
    r = Request(RequestSpec(rid, arrival, tuple(range(prompt)), max(len(times), 1), **spec))
    r.status, r.token_times_s, r.output_ids = status, list(times), list(range(len(times)))
    r.first_scheduled_s = first_sched if first_sched is not None else (arrival if times else None)
    r.finish_s = times[-1] if times else arrival
    return r


def _steps(n):
    return pd.DataFrame({"num_swapped_out_blocks": [0] * n})


def test_latencies_throughput_and_goodput():
    reqs = [
        _req("a", 0.0, [1.0, 2.0, 4.0], first_sched=0.5),  # ttft 1, e2e 4, tpot 1.5, itl 1, 2
        _req("b", 1.0, [1.5], first_sched=1.25),  # ttft .5, e2e .5, no tpot
        _req("c", 2.0, [], status=RequestStatus.REJECTED),
    ]
    df = requests_frame(reqs)
    s = summarize(df, _steps(3), slo={"ttft_s": 0.8, "tpot_s": 0.1})
    assert (s["num_requests"], s["num_finished"], s["num_rejected"], s["num_aborted"]) == (
        3,
        2,
        1,
        0,
    )
    assert s["duration_s"] == pytest.approx(4.0)  # first arrival 0 -> last token 4
    assert s["output_throughput_tok_s"] == pytest.approx(4 / 4.0)
    assert s["total_throughput_tok_s"] == pytest.approx((4 + 8) / 4.0)
    assert s["request_throughput_req_s"] == pytest.approx(2 / 4.0)
    assert s["goodput_req_s"] == pytest.approx(1 / 4.0)  # only b meets TTFT <= 0.8
    assert s["ttft_s"]["mean"] == pytest.approx(0.75)
    assert s["ttft_s"]["p50"] == pytest.approx(0.75)
    assert s["tpot_s"]["p99"] == pytest.approx(1.5)
    assert s["itl_s"]["p50"] == pytest.approx(1.5) and s["itl_s"]["p999"] == pytest.approx(1.999)
    assert s["e2e_s"]["p90"] == pytest.approx(0.5 + 0.9 * 3.5)
    assert s["queue_wait_s"]["mean"] == pytest.approx((0.5 + 0.25) / 2)


def test_empty_latencies_are_null_not_nan():
    s = summarize(requests_frame([_req("c", 0.0, [], status=RequestStatus.REJECTED)]), _steps(0))
    assert s["ttft_s"]["p99"] is None and s["output_throughput_tok_s"] == 0.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())


def test_starved_requests_are_counted():
    a, b = _req("a", 0.0, [1.0]), _req("b", 0.0, [2.0])
    a.num_preemptions, b.num_preemptions = 8, 7
    s = summarize(requests_frame([a, b]), _steps(1), starvation_threshold=8)
    assert s["num_starved"] == 1 and s["num_preemptions"] == 15
    assert summarize(requests_frame([a, b]), _steps(1))["num_starved"] == 0


def test_utilisation_figures_from_the_step_records():
    steps = pd.DataFrame({
        "duration_s": [1.0, 3.0], "device_time_s": [0.5, 2.5],
        "num_prefill_tokens": [90, 0], "num_decode_tokens": [0, 10],
        "num_padding_tokens": [30, 70], "num_kv_blocks_used": [20, 60],
    })  # fmt: skip
    u = utilisation(steps, duration_s=6.0, num_gpu_blocks=80, max_num_batched_tokens=64)
    assert u["busy_share"] == pytest.approx(3.0 / 6.0)
    assert u["useful_token_share"] == pytest.approx(100 / 200)
    assert u["kv_usage_peak"] == pytest.approx(0.75)
    assert u["kv_usage_mean"] == pytest.approx((0.25 * 1 + 0.75 * 3) / 4)  # time-weighted
    assert u["num_oversized_steps"] == 1
    assert utilisation(steps, 6.0, None, None)["kv_usage_mean"] is None


def test_rejections_are_counted_by_kind():
    reqs = [
        _req("a", 0.0, [], status=RequestStatus.REJECTED),
        _req("b", 0.0, [], status=RequestStatus.REJECTED),
        _req("c", 0.0, [], status=RequestStatus.REJECTED),
    ]
    reqs[0].reason = "max_model_len: prompt + max output = 5000 tokens > max_model_len=4096"
    reqs[1].reason = "max_model_len: prompt + max output = 4200 tokens > max_model_len=4096"
    reqs[2].reason = "kv_capacity: needs 90 KV blocks, the cache has 64"
    assert rejection_reasons(requests_frame(reqs)) == {"kv_capacity": 1, "max_model_len": 2}


def test_per_tenant_and_per_priority_slices_and_fairness():
    reqs = [
        _req("a1", 0.0, [1.0, 2.0, 4.0], tenant="A", priority=1),  # ttft 1, e2e 4, tpot 1.5
        _req("a2", 1.0, [1.5], prompt=6, tenant="A", priority=0),  # ttft .5, e2e .5
        _req("b1", 0.0, [3.0, 3.5], prompt=2, tenant="B", priority=0),  # ttft 3, e2e 3.5
        _req("b2", 2.0, [], status=RequestStatus.REJECTED, tenant="B", priority=10),
    ]
    s = summarize(requests_frame(reqs), _steps(3), slo={"ttft_s": 2.0})
    assert s["duration_s"] == pytest.approx(4.0)  # the run's makespan, for every slice
    a, b = s["per_tenant"]["A"], s["per_tenant"]["B"]
    assert (a["num_requests"], a["num_finished"], b["num_requests"], b["num_finished"]) == (
        2, 2, 2, 1,
    )  # fmt: skip
    assert a["output_throughput_tok_s"] == pytest.approx(4 / 4.0)
    assert b["output_throughput_tok_s"] == pytest.approx(2 / 4.0)
    assert a["request_throughput_req_s"] == pytest.approx(2 / 4.0)
    assert a["ttft_s"] == {"p50": pytest.approx(0.75), "p99": pytest.approx(0.5 + 0.99 * 0.5)}
    assert a["tpot_s"]["p99"] == pytest.approx(1.5) and b["tpot_s"]["p50"] == pytest.approx(0.5)
    assert b["e2e_s"]["p99"] == pytest.approx(3.5)  # the rejected request has no latency
    assert (a["service_tokens"], b["service_tokens"]) == (4 + 3 + 6 + 1, 2 + 2)
    assert jain_index([14, 4]) == pytest.approx(18**2 / (2 * (14**2 + 4**2)))
    assert s["fairness_jain"] == pytest.approx(18**2 / (2 * (14**2 + 4**2)))
    assert list(s["per_priority"]) == ["0", "1", "10"]  # text keys, in numeric order
    assert s["per_priority"]["0"]["num_finished"] == 2
    assert s["per_priority"]["0"]["service_tokens"] == 6 + 1 + 2 + 2
    assert s["per_priority"]["10"]["ttft_s"]["p99"] is None


def test_fairness_needs_two_tenants_with_service():
    one = summarize(requests_frame([_req("a", 0.0, [1.0]), _req("b", 0.0, [2.0])]), _steps(1))
    assert list(one["per_tenant"]) == ["default"] and one["fairness_jain"] is None
    assert jain_index([5, 5, 5]) == pytest.approx(1.0)
    assert jain_index([9, 0, 0]) == pytest.approx(1 / 3)  # a tenant served nothing counts
    assert jain_index([0, 0]) is None and jain_index([3]) is None
