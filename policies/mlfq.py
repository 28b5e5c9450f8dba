"""Skip-join multi-level feedback queue (FastServe: Wu et al., "Fast Distributed Inference Serving
for Large Language Models", arXiv:2305.05920, 2023: its skip-join MLFQ scheduler).

Rule: `num_levels` queues, level 0 first; level i's quantum is `base_quantum * 2**i` iterations.
Skip-join: an arriving job joins the highest level whose quantum covers its first iteration (the
prefill, costed as ceil(prompt tokens / `prompt_tokens_per_iteration`) iterations), so a long
prompt skips the top levels. A job is charged one iteration per output token it generates (its
first: the prefill's cost; a recompute's repeated work is not charged); when its charge at a
level reaches that level's quantum it is demoted one level, its charge reset. With
`starvation_s`, a job not served for that long is promoted back to level 0 (FastServe's
starvation guard; null: never).

Each step serves the levels from the top: at each level its running jobs compute (whole; a
decode is one token), then its swapped jobs come back and its waiting prompts are admitted whole
(no chunked prefill), each in arrival order. A swapped or waiting job of this level that lacks a
seat or KV blocks preempts running jobs of strictly lower levels (lowest level, then latest
arrival, first; only if that frees enough); a running job short of blocks preempts those first,
then the latest arrival of its own level, then itself (`schedule_running`). Preemption is
`swap` (FastServe offloads KV to host memory; recompute when the CPU pool is full) or
`recompute`. Running jobs of lower levels that the token budget leaves out of a step idle with
their KV in place (preemption at iteration granularity). The first swapped or waiting job that
cannot get in ends admissions for the step; the running jobs of lower levels still compute.
The level replaces the workload's request priority (also in the victim order).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from policies.base import Decision, Policy, Preemption, RequestView, SchedulerView
from policies.batching import StepPlan, by_importance, pick_victim, schedule_running, whole


@dataclass
class _Job:
    level: int
    num_iterations: int = 0  # charged at this level
    last_served_s: float = 0.0


class MlfqPolicy(Policy):
    """FastServe's skip-join MLFQ: levels by attained service, higher levels preempt lower."""

    def __init__(
        self,
        num_levels: int = 8,
        base_quantum: int = 8,
        prompt_tokens_per_iteration: int = 128,
        starvation_s: float | None = None,
        preemption: str = "swap",
    ) -> None:
        if num_levels < 1 or base_quantum < 1 or prompt_tokens_per_iteration < 1:
            raise ValueError("num_levels, base_quantum, prompt_tokens_per_iteration must be >= 1")
        self.num_levels, self.base_quantum = num_levels, base_quantum
        self.prompt_tokens_per_iteration = prompt_tokens_per_iteration
        self.starvation_s = starvation_s
        self.preemption = Preemption(preemption)
        self.jobs: dict[str, _Job] = {}  # request id -> its queue state (requests in the view)

    def schedule(self, view: SchedulerView) -> Decision:
        self._join_and_promote(view)
        plan = StepPlan(view, self.preemption)
        running = self._by_level(view.running)
        queued = [(r, True) for r in self._by_level(view.swapped)]
        queued += [(r, False) for r in self._by_level(view.waiting)]
        admitting = True
        for level in range(self.num_levels):
            running = [r for r in running if r.request_id not in plan.preempt]
            this = [r for r in running if -r.priority == level]
            lower = [r for r in running if -r.priority > level]
            schedule_running(plan, this, whole, victims=lower)
            for r, swapped in queued:
                if admitting and -r.priority == level:
                    admitting = self._bring_in(plan, r, swapped, level, running)
        self._charge(plan)
        return plan.decision()

    def quantum(self, level: int) -> int:
        return self.base_quantum * 2**level

    def first_iteration_cost(self, request: RequestView) -> int:
        return max(1, -(-request.num_prompt_tokens // self.prompt_tokens_per_iteration))

    def join_level(self, request: RequestView) -> int:
        """Skip-join: the highest level whose quantum covers the first iteration."""
        cost = self.first_iteration_cost(request)
        levels = (i for i in range(self.num_levels) if self.quantum(i) >= cost)
        return next(levels, self.num_levels - 1)

    def _join_and_promote(self, view: SchedulerView) -> None:
        known, self.jobs = self.jobs, {}  # finished requests are no longer in the view
        for r in (*view.running, *view.swapped, *view.waiting):
            job = known.get(r.request_id) or _Job(self.join_level(r), last_served_s=r.arrival_s)
            self.jobs[r.request_id] = job
            if self.starvation_s is not None and view.now_s - job.last_served_s > self.starvation_s:
                job.level, job.num_iterations = 0, 0

    def _by_level(self, requests) -> list[RequestView]:
        """Copies whose priority is minus their level, so the shared steps' order and victim
        choice (highest priority, then earliest arrival) are the queues' order."""
        leveled = [replace(r, priority=-self.jobs[r.request_id].level) for r in requests]
        return sorted(leveled, key=by_importance)

    def _bring_in(
        self, plan: StepPlan, r: RequestView, swapped: bool, level: int, running: list[RequestView]
    ) -> bool:
        """Swap in or admit `r` whole, preempting lower levels' running jobs for its seat and
        blocks if that frees enough. False if it cannot get in this step."""
        n = whole(plan, r)
        if n < 1:
            return False
        reserve = plan.view.watermark_blocks + (r.num_blocks if swapped else 0)
        lower = [v for v in running if -v.priority > level and v.request_id not in plan.preempt]
        missing = plan.num_new_blocks(r, n) + reserve - plan.num_free_blocks
        if missing > sum(v.num_blocks for v in lower) or plan.num_seats_left + len(lower) < 1:
            return False
        while lower and (plan.num_seats_left < 1 or not plan.fits(r, n, reserve)):
            victim = pick_victim(lower, plan.view.starvation_threshold)
            lower.remove(victim)
            plan.preempt_request(victim)
        if swapped:
            plan.swap_in.append(r.request_id)
            plan.num_free_blocks -= r.num_blocks
        plan.num_seats_left -= 1
        plan.schedule(r, n)
        return True

    def _charge(self, plan: StepPlan) -> None:
        """Charge an iteration per token sampled (the prefill's cost for the first) and demote
        the jobs whose charge reached their level's quantum."""
        view = plan.view
        for r in (*view.running, *view.swapped, *view.waiting):
            n = plan.scheduled.get(r.request_id)
            if n is None:
                continue
            job = self.jobs[r.request_id]
            job.last_served_s = view.now_s
            if r.num_computed_tokens + n < r.num_tokens:
                continue  # samples nothing (never under whole prompts)
            job.num_iterations += self.first_iteration_cost(r) if r.num_output_tokens == 0 else 1
            if job.num_iterations >= self.quantum(job.level) and job.level < self.num_levels - 1:
                job.level, job.num_iterations = job.level + 1, 0
