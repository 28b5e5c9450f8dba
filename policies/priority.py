"""Priority scheduling with priority preemption (vLLM's `scheduling_policy="priority"`).

Convention: the harness's `RequestView.priority` is *larger = more important* (the default is
0); vLLM's is *lower value first*. A vLLM priority `p` is the harness priority `-p`, so vLLM's
order `(priority, arrival_time)` ascending is `by_importance` here, and vLLM's victim
`max(running, key=(priority, arrival_time))` is `pick_victim` (lowest priority, latest arrival).

Rule, with whole prompts (no chunking, as vLLM v0 without chunked prefill):
1. Running requests compute in priority order (highest first, then earliest arrival); when the
   KV cache cannot hold them, the lowest-priority, latest-arrived running request is preempted
   (vLLM v1, `vllm/v1/core/sched/scheduler.py`, PRIORITY branch of the running loop).
2. Swapped requests come back, highest priority first, each only in a step where it computes.
3. Waiting requests are admitted in priority order (vLLM v1's `PriorityRequestQueue`, a heap on
   `(priority, arrival_time)`); the first that does not fit blocks those behind it. No
   admission in a step that preempts for KV pressure.
4. Priority preemption (vLLM v0's `Scheduler._schedule_priority_preemption`,
   `vllm/core/scheduler.py`): if the first waiting request that does not fit (seats, token
   budget or KV blocks) outranks running requests, those of *strictly lower* priority are
   preempted, lowest priority and latest arrival first, until it fits; if no such set of
   victims makes room, none is preempted. It is not done while a swapped request of equal or
   higher rank waits to come back (that one goes first). vLLM v0 compares
   `(priority, arrival_time)`, so it also preempts an equal-priority later arrival; only a
   strictly lower priority here, so equals never preempt each other back and forth.
Victims go by `preemption` (recompute: to the front of the waiting queue; swap: to the CPU pool
while it has room). With every priority equal this is exactly `fcfs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

from policies.base import Decision, Policy, Preemption, RequestView, SchedulerView
from policies.batching import (
    StepPlan,
    admit_waiting,
    by_importance,
    schedule_running,
    swap_in_swapped,
    whole,
)


class PriorityPolicy(Policy):
    """Highest priority first; a waiting request preempts running ones of lower priority."""

    def __init__(self, preempt_for_waiting: bool = True, preemption: str = "recompute") -> None:
        self.preempt_for_waiting = preempt_for_waiting
        self.preemption = Preemption(preemption)

    def schedule(self, view: SchedulerView) -> Decision:
        plan = self._plan(view)
        head = self._blocked_head(plan)
        if head is None or not self.preempt_for_waiting:
            return plan.decision()
        with_victims = self._preempt_for(view, head)
        return (with_victims or plan).decision()

    def _plan(
        self,
        view: SchedulerView,
        victims: Sequence[RequestView] = (),
        head: RequestView | None = None,
    ) -> StepPlan:
        """The step, with `victims` preempted first to make room for `head` (then admissions
        stop at `head`: the room is for it and those ranked above it, no one else)."""
        plan = StepPlan(view, self.preemption)
        for victim in victims:
            plan.preempt_request(victim)
        self._schedule_running(plan, {v.request_id for v in victims})
        under_pressure = len(plan.preempt) > len(victims)
        if not under_pressure and (victims or swap_in_swapped(plan, whole)):
            self._admit_waiting(plan, head)
        return plan

    def _schedule_running(self, plan: StepPlan, victim_ids: set[str]) -> None:
        running = [r for r in plan.view.running if r.request_id not in victim_ids]
        schedule_running(plan, sorted(running, key=by_importance), whole)

    def _admit_waiting(self, plan: StepPlan, head: RequestView | None) -> None:
        queue = sorted(plan.view.waiting, key=by_importance)
        if head is not None:
            queue = queue[: queue.index(head) + 1]
        admit_waiting(plan, whole, queue=queue)

    @staticmethod
    def _blocked_head(plan: StepPlan) -> RequestView | None:
        """The most important waiting request left out of `plan`, unless a swapped request of
        equal or higher rank is waiting to come back."""
        waiting = [r for r in plan.view.waiting if r.request_id not in plan.scheduled]
        if not waiting:
            return None
        head = min(waiting, key=by_importance)
        if any(by_importance(s) <= by_importance(head) for s in plan.view.swapped):
            return None
        return head

    def _preempt_for(self, view: SchedulerView, head: RequestView) -> StepPlan | None:
        """The step with the fewest lower-priority victims, taken in `pick_victim`'s order
        (lowest priority, latest arrival; starving requests last), that lets `head` in, or None
        if even all of them do not. More victims never leave less room, so the fewest is found
        by bisection: a handful of trial plans per step, not one per candidate."""
        starving = view.starvation_threshold
        order = sorted(
            (r for r in view.running if r.priority < head.priority), key=by_importance, reverse=True
        )
        order.sort(key=lambda r: starving is not None and r.num_preemptions >= starving)
        reserve = view.watermark_blocks + view.num_new_blocks(head, head.num_uncomputed_tokens)
        freed = accumulate(v.num_blocks for v in order)
        lo = sum(view.num_free_blocks + f < reserve for f in freed)  # too few blocks up to lo
        hi = len(order)
        if lo >= hi or not self._admits(view, order, head):
            return None
        while hi - lo > 1:  # the first `lo` victims are too few; the first `hi` are enough
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self._admits(view, order[:mid], head) else (mid, hi)
        return self._plan(view, order[:hi], head)

    def _admits(self, view: SchedulerView, victims: list[RequestView], head: RequestView) -> bool:
        return head.request_id in self._plan(view, victims, head).scheduled
