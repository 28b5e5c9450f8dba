"""The summary printed at the end of a run: the per-tenant block."""

from __future__ import annotations

from harness.metrics import requests_frame, summarize
from harness.report_table import format_summary
from tests.harness.test_metrics import _req, _steps


def _summary(tenants):
    reqs = [_req(f"r{i}", 0.0, [1.0 + i, 2.0 + i], tenant=t) for i, t in enumerate(tenants)]
    return summarize(requests_frame(reqs), _steps(2))


def test_two_tenants_get_a_block_with_service_shares_and_fairness():
    # prompts of 4 tokens, 2 output tokens each: A served 2 requests (12 tokens), B one (6)
    text = format_summary(_summary(["A", "A", "B"]))
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert lines["A"][1:] == ["2/2", "1.0", "1990.0", "67%"]  # 4 tokens / 4 s; P99 of 1, 2 s
    assert lines["B"][1:] == ["1/1", "0.5", "3000.0", "33%"]
    assert "Jain's index over the tenants' service 0.900" in text  # 18^2 / (2 * (144 + 36))


def test_one_tenant_prints_no_block():
    text = format_summary(_summary(["A", "A"]))
    assert "tenant" not in text and "Jain" not in text
