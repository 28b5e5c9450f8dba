"""Longest cached prefix first (SGLang's `lpm` schedule policy), FCFS when the queue is long.

SGLang (Zheng et al., "SGLang: Efficient Execution of Structured Language Model Programs",
NeurIPS 2024, RadixAttention) orders its waiting queue by the length of each request's longest
prefix found in the cache, so that requests reusing what is cached run while it is still cached
(and before an admission evicts it); computing those matches costs time per waiting request, so
SGLang falls back to FCFS when more than 128 requests wait. This policy is that rule on this
harness's prefix cache (`engine.enable_prefix_caching`, docs/prefix_caching.md): the view gives
each waiting request's cached tokens (`RequestView.num_cached_tokens`).

Rule, with whole prompts (no chunking), as FCFS otherwise (`policies/fcfs.py`): running
requests first, oldest first, preempting the latest-arrived when the KV cache runs out;
swapped requests back before admissions. Waiting requests are admitted most cached tokens
first, ties in arrival order, while the budgets and the KV cache (keeping the watermark) allow;
the first that does not fit blocks those behind it. With more than `fcfs_above` waiting, they
are admitted in arrival order. Aging (`max_wait_s`, off by default, not in SGLang): a request
that has waited longer goes ahead of every one that has not, oldest first, so a request with
nothing cached cannot starve behind a stream of requests that hit the cache.
Not modelled: SGLang's in-batch prefix deprioritisation (a request whose prefix another
request of the same step is about to cache waits one step).
"""

from __future__ import annotations

from policies.base import RequestView, SchedulerView
from policies.fcfs import FcfsPolicy


class CacheAwarePolicy(FcfsPolicy):
    """FCFS whose admission order is longest cached prefix first (SGLang's LPM)."""

    def __init__(
        self,
        fcfs_above: int = 128,
        max_wait_s: float | None = None,
        preemption: str = "recompute",
    ) -> None:
        super().__init__(preemption)  # no victim protection: the aging is in the admission
        if fcfs_above < 0:
            raise ValueError(f"fcfs_above must be >= 0, got {fcfs_above}")
        if max_wait_s is not None and max_wait_s <= 0:
            raise ValueError(f"max_wait_s must be > 0 or null, got {max_wait_s}")
        self.fcfs_above, self.admit_first_after_s = fcfs_above, max_wait_s

    def _admission_order(self, view: SchedulerView) -> list[RequestView] | None:
        if len(view.waiting) > self.fcfs_above:
            return None  # the engine's order: arrival, recompute victims first
        return sorted(view.waiting, key=lambda r: self._rank(view.now_s, r))

    def _rank(self, now_s: float, r: RequestView) -> tuple:
        if self.admit_first_after_s is not None and now_s - r.arrival_s > self.admit_first_after_s:
            return (0, 0, r.arrival_s, r.request_id)  # starved: oldest first
        return (1, -r.num_cached_tokens, r.arrival_s, r.request_id)
