"""A step's attention planned once and launched on every layer's caches (kernels/launch.py)."""

from __future__ import annotations

import pytest
import torch
from kernel_factories import DEVICE, assert_close_rows, gpu, make_paged_batch, needs_kernels

from kernels.paged_attention import paged_extend_attention, paged_extend_attention_ref
from kernels.paged_decode import plan_decode_attention
from kernels.paged_extend import plan_extend_attention


def _layers(batch, num_layers: int, gen) -> torch.Tensor:
    """[num_layers, 2, *cache]: layer 0 is the batch's caches, each other one a different
    transform of them (the same blocks hold tokens, NaN padding stays NaN), all contiguous in
    one tensor as the runner's KV cache is."""
    k, v = batch.k_cache.cpu().float(), batch.v_cache.cpu().float()
    out = []
    for i in range(num_layers):
        noise = torch.randn(k.shape, generator=gen)
        out.append(torch.stack([k * (1 + i) + i * noise, v * (1 - 0.5 * i) - i * noise]))
    return torch.stack(out).to(batch.k_cache.dtype).to(DEVICE).contiguous()


def _mixed_batch(gen, dtype, num_decode: int, head_dim: int = 64, group: int = 4):
    """`num_decode` one-token sequences first, then prefill chunks over cached prefixes."""
    q_lens = [1] * num_decode + [7, 20, 1, 16]
    seq_lens = [int(x) for x in torch.randint(1, 150, (num_decode,), generator=gen)] + [
        7, 45, 33, 80]  # fmt: skip
    return make_paged_batch(q_lens, seq_lens, num_heads=2 * group, num_kv_heads=2,
                            head_dim=head_dim, block_size=16, dtype=dtype, gen=gen)  # fmt: skip


def _ref(batch, k, v):
    args = (batch.query, k, v, batch.block_tables, batch.query_start_loc, batch.seq_lens)
    return paged_extend_attention_ref(*[a.cpu() for a in args], 0.125)


def _check_plan_on_every_layer(gen, dtype, num_decode: int, head_dim: int = 64):
    batch = _mixed_batch(gen, dtype, num_decode, head_dim)
    cache = _layers(batch, 3, gen)
    out = torch.full_like(batch.query, float("nan"))
    plan = plan_extend_attention(
        batch.query, cache[0][0], cache[0][1], batch.block_tables, batch.query_start_loc,
        batch.seq_lens, batch.max_query_len, 0.125, out, num_decode_seqs=num_decode,
        max_decode_seq_len=batch.max_seq_len,
    )  # fmt: skip
    for layer in (1, 2, 0, 1):  # out of order: each call reads only the caches it is given
        out.fill_(float("nan"))
        assert plan(cache[layer][0], cache[layer][1]) is out
        assert_close_rows(out.cpu(), _ref(batch, cache[layer][0], cache[layer][1]), dtype)
    return batch, cache, plan


@needs_kernels
@pytest.mark.parametrize("num_decode", [0, 3])
def test_one_plan_serves_every_layer(gen, num_decode):
    _check_plan_on_every_layer(gen, torch.float32, num_decode)


@needs_kernels
def test_decode_plan_with_splits_serves_every_layer(gen):
    batch = make_paged_batch([1] * 3, [150, 17, 64], num_heads=8, num_kv_heads=2, head_dim=64,
                             block_size=16, dtype=torch.float32, gen=gen)  # fmt: skip
    cache = _layers(batch, 2, gen)
    plan = plan_decode_attention(batch.query, cache[0][0], cache[0][1], batch.block_tables,
                                 batch.seq_lens, 0.125, max_seq_len=256, num_splits=4)  # fmt: skip
    assert len(plan.launches) == 2  # the split kernel and the merge
    for layer in (1, 0):
        assert_close_rows(plan(cache[layer][0], cache[layer][1]).cpu(),
                          _ref(batch, cache[layer][0], cache[layer][1]), torch.float32)  # fmt: skip


def test_plan_launches_the_same_kernels_as_the_one_call_wrapper_gpu(gen):
    """8B-like heads in bf16, 40 decode rows (split-KV) and prefill chunks: one plan on every
    layer equals, bit for bit, the one-call wrapper on that layer."""
    batch, cache, plan = _check_plan_on_every_layer(gen, torch.bfloat16, 40, head_dim=128)
    for layer in range(3):
        want = paged_extend_attention(
            batch.query, cache[layer][0], cache[layer][1], batch.block_tables,
            batch.query_start_loc, batch.seq_lens, batch.max_query_len, 0.125,
            num_decode_seqs=40, max_decode_seq_len=batch.max_seq_len,
        )  # fmt: skip
        assert torch.equal(plan(cache[layer][0], cache[layer][1]), want)


for _mark in gpu:
    _mark(test_plan_launches_the_same_kernels_as_the_one_call_wrapper_gpu)


@needs_kernels
@pytest.mark.parametrize("num_decode", [0, 3])
def test_the_triton_backend_attends_through_its_plan(gen, num_decode):
    """TritonAttention.attend is its plan used once; the plan serves another layer too."""
    from harness.models.attention import AttentionMetadata, TritonAttention

    batch = _mixed_batch(gen, torch.float32, num_decode)
    cache = _layers(batch, 2, gen)
    meta = AttentionMetadata(
        slot_mapping=batch.query_start_loc[:0].long(), query_start_loc=batch.query_start_loc,
        seq_lens=batch.seq_lens, block_tables=batch.block_tables,
        max_query_len=batch.max_query_len, max_seq_len=batch.max_seq_len, is_decode_only=False,
        num_decode_seqs=num_decode, max_decode_seq_len=batch.max_seq_len,
    )  # fmt: skip
    backend = TritonAttention()
    got = backend.attend(batch.query, cache[0][0], cache[0][1], meta, 0.125)
    assert_close_rows(got.cpu(), _ref(batch, cache[0][0], cache[0][1]), torch.float32)
    plan = backend.plan(batch.query, cache[0][0], cache[0][1], meta, 0.125)
    assert_close_rows(plan(cache[1][0], cache[1][1]).cpu(),
                      _ref(batch, cache[1][0], cache[1][1]), torch.float32)  # fmt: skip
