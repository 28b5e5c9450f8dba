"""Chunked prefill with stall-free batching (Sarathi-Serve; vLLM v1's default scheduler).

Rule: every step first schedules all running decodes (oldest first), then fills the token budget
left with chunks of in-progress prefills, then swapped requests coming back (oldest first, each
only if it computes in that step), then chunks of new prompts in arrival order. A chunk is what fits the budget left, the free KV blocks
(a new prompt is started only if its whole prompt fits them) and, if
`long_prefill_token_threshold` > 0, that many tokens (so a long prompt cannot take a whole step
from short ones). At most `max_num_partial_prefills` requests may be left part-way through their
prompt at once. No step ever exceeds `max_num_batched_tokens`.

Preemption (`preemption: recompute` or `swap`), so that no decode is ever stalled or preempted
for a prefill: when a decode needs a KV block and none is free, the victim is taken among the
running requests not yet scheduled this step, prefills in progress before any decode, each group
by vLLM v1's order (lowest priority, then latest arrival; requests preempted
`starvation_threshold` times only when no other is left); with no candidate left, the decode
itself. A step that preempts a decode schedules no prefill chunk, so the blocks freed go to
decodes only. A prefill in progress never preempts a decode: its chunk shrinks to the free
blocks; with none free it waits while other requests compute this step (they free blocks, or
preempt it when they need them), and otherwise preempts a later prefill in progress, or itself.
No swap-in or admission in a step that preempts. (vLLM v1 differs: its running queue mixes
prefills and decodes in admission order and preempts its tail, which can be a decode while an
earlier-admitted prefill keeps its chunk.)
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


class ChunkedPrefillPolicy(Policy):
    """Decodes first, then prefill chunks in the budget they leave."""

    steady_decodes = True  # steady: every running request decodes, in importance order

    chunks_prefills = True

    def __init__(
        self,
        max_num_partial_prefills: int = 1,
        long_prefill_token_threshold: int = 0,
        preemption: str = "recompute",
        max_wait_s: float | None = None,
    ) -> None:
        if max_num_partial_prefills < 1 or long_prefill_token_threshold < 0:
            raise ValueError("max_num_partial_prefills must be >= 1, the threshold >= 0")
        if max_wait_s is not None and max_wait_s <= 0:
            raise ValueError(f"max_wait_s must be > 0 or null, got {max_wait_s}")
        self.max_wait_s = max_wait_s
        self.max_num_partial_prefills = max_num_partial_prefills
        self.long_prefill_token_threshold = long_prefill_token_threshold
        self.preemption = Preemption(preemption)

    def schedule(self, view: SchedulerView) -> Decision:
        plan = StepPlan(view, self.preemption, self.max_wait_s)
        self._schedule_running(plan)
        if swap_in_swapped(plan, self._chunk, chunked=self.chunks_prefills) and not plan.preempt:
            self._admit_waiting(plan)
        return plan.decision()

    def _schedule_running(self, plan: StepPlan) -> None:
        running = sorted(plan.view.running, key=by_importance)
        decodes = [r for r in running if r.is_decode]
        prefills = [r for r in running if not r.is_decode]
        chunked = self.chunks_prefills
        schedule_running(plan, decodes, self._chunk, chunked=chunked, victims=prefills)
        if any(r.request_id in plan.preempt for r in decodes):
            return  # blocks freed by preempting a decode are not handed to a prefill chunk
        prefills = [r for r in prefills if r.request_id not in plan.preempt]
        schedule_running(plan, prefills, self._chunk, chunked=chunked, wait=True)

    def _admit_waiting(self, plan: StepPlan) -> None:
        admit_waiting(plan, self._admission_chunk)

    def _chunk(self, plan: StepPlan, request: RequestView) -> int:
        """Tokens `request` may compute within the budget left and the per-step cap."""
        if not self.chunks_prefills:
            return whole(plan, request)
        n = min(request.num_uncomputed_tokens, plan.tokens_left(request))
        if self.long_prefill_token_threshold and not request.is_decode:
            n = min(n, self.long_prefill_token_threshold)
        return n

    def _admission_chunk(self, plan: StepPlan, request: RequestView) -> int:
        """A new prompt's first chunk: 0 unless the free blocks (keeping the watermark) hold its
        whole prompt, as vLLM's `can_allocate` (a prompt started but unable to finish would be
        preempted and recomputed), or if it would leave one partial prefill too many."""
        n = self._chunk(plan, request)
        if not self.chunks_prefills:
            return n
        reserve = plan.view.watermark_blocks
        if (
            plan.num_new_blocks(request, request.num_uncomputed_tokens)
            > plan.num_free_blocks - reserve
        ):
            return 0
        if n < request.num_uncomputed_tokens:
            if self._num_partial_prefills(plan) >= self.max_num_partial_prefills:
                return 0
        return n

    @staticmethod
    def _num_partial_prefills(plan: StepPlan) -> int:
        """Requests that will be part-way through their prompt (or recompute) after the step."""
        view, num_partial = plan.view, 0
        for r in (*view.running, *view.swapped, *view.waiting):
            n = plan.scheduled.get(r.request_id, 0)
            # a waiting request's cached prefix is not a started prefill (prefix caching)
            started = r.num_computed_tokens > r.num_cached_tokens or n > 0
            unfinished = r.num_computed_tokens + n < r.num_tokens and not r.is_decode
            num_partial += started and unfinished and r.request_id not in plan.preempt
        return num_partial
