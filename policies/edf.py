"""Earliest deadline first on each request's TTFT deadline (Liu & Layland, JACM 1973).

Deadline: `arrival_s + ttft_s`, where `ttft_s` is the TTFT SLO of the request's SLO class
(`RequestSpec.slo_class`, e.g. `interactive`) in `class_ttft_s`; a request whose class is not
there (or that has none) takes its tenant's in `tenant_ttft_s`, else `ttft_s`, which the YAML
takes from the run's `slo.ttft_s`. With no SLO at all (`ttft_s: null`) a deadline is the
arrival time, so one class is plain FCFS order.

Rule, with whole prompts (no chunking): running requests first (every one of them has its first
token, so its TTFT is settled), oldest first, preempting the lowest-priority, latest-arrived one
when the KV cache runs out (`preemption: recompute | swap`); swapped requests come back before
admissions, each only in a step where it computes. Waiting requests are then admitted in this
order while the budgets and the KV cache (keeping the watermark) allow, the first that does not
fit blocking those behind it; none in a step that preempts:
1. requests resumed after a recompute preemption (their first token is out: finish them),
   oldest first, as the engine's queue puts them;
2. then earliest deadline first (Jackson's rule: it minimises the maximum lateness).
With `deprioritize_missed`, a request whose deadline has passed (`now_s` beyond it: its TTFT
SLO is lost whatever happens) goes behind every request that can still meet its own, still in
deadline order among the late. EDF alone degrades under overload (the "domino effect": every
request is served just late enough to miss); demoting the hopeless keeps the rest on time, at
the price of the late ones' tail (Buttazzo, Hard Real-Time Computing Systems, ch. 9).
"""

from __future__ import annotations

from policies.base import RequestView, SchedulerView
from policies.fcfs import FcfsPolicy


class EdfPolicy(FcfsPolicy):
    """Whole prompts, earliest TTFT deadline first (late ones last with `deprioritize_missed`)."""

    def __init__(
        self,
        ttft_s: float | None = 2.0,
        tenant_ttft_s: dict[str, float] | None = None,
        deprioritize_missed: bool = False,
        preemption: str = "recompute",
        class_ttft_s: dict[str, float] | None = None,
    ) -> None:
        super().__init__(preemption)
        self.ttft_s = ttft_s
        self.tenant_ttft_s = dict(tenant_ttft_s or {})
        self.class_ttft_s = dict(class_ttft_s or {})
        slos = (ttft_s, *self.tenant_ttft_s.values(), *self.class_ttft_s.values())
        if any(s is not None and s < 0 for s in slos):
            raise ValueError("TTFT SLOs must be >= 0")
        self.deprioritize_missed = deprioritize_missed

    def _admission_order(self, view: SchedulerView) -> list[RequestView]:
        return sorted(view.waiting, key=lambda r: self._rank(view.now_s, r))

    def deadline_s(self, request: RequestView) -> float:
        """When `request`'s first token is due: its SLO class's TTFT, else its tenant's, else
        the run's."""
        ttft_s = self.class_ttft_s.get(request.slo_class)
        if ttft_s is None:
            ttft_s = self.tenant_ttft_s.get(request.tenant, self.ttft_s)
        return request.arrival_s + (ttft_s or 0.0)

    def _rank(self, now_s: float, request: RequestView) -> tuple:
        if request.num_output_tokens > 0:
            return (0, 0, request.arrival_s, request.request_id)  # resumed: TTFT settled
        deadline_s = self.deadline_s(request)
        late = self.deprioritize_missed and now_s > deadline_s
        return (1, late, deadline_s, request.arrival_s, request.request_id)
