"""Prefix caching: the extend (chunked prefill) path attends over cached blocks it did not write,
through block tables that share physical blocks (issue 16). Several sequences' tables point at
the same prefix blocks; each computes only its own suffix. The Triton kernel must equal the
torch reference and the same kernel over private copies of the shared blocks."""

from __future__ import annotations

import pytest
import torch
from kernel_factories import DEVICE, assert_close_rows, gpu, needs_kernels

from kernels.paged_attention import (
    paged_decode_attention,
    paged_decode_attention_ref,
    paged_extend_attention,
    paged_extend_attention_ref,
)

NUM_KV_HEADS, GROUP, HEAD_DIM = 2, 4, 64


def _shared_batch(gen, block_size: int, dtype, num_shared: list[int], suffixes: list[int]):
    """Sequence i shares the first `num_shared[i]` blocks of one common prefix (held once in the
    cache, never written by this batch) and computes `suffixes[i]` new tokens after them, into
    blocks of its own. Returns (query, k, v, shared tables, private tables, query_start_loc,
    seq_lens); the private tables point at copies of the shared blocks."""
    bs, prefix_blocks = block_size, max(num_shared)
    own = [-(-s // bs) for s in suffixes]
    copies = sum(num_shared)
    num_blocks = prefix_blocks + sum(own) + copies + 1  # the last one: NaN table padding
    shape = (num_blocks, bs, NUM_KV_HEADS, HEAD_DIM)
    k = torch.full(shape, float("nan"), dtype=dtype)
    v = torch.full(shape, float("nan"), dtype=dtype)
    perm = torch.randperm(num_blocks - 1, generator=gen).tolist()
    prefix, perm = perm[:prefix_blocks], perm[prefix_blocks:]
    for cache in (k, v):
        cache[prefix] = torch.randn(prefix_blocks, bs, NUM_KV_HEADS, HEAD_DIM, generator=gen).to(
            dtype
        )
    width = max(n + o for n, o in zip(num_shared, own, strict=True))
    shared = torch.full((len(suffixes), width), num_blocks - 1, dtype=torch.int32)
    private = shared.clone()
    for i, (n, s, o) in enumerate(zip(num_shared, suffixes, own, strict=True)):
        mine, perm = perm[:o], perm[o:]
        copy, perm = perm[:n], perm[n:]
        for cache in (k, v):  # the suffix's K/V, as the step's store would have written them
            flat = cache[mine].view(-1, NUM_KV_HEADS, HEAD_DIM)
            flat[:s] = torch.randn(s, NUM_KV_HEADS, HEAD_DIM, generator=gen).to(dtype)
            cache[mine] = flat.view(o, bs, NUM_KV_HEADS, HEAD_DIM)
            cache[copy] = cache[prefix[:n]]
        shared[i, : n + o] = torch.tensor(prefix[:n] + mine, dtype=torch.int32)
        private[i, : n + o] = torch.tensor(copy + mine, dtype=torch.int32)
    seq_lens = torch.tensor([n * bs + s for n, s in zip(num_shared, suffixes, strict=True)])
    qsl = torch.tensor([0, *torch.tensor(suffixes).cumsum(0).tolist()])
    query = torch.randn(sum(suffixes), NUM_KV_HEADS * GROUP, HEAD_DIM, generator=gen).to(dtype)
    to = dict(device=DEVICE)
    return (query.to(**to), k.to(**to), v.to(**to), shared.to(**to), private.to(**to),
            qsl.to(dtype=torch.int32, **to), seq_lens.to(dtype=torch.int32, **to))  # fmt: skip


def _check(gen, block_size, dtype, num_shared, suffixes):
    query, k, v, shared, private, qsl, seq_lens = _shared_batch(
        gen, block_size, dtype, num_shared, suffixes
    )
    k_before, v_before = k.clone(), v.clone()
    max_q = max(suffixes)
    out = torch.full_like(query, float("nan"))
    paged_extend_attention(query, k, v, shared, qsl, seq_lens, max_query_len=max_q, scale=0.125,
                           out=out)  # fmt: skip
    ref = paged_extend_attention_ref(*[a.cpu() for a in (query, k, v, shared, qsl, seq_lens)],
                                     0.125)  # fmt: skip
    assert_close_rows(out.cpu(), ref, dtype)
    # the same sequences over private copies of the prefix: the same numbers
    out_private = torch.full_like(query, float("nan"))
    paged_extend_attention(query, k, v, private, qsl, seq_lens, max_query_len=max_q, scale=0.125,
                           out=out_private)  # fmt: skip
    torch.testing.assert_close(out, out_private, rtol=0, atol=0)
    # the cached blocks are read, never written
    for after, before in ((k, k_before), (v, v_before)):
        assert torch.equal(after.isnan(), before.isnan())
        assert torch.equal(after.nan_to_num(), before.nan_to_num())


# 1, 2 and 3 shared blocks; a suffix off a block edge, on one, a one-token suffix (the last
# token recomputed after a whole-prompt hit), and one sequence sharing nothing.
NUM_SHARED, SUFFIXES = [1, 2, 3, 3, 0], [9, 16, 1, 23, 12]


@needs_kernels
@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extend_over_shared_prefix_blocks(gen, block_size, dtype):
    _check(gen, block_size, dtype, NUM_SHARED, SUFFIXES)


@needs_kernels
def test_decode_over_shared_prefix_blocks(gen):
    """Decode rows whose tables share prefix blocks read them like their own."""
    query, k, v, shared, _, _, seq_lens = _shared_batch(
        gen, 16, torch.float32, [2, 2, 1], [5, 17, 1]
    )
    q = torch.randn(3, NUM_KV_HEADS * GROUP, HEAD_DIM, generator=gen).to(query.device)
    out = paged_decode_attention(q, k, v, shared, seq_lens, 0.125, max_seq_len=int(seq_lens.max()))
    ref = paged_decode_attention_ref(*[a.cpu() for a in (q, k, v, shared, seq_lens)], 0.125)
    assert_close_rows(out.cpu(), ref, torch.float32)


@gpu[0]
@gpu[1]
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [16, 32])
def test_extend_over_shared_prefix_blocks_gpu(gen, block_size, dtype):
    _check(gen, block_size, dtype, [4, 40, 100, 100, 0], [300, 16, 1, 511, 64])
