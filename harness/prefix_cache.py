"""Automatic prefix caching, the engine's side (docs/prefix_caching.md): each request's block
keys, the longest cached prefix of every waiting request, and the policy's view built on them.

The KV manager (harness/kv_cache.py) holds the cached blocks; this module decides what a
request can take from it. A waiting request's longest cached prefix is kept up to date from the
pool's events (a key cached, a key evicted) instead of being looked up again every step: a
request's keys are computed once, when it enters the waiting queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.batch import PLACEHOLDER_TOKEN
from harness.kv_cache import BlockKey, KVCacheManager
from harness.request import Request
from policies.base import RequestView, SchedulerView

if TYPE_CHECKING:
    from harness.engine import Engine


def extend_keys(r: Request, num_blocks: int, block_size: int) -> list[BlockKey]:
    """`r.block_keys` grown to cover its first `num_blocks` full blocks (their token ids must
    be on the host); each key chains the previous key's digest with the block's token ids."""
    keys, bs = r.block_keys, block_size
    for i in range(len(keys), num_blocks):
        parent = hash(keys[i - 1]) if i else 0
        keys.append((parent, tuple(r.token_ids(i * bs, (i + 1) * bs))))
    return keys


class PrefixTracker:
    """The cached prefix (in blocks) of every waiting request. A hit never covers a request's
    last token: at most (num_tokens - 1) // block_size blocks, so that at least one token is
    computed (and sampled from) and a request never writes into a block it shares."""

    def __init__(self, kv: KVCacheManager) -> None:
        self.kv, self.block_size = kv, kv.block_size
        self._keys: dict[str, list[BlockKey]] = {}  # waiting request id -> keys it may hit
        self._hits: dict[str, int] = {}  # waiting request id -> leading keys cached now
        self._watch: dict[BlockKey, dict[str, int]] = {}  # key -> {waiting id: its index}
        kv.gpu.on_evict, kv.gpu.on_cache = self._evicted, self._cached

    def add(self, r: Request) -> None:
        """`r` enters the waiting queue (arrived, or preempted by recompute)."""
        rid, m = r.request_id, (r.num_tokens - 1) // self.block_size
        keys = extend_keys(r, m, self.block_size)[:m]
        self._keys[rid] = keys
        for i, key in enumerate(keys):
            self._watch.setdefault(key, {})[rid] = i
        self._hits[rid] = self.kv.num_cached_blocks(keys)

    def num_cached_tokens(self, request_id: str) -> int:
        return self._hits[request_id] * self.block_size

    def admit(self, r: Request) -> int:
        """`r` leaves the waiting queue to run: its table starts with its cached prefix's blocks
        (shared). Returns the tokens it takes from the cache."""
        rid = r.request_id
        keys = self._keys.pop(rid)
        hits = self._hits.pop(rid)
        for key in keys:
            watchers = self._watch[key]
            del watchers[rid]
            if not watchers:
                del self._watch[key]
        if hits:
            self.kv.take_cached(rid, keys[:hits])
        return hits * self.block_size

    def on_computed(self, r: Request) -> None:
        """After `r` computed more tokens: key its full blocks whose token ids are known (a
        pipelined step's sampled tokens are placeholders until they reach the host)."""
        if r.num_computed_tokens // self.block_size <= self.kv.num_keyed(r.request_id):
            return  # no full block beyond those keyed already (most steps): nothing to key
        known, num_prompt = r.num_tokens, r.num_prompt_tokens
        while known > num_prompt and r.output_ids[known - num_prompt - 1] == PLACEHOLDER_TOKEN:
            known -= 1
        n = min(r.num_computed_tokens, known) // self.block_size
        self.kv.cache_blocks(r.request_id, extend_keys(r, n, self.block_size), n)

    def _evicted(self, key: BlockKey) -> None:
        for rid, i in self._watch.get(key, {}).items():
            if self._hits[rid] > i:
                self._hits[rid] = i

    def _cached(self, key: BlockKey) -> None:
        for rid, i in self._watch.get(key, {}).items():
            if self._hits[rid] == i:
                self._hits[rid] = i + self.kv.num_cached_blocks(self._keys[rid], i)


def build_view(engine: Engine, now_s: float) -> SchedulerView:
    """The read-only snapshot the policy decides on (and the decision is checked against).

    Block accounting (docs/prefix_caching.md): a waiting request's cached prefix counts as
    computed (`num_computed_tokens`, and `num_cached_tokens`) but not as held (`num_blocks` 0),
    and the free blocks are counted as if no block were shared (`num_free_blocks_unshared`), so
    the policies' arithmetic stays an upper bound of what the engine really takes, preemptions
    included."""
    kv, lim, tracker = engine.kv, engine.limits, engine.prefix
    gpu_tables = kv.block_tables
    running = tuple([_snap(r, gpu_tables, r.num_computed_tokens, 0)
                     for r in engine.running.values()])  # fmt: skip
    cpu_tables = kv.cpu_block_tables
    swapped = tuple([_snap(r, cpu_tables, r.num_computed_tokens, 0)
                     for r in engine.swapped.values()])  # fmt: skip
    if tracker is None:
        waiting = tuple([_snap(r, gpu_tables, r.num_computed_tokens, 0)
                         for r in engine.waiting.values()])  # fmt: skip
    else:
        hits, bs = tracker._hits, tracker.block_size
        waiting = tuple([_snap(r, gpu_tables, n, n) for r in engine.waiting.values()
                         for n in (hits[r.spec.request_id] * bs,)])  # fmt: skip
    return SchedulerView(
        now_s=now_s, waiting=waiting, running=running, swapped=swapped,
        num_free_blocks=kv.num_free_blocks_unshared, num_total_blocks=kv.gpu.num_blocks,
        num_free_cpu_blocks=kv.cpu.num_free_blocks, watermark_blocks=kv.watermark_blocks,
        block_size=kv.block_size, max_num_batched_tokens=lim.max_num_batched_tokens,
        max_num_seqs=lim.max_num_seqs, max_model_len=lim.max_model_len,
        starvation_threshold=lim.starvation_threshold,
        max_num_prefill_tokens=lim.max_num_prefill_tokens,
        num_evictable_blocks=kv.gpu.num_evictable_blocks,
    )  # fmt: skip


def _snap(r: Request, tables: dict, num_computed: int, num_cached: int) -> RequestView:
    """`r` as the policy sees it, its blocks counted in `tables` (the GPU's, or the CPU's)."""
    spec, out = r.spec, r.output_ids
    num_prompt = len(spec.prompt_ids)
    return RequestView(
        spec.request_id, spec.arrival_s, spec.priority, num_prompt, num_prompt + len(out),
        num_computed, len(out), spec.max_output_tokens, len(tables.get(spec.request_id, ())),
        r.num_preemptions, spec.tenant, num_cached, spec.slo_class,
    )  # fmt: skip
