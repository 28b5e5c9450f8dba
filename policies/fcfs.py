"""FCFS continuous batching (Orca / vLLM v0 without chunking).

Rule: running requests first, in arrival order, each computing all it has left (a decode is one
token). If the KV cache cannot hold them, the latest-arrived running request is preempted by
recompute until it can. Then waiting requests are admitted in arrival order, whole prompts only,
while the token budget, `max_num_seqs` and the KV cache (keeping the watermark) allow; the first
that does not fit blocks those behind it (strict FCFS, no skipping ahead).
"""

from __future__ import annotations

from policies.base import Decision, Policy, Preemption, RequestView, SchedulerView


class FcfsPolicy(Policy):
    """First come, first served, whole prompts, recompute preemption of the latest arrival."""

    def __init__(self, preemption: str = "recompute") -> None:
        self.preemption = Preemption(preemption)

    def schedule(self, view: SchedulerView) -> Decision:
        scheduled: dict[str, int] = {}
        preempt: dict[str, Preemption] = {}
        free_blocks = self._schedule_running(view, scheduled, preempt)
        if not preempt:
            self._admit_waiting(view, scheduled, free_blocks)
        return Decision(num_scheduled_tokens=scheduled, preempt=preempt)

    def _schedule_running(self, view, scheduled, preempt) -> int:
        """Schedule running requests oldest first, preempting the newest when KV runs short."""
        queue = sorted(view.running, key=lambda r: (r.arrival_s, r.request_id))
        budget, free_blocks = view.max_num_batched_tokens, view.num_free_blocks
        while queue:
            request = queue.pop(0)
            n = request.num_uncomputed_tokens
            if n > budget:
                break
            need = view.num_new_blocks(request, n)
            while need > free_blocks and queue:
                victim = queue.pop()
                preempt[victim.request_id] = self._preemption_for(view, victim)
                free_blocks += victim.num_blocks
            if need > free_blocks:
                preempt[request.request_id] = self._preemption_for(view, request)
                break
            scheduled[request.request_id] = n
            budget -= n
            free_blocks -= need
        return free_blocks

    def _preemption_for(self, view: SchedulerView, victim: RequestView) -> Preemption:
        if self.preemption is Preemption.SWAP and victim.num_blocks <= view.num_free_cpu_blocks:
            return Preemption.SWAP
        return Preemption.RECOMPUTE

    def _admit_waiting(self, view, scheduled, free_blocks) -> None:
        """Admit whole prompts in arrival order while budget, seats and KV allow."""
        budget = view.max_num_batched_tokens - sum(scheduled.values())
        seats = view.max_num_seqs - len(view.running)
        free_blocks -= view.watermark_blocks
        for request in view.waiting:
            n = request.num_uncomputed_tokens
            need = view.num_new_blocks(request, n)
            if seats < 1 or n > budget or need > free_blocks:
                break
            scheduled[request.request_id] = n
            budget, seats, free_blocks = budget - n, seats - 1, free_blocks - need
