"""Prefix caching in the KV bookkeeping (harness/kv_cache.py), under random operation sequences
(hypothesis): no block is freed while a table holds it, reference counts equal the tables that
list a block, held + evictable + keyless free = total, a shared block keeps its key while held,
the policy's unshared free count is a lower bound of what any preemption frees, and nothing
leaks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.kv_cache import KVCacheManager, OutOfBlocksError
from harness.prefix_cache import PrefixTracker, extend_keys
from harness.request import Request, RequestSpec

BS = 4
# prompts drawn from 3 prefixes of 4 blocks, cut at random lengths: plenty of sharing
PREFIXES = [tuple(range(p * 100, p * 100 + 4 * BS)) for p in range(3)]

ops = st.lists(
    st.tuples(
        st.sampled_from(["admit", "grow", "free", "swap_out", "swap_in"]),
        st.integers(0, 7),  # request index
        st.integers(0, 2),  # prefix
        st.integers(1, 6 * BS),  # prompt length, or tokens to grow by
    ),
    max_size=60,
)


def _request(rid: str, prefix: int, length: int) -> Request:
    tokens = (PREFIXES[prefix] + tuple(range(9000, 9000 + 2 * BS)))[:length]
    return Request(RequestSpec(request_id=rid, arrival_s=0.0, prompt_ids=tokens,
                               max_output_tokens=1))  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(ops=ops, num_gpu=st.integers(1, 30), num_cpu=st.integers(0, 20))
def test_random_operations_keep_the_shared_pool_consistent(ops, num_gpu, num_cpu):
    kv = KVCacheManager(num_gpu, BS, num_cpu, enable_prefix_caching=True)
    tracker = PrefixTracker(kv)
    live: dict[str, Request] = {}  # on the GPU, with their computed (= held) token count
    computed: dict[str, int] = {}
    for op, i, prefix, n in ops:
        rid = f"r{i}"
        if op == "admit" and rid not in live and rid not in kv.cpu_block_tables:
            r = _request(rid, prefix, n)
            tracker.add(r)
            hit = tracker.num_cached_tokens(rid)
            assert hit % BS == 0 and hit <= r.num_tokens - 1  # never the last token
            expected = kv.num_cached_blocks(extend_keys(r, (n - 1) // BS, BS)[: (n - 1) // BS])
            assert hit == expected * BS  # the tracker agrees with a fresh lookup
            need = kv.num_blocks_for(n) - hit // BS
            if need <= kv.gpu.num_free_blocks - sum(
                1 for k in r.block_keys[: hit // BS] if kv.gpu.ref_count[kv.gpu.cached[k]] == 0
            ):
                r.num_computed_tokens = tracker.admit(r)
                held = list(kv.block_tables.get(rid, []))
                assert r.num_computed_tokens == hit and len(held) == hit // BS
                kv.allocate(rid, n)
                r.num_computed_tokens = n
                tracker.on_computed(r)  # its full blocks become cached
                live[rid], computed[rid] = r, n
            else:
                tracker.admit(r)  # leaves the queue unadmitted: nothing taken
                kv.free(rid)
        elif op == "grow" and rid in live:
            want = computed[rid] + n
            if kv.can_allocate(rid, want):
                kv.allocate(rid, want)
                computed[rid] = want  # the new tokens are outputs: not keyed (not on the host)
            else:
                with pytest.raises(OutOfBlocksError):
                    kv.allocate(rid, want)
        elif op == "free" and rid in live:
            _check_preemption_bound(kv, [rid])
            kv.free(rid)
            del live[rid], computed[rid]
        elif op == "swap_out" and rid in live:
            before = list(kv.block_tables[rid])
            if kv.can_swap_out(rid):
                pairs = kv.swap_out(rid)
                assert [g for g, _ in pairs] == before
                del live[rid]
            else:
                with pytest.raises(OutOfBlocksError):
                    kv.swap_out(rid)
                assert kv.block_tables[rid] == before  # a failed swap leaves it intact
        elif op == "swap_in" and rid in kv.cpu_block_tables:
            if kv.can_swap_in(rid):
                kv.swap_in(rid)
                kv.free(rid)  # (its token count is not tracked here: release it)
        kv.check_invariants()
        for r in live.values():  # a held block keeps the key it had: nobody rewrote it
            for b, key in zip(kv.block_tables[r.request_id], r.block_keys, strict=False):
                assert kv.gpu.key_of[b] in (None, key)
        _check_preemption_bound(kv, list(live))
    for rid in list(live) + list(kv.cpu_block_tables):
        kv.free(rid)
    kv.check_invariants()
    assert kv.gpu.num_free_blocks == num_gpu and kv.cpu.num_free_blocks == num_cpu  # no leak
    assert sum(kv.gpu.ref_count) == 0 and kv.num_free_blocks_unshared == num_gpu


def _check_preemption_bound(kv: KVCacheManager, victims: list[str]) -> None:
    """Freeing `victims` frees at least what the policy's view promises: its free count plus
    their tables' lengths (each holder charged for a shared block)."""
    held = {b for ids in kv.block_tables.values() for b in ids}
    rest = {b for rid, ids in kv.block_tables.items() if rid not in victims for b in ids}
    really_free_after = kv.gpu.num_blocks - len(rest)
    promised = kv.num_free_blocks_unshared + sum(len(kv.block_tables[v]) for v in victims)
    assert promised <= really_free_after
    assert kv.num_free_blocks_unshared == kv.gpu.num_blocks - sum(
        map(len, kv.block_tables.values())
    )
    assert kv.gpu.num_free_blocks == kv.gpu.num_blocks - len(held)


