"""Decode-priority batching (TensorRT-LLM's generation-first in-flight batching).

Rule: every running decode runs every step, oldest first, preempting the latest arrival when the
KV cache runs out (`preemption: recompute` or `swap`); swapped requests come back next, oldest
first. Waiting prompts are admitted whole, in arrival order, only into the token budget, seats
and KV (keeping the watermark) left after the decodes; with `skip_ahead` (the default) a prompt
that does not fit what is left is passed over for later, shorter ones instead of blocking them.
No admission in a step that preempts or while a swapped request waits to come back.
Keeps ITL flat; a new prompt waits for room, so TTFT grows under load.
"""

from __future__ import annotations

from policies.base import Decision, Policy, Preemption, SchedulerView
from policies.batching import (
    StepPlan,
    admit_waiting,
    by_importance,
    schedule_running,
    swap_in_swapped,
    whole,
)


class DecodePriorityPolicy(Policy):
    """Decodes first, always; whole prompts fill the budget they leave."""

    def __init__(self, skip_ahead: bool = True, preemption: str = "recompute") -> None:
        self.skip_ahead = skip_ahead
        self.preemption = Preemption(preemption)

    def schedule(self, view: SchedulerView) -> Decision:
        plan = StepPlan(view, self.preemption)
        self._schedule_running(plan)
        if swap_in_swapped(plan, whole) and not plan.preempt:
            self._admit_waiting(plan)
        return plan.decision()

    def _schedule_running(self, plan: StepPlan) -> None:
        schedule_running(plan, sorted(plan.view.running, key=by_importance), whole)

    def _admit_waiting(self, plan: StepPlan) -> None:
        admit_waiting(plan, whole, skip_ahead=self.skip_ahead)
