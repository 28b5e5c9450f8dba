"""Building blocks shared by the policies: a decision under construction with the budgets it has
left (`StepPlan`), victim choice, and the loops that schedule running requests, swap requests
back in and admit waiting ones. Each policy file composes them in its own order.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import fields

from policies.base import Decision, Padding, Preemption, RequestView, SchedulerView

_new = object.__new__
_DECISION_FIELDS = ("num_scheduled_tokens", "preempt", "swap_in", "padding")  # set by decision()
if tuple(f.name for f in fields(Decision)) != _DECISION_FIELDS:
    raise TypeError("Decision changed: update StepPlan.decision (policies/batching.py)")

#: How many tokens a request should compute this step given the plan (0: none this step).
TokensFn = Callable[["StepPlan", RequestView], int]


def by_importance(request: RequestView) -> tuple:
    """Sort key, most important first: highest priority, then earliest arrival."""
    return (-request.priority, request.arrival_s, request.request_id)


def pick_victim(
    candidates: Iterable[RequestView],
    protect_at: int | None = None,
    first: Container[str] = (),
    protected_before: float | None = None,
) -> RequestView:
    """The request to preempt: lowest priority, then latest arrival; requests whose ids are in
    `first` before all others. Requests already preempted `protect_at` times or more (starving),
    or that arrived before `protected_before` (waited past a policy's `max_wait_s`), are chosen
    only when no other candidate is left."""

    def key(r: RequestView) -> tuple:
        starving = protect_at is not None and r.num_preemptions >= protect_at
        aged = protected_before is not None and r.arrival_s < protected_before
        return (not (starving or aged), r.request_id in first, by_importance(r))

    return max(candidates, key=key)


class StepPlan:
    """A decision under construction: what is scheduled, preempted and swapped in so far, and the
    token, seat, GPU-block and CPU-block budgets left for the rest of the step."""

    def __init__(
        self,
        view: SchedulerView,
        preemption: Preemption = Preemption.RECOMPUTE,
        max_wait_s: float | None = None,
    ):
        self.view = view
        self.preemption = preemption
        # aging: a request in the system longer than `max_wait_s` is no longer a victim
        self.protected_before = None if max_wait_s is None else view.now_s - max_wait_s
        self.num_tokens_left = view.max_num_batched_tokens
        # prefill chunks (anything but a decode) also count against the prefill budget
        self.num_prefill_tokens_left = view.max_num_prefill_tokens or view.max_num_batched_tokens
        self.num_seats_left = view.max_num_seqs - len(view.running)
        self.num_free_blocks = view.num_free_blocks
        self.num_free_cpu_blocks = view.num_free_cpu_blocks
        self.scheduled: dict[str, int] = {}
        self.preempt: dict[str, Preemption] = {}
        self.swap_in: list[str] = []
        self.padding: list[Padding] = []

    def only_aged_victims(self, request: RequestView, candidates: list[RequestView]) -> bool:
        """Aging: every other candidate is past its maximum wait and `request` is not, so
        `request` is its own victim rather than one of them."""
        before = self.protected_before
        if before is None or request.arrival_s < before:
            return False
        return all(r.arrival_s < before for r in candidates)

    def num_new_blocks(self, request: RequestView, num_tokens: int) -> int:
        return self.view.num_new_blocks(request, num_tokens)

    def max_tokens_in_blocks(self, request: RequestView, reserve_blocks: int = 0) -> int:
        """The most tokens `request` can compute with the free blocks (keeping `reserve_blocks`)."""
        num_blocks = request.num_blocks + self.num_free_blocks - reserve_blocks
        return max(0, num_blocks * self.view.block_size - request.num_computed_tokens)

    def tokens_left(self, request: RequestView) -> int:
        """Tokens `request` may still compute this step: the step's budget left and, unless it
        is a decode, the prefill budget left (`budget.max_num_prefill_tokens`)."""
        if request.is_decode:
            return self.num_tokens_left
        return min(self.num_tokens_left, self.num_prefill_tokens_left)

    def within_budget(self, num_tokens: int, request: RequestView | None = None) -> bool:
        """Whether `num_tokens` more (of `request`, if given: a prefill also counts against the
        prefill budget) fit the step's budgets. A computation longer than a whole budget (a whole
        prompt under a policy that does not split them) is let through rather than never run:
        past the prefill budget as the step's only prefill, past the step budget alone."""
        if num_tokens <= (self.tokens_left(request) if request else self.num_tokens_left):
            return True
        cap = self.view.max_num_prefill_tokens
        if request is not None and not request.is_decode and cap and num_tokens > cap:
            first_prefill = self.num_prefill_tokens_left == cap
            if first_prefill and num_tokens <= self.num_tokens_left:
                return True  # the step's only prefill, decodes beside it
        alone = not (self.scheduled or self.padding)
        return alone and num_tokens > self.view.max_num_batched_tokens

    def fits(self, request: RequestView, num_tokens: int, reserve_blocks: int = 0) -> bool:
        return self.within_budget(num_tokens, request) and (
            self.num_new_blocks(request, num_tokens) <= self.num_free_blocks - reserve_blocks
        )

    def schedule(self, request: RequestView, num_tokens: int) -> None:
        self.num_free_blocks -= self.num_new_blocks(request, num_tokens)
        self.num_tokens_left -= num_tokens
        if not request.is_decode:
            self.num_prefill_tokens_left -= num_tokens
        self.scheduled[request.request_id] = num_tokens

    def preempt_request(self, victim: RequestView) -> Preemption:
        """Preempt `victim`: swapped if the policy swaps and the CPU pool has room, else
        recomputed (the fallback shows as a preemption without a swap in the records)."""
        kind = Preemption.RECOMPUTE
        if self.preemption is Preemption.SWAP and victim.num_blocks <= self.num_free_cpu_blocks:
            kind = Preemption.SWAP
            self.num_free_cpu_blocks -= victim.num_blocks
        self.preempt[victim.request_id] = kind
        self.num_free_blocks += victim.num_blocks
        self.num_seats_left += 1
        return kind

    def decision(self) -> Decision:
        # Decision(...) without its frozen __init__'s object.__setattr__ per field
        decision = _new(Decision)
        decision.__dict__.update(
            num_scheduled_tokens=dict(self.scheduled),
            preempt=dict(self.preempt),
            swap_in=tuple(self.swap_in),
            padding=tuple(self.padding),
        )
        return decision


