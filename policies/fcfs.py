"""FCFS continuous batching (Orca-style iteration-level scheduling, whole prompts).

Rule: running requests first, oldest first, each computing all it has left (a decode is one
token). If the KV cache cannot hold them, the latest-arrived running request (lowest priority
first, when a workload sets priorities) is preempted, by recompute or, with `preemption: swap`,
to the CPU pool while it has room. Swapped requests come back, oldest first, before any new
admission, each only in a step with a token and blocks (keeping the watermark) for its next
decode. Then waiting requests are admitted in arrival order, whole prompts only, while the
token budget, `max_num_seqs` and the KV cache (keeping the watermark) allow; the first that does
not fit blocks those behind it (strict FCFS: no skipping ahead). No admission in a step that
preempts.
Aging (`max_wait_s`, off by default): a request in the system longer than `max_wait_s`
is chosen as a preemption victim only when no other candidate is left, so its wait is
bounded by the queue ahead of it rather than by repeated recomputation.
"""

from __future__ import annotations

from policies.base import Decision, Policy, Preemption, RequestView, SchedulerView
from policies.batching import (
    StepPlan,
    admit_waiting,
    by_importance,
    schedule_running,
    swap_in_swapped,
    whole,
)


class FcfsPolicy(Policy):
    """First come, first served, whole prompts, preemption of the latest arrival."""

    steady_decodes = True  # steady: every running request decodes, in importance order

    def __init__(self, preemption: str = "recompute", max_wait_s: float | None = None) -> None:
        if max_wait_s is not None and max_wait_s <= 0:
            raise ValueError(f"max_wait_s must be > 0 or null, got {max_wait_s}")
        self.preemption = Preemption(preemption)
        self.max_wait_s = max_wait_s

    def schedule(self, view: SchedulerView) -> Decision:
        plan = StepPlan(view, self.preemption, self.max_wait_s)
        self._schedule_running(plan)
        if swap_in_swapped(plan, whole) and not plan.preempt:
            self._admit_waiting(plan)
        return plan.decision()

    def _schedule_running(self, plan: StepPlan) -> None:
        schedule_running(plan, sorted(plan.view.running, key=by_importance), whole)

    def _admit_waiting(self, plan: StepPlan) -> None:
        admit_waiting(plan, whole, skip_ahead=False, queue=self._admission_order(plan.view))

    def _admission_order(self, view: SchedulerView) -> list[RequestView] | None:
        """The order waiting requests are admitted in; None: the engine's (arrival order,
        recompute victims first). Policies that differ from FCFS only here override it."""
        return None
