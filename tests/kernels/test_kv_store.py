"""kv_store (Triton) against kv_store_ref: exact copies, -1 slots skipped."""

from __future__ import annotations

import pytest
import torch
from kernel_factories import DEVICE, gpu, needs_kernels

from kernels.kv_store import kv_store, kv_store_ref


def _check_store(gen, num_tokens, num_kv_heads, head_dim, block_size, src_dtype, cache_dtype):
    num_blocks = -(-num_tokens // block_size) + 3
    num_slots = num_blocks * block_size
    slots = torch.randperm(num_slots, generator=gen)[:num_tokens]
    slots[torch.rand(num_tokens, generator=gen) < 0.25] = -1  # padding tokens
    # key/value as strided views of one fused qkv projection, as a model produces them
    qkv = torch.randn(num_tokens, 3, num_kv_heads, head_dim, generator=gen).to(src_dtype)
    key, value = qkv[:, 1], qkv[:, 2]
    cache_shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(cache_shape, generator=gen).to(cache_dtype)
    v_cache = torch.randn(cache_shape, generator=gen).to(cache_dtype)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    kv_store_ref(key, value, k_ref, v_ref, slots)
    k_dev, v_dev = k_cache.to(DEVICE), v_cache.to(DEVICE)
    kv_store(key.to(DEVICE), value.to(DEVICE), k_dev, v_dev, slots.to(DEVICE))
    assert torch.equal(k_dev.cpu(), k_ref) and torch.equal(v_dev.cpu(), v_ref)
    # the -1 tokens touched nothing: every slot not in `slots` still holds its old value
    untouched = torch.ones(num_slots, dtype=torch.bool)
    untouched[slots[slots >= 0]] = False
    flat = k_dev.cpu().view(num_slots, -1)
    assert torch.equal(flat[untouched], k_cache.view(num_slots, -1)[untouched])


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "num_kv_heads,head_dim,block_size", [(1, 64, 16), (8, 128, 32), (3, 64, 16)]
)
def test_kv_store_matches_ref(gen, dtype, num_kv_heads, head_dim, block_size):
    _check_store(gen, 37, num_kv_heads, head_dim, block_size, dtype, dtype)


@needs_kernels
def test_kv_store_all_padding_writes_nothing(gen):
    k_cache = torch.randn(2, 16, 2, 64, generator=gen).to(DEVICE)
    before = k_cache.clone()
    key = torch.randn(5, 2, 64, generator=gen).to(DEVICE)
    kv_store(key, key, k_cache, k_cache.clone(), torch.full((5,), -1, device=DEVICE))
    assert torch.equal(k_cache, before)


def test_kv_store_rejects_bad_inputs():
    key = torch.randn(4, 2, 64)
    cache = torch.randn(3, 16, 2, 64)
    slots = torch.arange(4)
    with pytest.raises(ValueError, match="slot_mapping must be"):
        kv_store(key, key, cache, cache, slots[:3])
    with pytest.raises(ValueError, match="heads/head_dim"):
        kv_store(key, key, torch.randn(3, 16, 4, 64), torch.randn(3, 16, 4, 64), slots)
    with pytest.raises(ValueError, match="unit stride"):
        kv_store(key.transpose(0, 2).contiguous().transpose(0, 2), key, cache, cache, slots)
    with pytest.raises(ValueError, match="int32 or int64"):
        kv_store(key, key, cache, cache, slots.float())


@pytest.mark.parametrize("src_dtype,cache_dtype", [
    (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
    (torch.float32, torch.bfloat16), (torch.float16, torch.float16),
])  # fmt: skip
@pytest.mark.parametrize("num_tokens", [1, 4096])
def test_kv_store_matches_ref_gpu(gen, src_dtype, cache_dtype, num_tokens):
    """On the GPU also a casting store (the interpreter rounds fp32 -> bf16 differently)."""
    _check_store(gen, num_tokens, 8, 128, 16, src_dtype, cache_dtype)


for _mark in gpu:
    _mark(test_kv_store_matches_ref_gpu)
