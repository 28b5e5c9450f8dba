"""Virtual Token Counter: fair service between tenants (Sheng et al., "Fairness in Serving Large
Language Models", OSDI'24: VTC with continuous batching; artifact:
github.com/Ying1123/VTC-artifact, `slora/server/router/vtc_req_queue.py`).

Rule: each tenant has a counter of the service it has received: `w_p` per prompt token and `w_q`
per output token, divided by its weight (`tenant_weights`, default 1). Running requests compute
first, oldest first (the latest arrival preempted when the KV cache runs out, by recompute or
`preemption: swap`); swapped requests come back, oldest first, before any admission, as in fcfs.
Then admission repeatedly takes the backlogged tenant with the smallest counter and admits its
earliest waiting prompt, whole (no chunked prefill), charging it at once, so the next pick sees
the new counter; the first prompt that does not fit (seats, token budget, KV blocks keeping the
watermark) ends admission for the step (the paper's `break`). No admission in a step that
preempts.

Counter lift: a tenant that becomes backlogged (no waiting or swapped request at the end of the
previous step) has its counter raised to the smallest counter among the backlogged tenants, or,
with none backlogged, to the counter of the tenant whose request left the queue last: idle time
banks no credit.

What is charged is what is served, counted when the decision is made (the engine applies a valid
decision exactly): each prompt token once, when the prompt is first computed, and each output
token in the step that samples it (a prefill's first token included). The recompute of a
preempted request is not charged again: it is the scheduler's cost, not the tenant's demand.
Bound (the paper's theorem for VTC): over any interval in which two tenants are both backlogged, their services
differ by at most 2U, U = max(w_p * longest prompt, w_q * tokens the KV cache holds).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from policies.base import Decision, Policy, Preemption, RequestView, SchedulerView
from policies.batching import (
    StepPlan,
    admit_waiting,
    by_importance,
    schedule_running,
    swap_in_swapped,
    whole,
)


class VtcPolicy(Policy):
    """Admits the least-served backlogged tenant's earliest prompt first."""

    def __init__(
        self,
        w_p: float = 1.0,
        w_q: float = 2.0,
        tenant_weights: Mapping[str, float] | None = None,
        preemption: str = "recompute",
    ) -> None:
        weights = dict(tenant_weights or {})
        if w_p < 0 or w_q < 0 or any(w <= 0 for w in weights.values()):
            raise ValueError("w_p and w_q must be >= 0 and tenant weights > 0")
        self.w_p, self.w_q, self.tenant_weights = w_p, w_q, weights
        self.preemption = Preemption(preemption)
        self.counters: dict[str, float] = {}  # tenant -> weighted service received
        self._backlogged: set[str] = set()  # tenants queued at the end of the previous step
        self._last_left: str | None = None  # tenant of the last request to leave the queue

    def schedule(self, view: SchedulerView) -> Decision:
        self._lift_counters(view)
        plan = StepPlan(view, self.preemption)
        schedule_running(plan, sorted(view.running, key=by_importance), whole)
        if swap_in_swapped(plan, whole) and not plan.preempt:
            admit_waiting(plan, whole, queue=self._least_served_first(plan))
        self._charge(plan)
        return plan.decision()

    def cost(self, request: RequestView, num_tokens: int) -> float:
        """The service of computing `num_tokens` more of `request`: its prompt tokens computed
        for the first time and the output token sampled if the computation reaches the end."""
        c = request.num_computed_tokens
        first_time = request.num_output_tokens == 0  # later prompt tokens are a recompute
        num_prompt = max(0, min(c + num_tokens, request.num_prompt_tokens) - c) * first_time
        num_output = int(c + num_tokens == request.num_tokens)
        weight = self.tenant_weights.get(request.tenant, 1.0)
        return (self.w_p * num_prompt + self.w_q * num_output) / weight

    def _lift_counters(self, view: SchedulerView) -> None:
        """Tenants newly backlogged, in order of their earliest request, start no lower than
        the least-served backlogged tenant (or the last to leave the queue)."""
        first_s: dict[str, float] = {}
        for r in (*view.waiting, *view.swapped):
            first_s[r.tenant] = min(first_s.get(r.tenant, r.arrival_s), r.arrival_s)
        queued = [t for t in first_s if t in self._backlogged]
        for tenant in sorted(set(first_s) - self._backlogged, key=lambda t: (first_s[t], t)):
            if queued:
                floor = min(self.counters.get(t, 0.0) for t in queued)
            else:
                floor = self.counters.get(self._last_left, 0.0)
            self.counters[tenant] = max(self.counters.get(tenant, 0.0), floor)
            queued.append(tenant)

    def _least_served_first(self, plan: StepPlan) -> Iterator[RequestView]:
        """Waiting requests in VTC order, lazily: the earliest prompt of the tenant with the
        smallest counter, counting what this step has scheduled so far."""
        counters = dict(self.counters)
        self._add_service(counters, (*plan.view.running, *plan.view.swapped), plan)
        queues: dict[str, list[RequestView]] = {}
        for r in sorted(plan.view.waiting, key=lambda r: (r.arrival_s, r.request_id)):
            queues.setdefault(r.tenant, []).append(r)
        while queues:
            tenant = min(queues, key=lambda t: (counters.get(t, 0.0), t))
            request = queues[tenant].pop(0)
            if not queues[tenant]:
                del queues[tenant]
            yield request  # admit_waiting admits it, or stops and never comes back
            self._add_service(counters, (request,), plan)

    def _charge(self, plan: StepPlan) -> None:
        """Charge what the decision serves; remember who is still queued and who left last."""
        view = plan.view
        self._add_service(self.counters, (*view.running, *view.swapped, *view.waiting), plan)
        queued_ids = {r.request_id for r in (*view.waiting, *view.swapped)}
        tenant_of = {r.request_id: r.tenant for r in (*view.running, *view.swapped, *view.waiting)}
        left = [rid for rid in plan.scheduled if rid in queued_ids]  # in decision order
        if left:
            self._last_left = tenant_of[left[-1]]
        self._backlogged = {tenant_of[rid] for rid in queued_ids if rid not in plan.scheduled}
        self._backlogged |= {tenant_of[rid] for rid in plan.preempt}  # back to the queue

    def _add_service(self, counters: dict[str, float], requests, plan: StepPlan) -> None:
        for r in requests:
            if r.request_id in plan.scheduled:
                cost = self.cost(r, plan.scheduled[r.request_id])
                counters[r.tenant] = counters.get(r.tenant, 0.0) + cost
