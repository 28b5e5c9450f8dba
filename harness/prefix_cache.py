"""Automatic prefix caching, the engine's side (docs/prefix_caching.md): each request's block
keys, the longest cached prefix of every waiting request, and the policy's view built on them.

The KV manager (harness/kv_cache.py) holds the cached blocks; this module decides what a
request can take from it. A waiting request's longest cached prefix is kept up to date from the
pool's events (a key cached, a key evicted) instead of being looked up again every step: a
request's keys are computed once, when it enters the waiting queue.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from harness.batch import PLACEHOLDER_TOKEN
from harness.kv_cache import BlockKey, KVCacheManager
from harness.request import Request, RequestSpec
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
    running = tuple([_Snap(r, gpu_tables, r.num_computed_tokens, 0)
                     for r in engine.running.values()])  # fmt: skip
    swapped = tuple([_Snap(r, kv.cpu_block_tables, r.num_computed_tokens, 0)
                     for r in engine.swapped.values()]) if engine.swapped else ()  # fmt: skip
    if not engine.waiting:
        waiting = ()
    elif tracker is None:
        waiting = tuple([_Snap(r, gpu_tables, r.num_computed_tokens, 0)
                         for r in engine.waiting.values()])  # fmt: skip
    else:
        hits, bs = tracker._hits, tracker.block_size
        waiting = tuple([_Snap(r, gpu_tables, n, n) for r in engine.waiting.values()
                         for n in (hits[r.spec.request_id] * bs,)])  # fmt: skip
    gpu = kv.gpu
    view = _new(SchedulerView)  # SchedulerView(...) without 17 frozen-field assignments
    view.__dict__.update(  # (every field: _check_snap)
        now_s=now_s, waiting=waiting, running=running, swapped=swapped,
        num_free_blocks=kv.num_free_blocks_unshared, num_total_blocks=gpu.num_blocks,
        num_free_cpu_blocks=kv.cpu.num_free_blocks, watermark_blocks=kv.watermark_blocks,
        block_size=kv.block_size, max_num_batched_tokens=lim.max_num_batched_tokens,
        max_num_seqs=lim.max_num_seqs, max_model_len=lim.max_model_len,
        starvation_threshold=lim.starvation_threshold,
        max_num_prefill_tokens=lim.max_num_prefill_tokens,
        num_evictable_blocks=gpu.num_evictable_blocks,
    )  # fmt: skip
    return view


_new = object.__new__


class _Snap:
    """`_Snap(r, tables, num_computed, num_cached)` is `r` as the policy sees it: a genuine
    `RequestView` (its blocks counted in `tables`, the GPU's or the CPU's), built ~4x faster
    than by `RequestView(...)`, whose frozen `__init__` assigns each field through
    `object.__setattr__`: this class has the same slots, assigns them directly and then becomes
    a `RequestView` (`__class__` assignment between identical slot layouts)."""

    __slots__ = RequestView.__slots__

    def __init__(self, r: Request, tables: dict, num_computed: int, num_cached: int) -> None:
        spec = r.spec
        num_prompt, num_out = len(spec.prompt_ids), len(r.output_ids)
        self.request_id = rid = spec.request_id
        self.arrival_s = spec.arrival_s
        self.priority = spec.priority
        self.num_prompt_tokens = num_prompt
        self.num_tokens = num_prompt + num_out
        self.num_computed_tokens = num_computed
        self.num_output_tokens = num_out
        self.max_output_tokens = spec.max_output_tokens
        self.num_blocks = len(tables.get(rid, ()))
        self.num_preemptions = r.num_preemptions
        self.tenant = spec.tenant
        self.num_cached_tokens = num_cached
        self.slo_class = spec.slo_class
        self.__class__ = RequestView


def _check_snap() -> None:
    """`_Snap` must set every field of `RequestView`, and `build_view` every field of
    `SchedulerView`, no more (checked once, at import)."""
    names = tuple(f.name for f in fields(RequestView))
    if RequestView.__slots__ != names or RequestView.__bases__ != (object,):
        raise TypeError("RequestView changed: update harness/prefix_cache.py's _Snap")
    spec = RequestSpec("r", 1.5, (1, 2, 3), 9, tenant="t", priority=2, slo_class="c")
    r = Request(spec, output_ids=[5], num_preemptions=6)
    want = RequestView("r", 1.5, 2, 3, 4, 7, 1, 9, 2, 6, "t", 8, "c")
    if _Snap(r, {"r": [0, 1]}, 7, 8) != want:
        raise TypeError("RequestView changed: update harness/prefix_cache.py's _Snap")
    set_by_build_view = {"now_s", "waiting", "running", "swapped", "num_free_blocks",
                         "num_total_blocks", "num_free_cpu_blocks", "watermark_blocks",
                         "block_size", "max_num_batched_tokens", "max_num_seqs", "max_model_len",
                         "starvation_threshold", "max_num_prefill_tokens",
                         "num_evictable_blocks"}  # fmt: skip
    if {f.name for f in fields(SchedulerView)} != set_by_build_view:
        raise TypeError("SchedulerView changed: update harness/prefix_cache.py's build_view")


_check_snap()
