"""KV block bookkeeping under random operation sequences (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.kv_cache import KVCacheManager, OutOfBlocksError

ops = st.lists(
    st.tuples(
        st.sampled_from(["grow", "free", "swap_out", "swap_in"]),
        st.integers(0, 7),  # request index
        st.integers(1, 200),  # tokens to grow by
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(
    ops=ops, num_gpu=st.integers(1, 40), num_cpu=st.integers(0, 40), bs=st.sampled_from([1, 4, 16])
)
def test_random_operations_keep_pools_consistent(ops, num_gpu, num_cpu, bs):
    kv = KVCacheManager(num_gpu, bs, num_cpu)
    tokens: dict[str, int] = {}
    for op, i, n in ops:
        rid = f"r{i}"
        if op == "grow" and rid not in kv.cpu_block_tables:
            want = tokens.get(rid, 0) + n
            if kv.can_allocate(rid, want):
                kv.allocate(rid, want)
                tokens[rid] = want
            else:
                with pytest.raises(OutOfBlocksError):
                    kv.allocate(rid, want)
            assert len(kv.block_tables.get(rid, [])) == kv.num_blocks_for(tokens.get(rid, 0))
        elif op == "free":
            kv.free(rid)
            tokens.pop(rid, None)
        elif op == "swap_out" and rid in kv.block_tables:
            before = list(kv.block_tables[rid])
            if kv.can_swap_out(rid):
                pairs = kv.swap_out(rid)
                assert [g for g, _ in pairs] == before
            else:
                with pytest.raises(OutOfBlocksError):
                    kv.swap_out(rid)
                assert kv.block_tables[rid] == before  # a failed swap leaves the request intact
        elif op == "swap_in" and rid in kv.cpu_block_tables:
            if kv.can_swap_in(rid):
                n_blocks = len(kv.cpu_block_tables[rid])
                assert len(kv.swap_in(rid)) == n_blocks
        kv.check_invariants()
    for rid in list(tokens) + list(kv.cpu_block_tables):
        kv.free(rid)
    kv.check_invariants()
    assert kv.gpu.num_free_blocks == num_gpu and kv.cpu.num_free_blocks == num_cpu  # no leak


def test_double_free_is_caught():
    kv = KVCacheManager(4, 16)
    blocks = kv.gpu.allocate(2)
    kv.gpu.free(blocks)
    with pytest.raises(RuntimeError, match="freed twice"):
        kv.gpu.free(blocks)


def test_watermark_reserves_blocks_for_running_requests():
    kv = KVCacheManager(100, 16, watermark=0.1)
    assert kv.can_allocate("a", 90 * 16, keep_watermark=True)
    assert not kv.can_allocate("a", 91 * 16, keep_watermark=True)
    assert kv.can_allocate("a", 100 * 16)


@pytest.mark.parametrize("bs", [0, 3, 12])
def test_block_size_must_be_power_of_two(bs):
    with pytest.raises(ValueError, match="power of two"):
        KVCacheManager(8, bs)
