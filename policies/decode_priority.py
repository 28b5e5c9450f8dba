"""Decode-priority batching (TensorRT-LLM's generation-first in-flight batching).

Rule: every running decode runs every step, oldest first. Waiting prompts are admitted whole,
in arrival order, only into the token budget and seats left after the decodes, and only if the
KV cache can hold them at their *full* length (prompt + max output) on top of what every running
request will still grow by (TensorRT-LLM's GUARANTEED_NO_EVICT): so a decode is never stalled
or preempted for want of blocks. As in GUARANTEED_NO_EVICT, the first waiting prompt that does
not fit stops admission for the step, so a large prompt at the head is not passed by later small
ones (TensorRT-LLM's `GuaranteedNoEvictScheduler` breaks at the first pending request without
enough blocks, `cpp/tensorrt_llm/batch_manager/capacityScheduler.cpp`). `skip_ahead: true`
(opt-in) passes over it for later, shorter ones instead, which can starve a large prompt behind
a stream of small ones. `reserve_full_length: false`
admits on the blocks needed now (like fcfs), and then the KV cache can run out: the latest
arrival is preempted (`preemption: recompute | swap`).
Keeps ITL flat; a new prompt waits for room, so TTFT grows under load.
"""

from __future__ import annotations

from policies.base import RequestView, SchedulerView
from policies.batching import StepPlan, admit_waiting, whole
from policies.fcfs import FcfsPolicy


def full_length_blocks(view: SchedulerView, request: RequestView) -> int:
    """Blocks the request holds once it has generated every output token it may."""
    return -(-(request.num_prompt_tokens + request.max_output_tokens - 1) // view.block_size)


class DecodePriorityPolicy(FcfsPolicy):
    """Decodes first, always; whole prompts fill what they leave, KV reserved to full length."""

    steady_decodes = True  # steady: every running request decodes, in importance order (fcfs's)

    def __init__(
        self,
        skip_ahead: bool = False,
        reserve_full_length: bool = True,
        preemption: str = "recompute",
    ) -> None:
        super().__init__(preemption)
        self.skip_ahead = skip_ahead
        self.reserve_full_length = reserve_full_length

    def _admit_waiting(self, plan: StepPlan) -> None:
        if not self.reserve_full_length:
            admit_waiting(plan, whole, skip_ahead=self.skip_ahead)
            return
        view = plan.view
        reserve = view.watermark_blocks + sum(
            max(0, full_length_blocks(view, r) - r.num_blocks) for r in view.running + view.swapped
        )
        for request in view.waiting:
            if plan.num_seats_left < 1:
                return
            n = whole(plan, request)
            full = full_length_blocks(view, request) - request.num_blocks
            if n < 1 or not plan.within_budget(n, request) or full > plan.num_free_blocks - reserve:
                if self.skip_ahead:
                    continue
                return
            now = plan.num_new_blocks(request, n)
            plan.schedule(request, n)
            plan.num_seats_left -= 1
            reserve += full - now  # what this request will still grow by