def whole(plan: StepPlan, request: RequestView) -> int:
    """All the request has left to compute (a decode is one token), or 0 if over budget."""
    n = request.num_uncomputed_tokens
    return n if plan.within_budget(n, request) else 0


def schedule_running(
    plan: StepPlan,
    running: Iterable[RequestView],
    tokens: TokensFn,
    chunked: bool = False,
    victims: Iterable[RequestView] = (),
    wait: bool = False,
) -> None:
    """Schedule `running` in the given order, `tokens(plan, r)` each (`chunked`: fewer if the
    free blocks hold fewer). When the KV cache cannot hold a request's tokens, it waits (nothing
    this step) if `wait` and others already compute in this step, so the step still makes
    progress. Otherwise victims are preempted (`pick_victim`): first among `victims` (running
    requests this call does not schedule), then among those of `running` not yet scheduled;
    with no victim left, the request itself."""
    queue, spare = list(running), list(victims)
    first = {r.request_id for r in spare}
    block_size = plan.view.block_size
    while queue:
        request = queue.pop(0)
        # Fast path (most requests, most steps): `n` within the budgets left and its new blocks
        # within the free ones. The same arithmetic as `whole`, `tokens_left`, `fits` and
        # `schedule` (such an `n` also fits the free blocks whole when `chunked`).
        computed = request.num_computed_tokens
        left = plan.num_tokens_left
        decode = request.num_output_tokens > 0 and request.num_tokens - computed == 1
        if not decode and plan.num_prefill_tokens_left < left:
            left = plan.num_prefill_tokens_left
        n = request.num_tokens - computed
        if tokens is not whole or n > left:
            n = tokens(plan, request)
        if n < 1:
            continue
        if n <= left:
            new = -(-(computed + n) // block_size) - request.num_blocks
            new = new if new > 0 else 0
            if new <= plan.num_free_blocks:
                plan.num_free_blocks -= new
                plan.num_tokens_left -= n
                if not decode:
                    plan.num_prefill_tokens_left -= n
                plan.scheduled[request.request_id] = n
                continue
        while True:
            m = min(n, plan.max_tokens_in_blocks(request)) if chunked else n
            if m >= 1 and plan.fits(request, m):
                plan.schedule(request, m)
                break
            if wait and plan.scheduled:
                break
            if not spare and not queue or plan.only_aged_victims(request, spare + queue):
                plan.preempt_request(request)
                break
            victim = pick_victim(
                spare + queue, plan.view.starvation_threshold, first, plan.protected_before
            )
            (spare if victim.request_id in first else queue).remove(victim)
            plan.preempt_request(victim)


def swap_in_swapped(plan: StepPlan, tokens: TokensFn, chunked: bool = False) -> bool:
    """Bring swapped requests back in arrival order, each only if it computes in this step:
    `tokens(plan, r)` (`chunked`: fewer if the free blocks hold fewer) must be at least one and
    its blocks plus the new ones must fit the free blocks (keeping the watermark), with a seat.
    A request back without a token would hold its blocks and a seat for nothing. The first that
    cannot come back keeps those behind it out; none comes back in a step that preempts.
    Returns True if no swapped request is left out."""
    view = plan.view
    for request in sorted(view.swapped, key=by_importance):
        if plan.preempt or plan.num_seats_left < 1:
            return False
        reserve = request.num_blocks + view.watermark_blocks  # its own blocks come back first
        n = tokens(plan, request)
        n = min(n, plan.max_tokens_in_blocks(request, reserve)) if chunked else n
        if n < 1 or not plan.fits(request, n, reserve_blocks=reserve):
            return False
        plan.swap_in.append(request.request_id)
        plan.num_seats_left -= 1
        plan.num_free_blocks -= request.num_blocks
        plan.schedule(request, n)
    return True


def admit_waiting(
    plan: StepPlan,
    tokens: TokensFn,
    skip_ahead: bool = False,
    queue: Iterable[RequestView] | None = None,
) -> None:
    """Admit waiting requests in `queue` order (default: the engine's), `tokens(plan, r)` each
    (0: does not fit), while seats, the token budget and the KV cache (keeping the watermark)
    allow. The first request that does not fit blocks those behind it unless `skip_ahead`."""
    reserve = plan.view.watermark_blocks
    for request in plan.view.waiting if queue is None else queue:
        if plan.num_seats_left < 1:
            return
        n = tokens(plan, request)
        if n < 1 or not plan.fits(request, n, reserve_blocks=reserve):
            if skip_ahead:
                continue
            return
        plan.schedule(request, n)
        plan.num_seats_left -= 1
