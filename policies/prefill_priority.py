"""Prefill-priority batching (vLLM v0's default scheduler without chunking; Orca-era systems).

Rule: whenever a waiting request can be admitted (and no swapped request is waiting to come
back), the step is a prefill step: as many whole prompts as fit `max_num_batched_tokens`,
`max_num_seqs` and the KV cache (keeping the watermark), in arrival order, and every running
decode stalls for that step. Otherwise the step is a decode step: all running requests decode,
oldest first, preempting the latest arrival when the KV cache runs out (`preemption: recompute`
or `swap`), and swapped requests come back oldest first.
Optimises throughput and TTFT; inflates ITL (every arrival stalls every running decode).
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


class PrefillPriorityPolicy(Policy):
    """Prefill steps whenever a prompt can be admitted; decode steps otherwise."""

    steady_decodes = True  # steady: every running request decodes, in importance order

    def __init__(self, preemption: str = "recompute") -> None:
        self.preemption = Preemption(preemption)

    def schedule(self, view: SchedulerView) -> Decision:
        prefill = StepPlan(view, self.preemption)
        if not view.swapped:
            self._admit_waiting(prefill)
        if prefill.scheduled:
            return prefill.decision()
        decode = StepPlan(view, self.preemption)
        self._schedule_running(decode)
        swap_in_swapped(decode, whole)
        return decode.decision()

    def _admit_waiting(self, plan: StepPlan) -> None:
        admit_waiting(plan, whole, skip_ahead=False)

    def _schedule_running(self, plan: StepPlan) -> None:
        schedule_running(plan, sorted(plan.view.running, key=by_importance), whole)