def test_eviction_is_lru_after_keyless_blocks():
    """Keyless free blocks go first; then the cached ones freed longest ago, a table's tail
    before its prefix; a hit takes a free cached block back out of the evictable list."""
    kv = KVCacheManager(6, BS, enable_prefix_caching=True)
    tracker = PrefixTracker(kv)
    a = _request("a", 0, 3 * BS + 1)  # 3 full blocks + 1 token
    tracker.add(a)
    tracker.admit(a)
    kv.allocate("a", a.num_tokens)
    a.num_computed_tokens = a.num_tokens
    tracker.on_computed(a)
    table = list(kv.block_tables["a"])
    assert [kv.gpu.key_of[b] is not None for b in table] == [True, True, True, False]
    kv.free("a")
    assert kv.gpu.num_evictable_blocks == 3 and kv.gpu.num_free_blocks == 6
    b = _request("b", 0, 2 * BS + 3)  # shares a's first 2 blocks
    tracker.add(b)
    assert tracker.num_cached_tokens("b") == 2 * BS
    assert tracker.admit(b) == 2 * BS and kv.block_tables["b"] == table[:2]
    assert kv.gpu.num_evictable_blocks == 1  # a's third block is still cached, free
    new = kv.allocate("b", b.num_tokens)  # a keyless block: the third cached one survives
    assert kv.gpu.key_of[table[2]] is not None and kv.gpu.num_evictions == 0
    kv.allocate("b", b.num_tokens + 3 * BS)  # 3 more: keyless ones, then the cached one
    assert kv.gpu.num_evictions == 1 and kv.gpu.key_of[table[2]] is None
    assert new and kv.gpu.num_free_blocks == 0
    kv.check_invariants()


def test_whole_prompt_cached_recomputes_the_last_block():
    """A prompt of exactly k full cached blocks hits k - 1 of them: the last token is computed."""
    kv = KVCacheManager(8, BS, enable_prefix_caching=True)
    tracker = PrefixTracker(kv)
    a = _request("a", 1, 4 * BS)
    tracker.add(a)
    tracker.admit(a)
    kv.allocate("a", a.num_tokens)
    a.num_computed_tokens = a.num_tokens
    tracker.on_computed(a)
    b = _request("b", 1, 4 * BS)
    tracker.add(b)
    assert tracker.num_cached_tokens("b") == 3 * BS


def test_tracker_follows_cache_and_eviction_events():
    """A waiting request's hit grows when a running request caches its blocks and shrinks when
    they are evicted, without being looked up again."""
    kv = KVCacheManager(4, BS, enable_prefix_caching=True)
    tracker = PrefixTracker(kv)
    w = _request("w", 2, 3 * BS + 2)
    tracker.add(w)
    assert tracker.num_cached_tokens("w") == 0
    a = _request("a", 2, 2 * BS)
    tracker.add(a)
    tracker.admit(a)
    kv.allocate("a", a.num_tokens)
    a.num_computed_tokens = a.num_tokens
    tracker.on_computed(a)
    assert tracker.num_cached_tokens("w") == 2 * BS
    kv.free("a")
    kv.allocate("x", 4 * BS)  # takes every block: both cached ones are evicted
    assert tracker.num_cached_tokens("w") == 0
