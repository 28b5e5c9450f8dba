"""swap_blocks (Triton + async copies) against swap_blocks_ref; swap out and in is lossless."""

from __future__ import annotations

import pytest
import torch
from kernel_factories import DEVICE, gpu, needs_kernels

from kernels.kv_swap import _swap_in_staged, _swap_out_staged, swap_blocks, swap_blocks_ref


def _cache(gen, num_blocks, dtype=torch.bfloat16, num_layers=3, device=DEVICE, pin=False):
    shape = (num_layers, 2, num_blocks, 16, 2, 64)  # [layers, K/V, blocks, block_size, heads, dim]
    t = torch.randn(shape, generator=gen).to(dtype)
    return t.pin_memory() if pin else t.to(device)


def _ids(gen, n, num_blocks, contiguous=False):
    if contiguous:
        start = int(torch.randint(0, num_blocks - n + 1, (1,), generator=gen))
        return torch.arange(start, start + n)
    return torch.randperm(num_blocks, generator=gen)[:n]


@needs_kernels
@pytest.mark.parametrize("swap", [swap_blocks, _swap_out_staged, _swap_in_staged])
@pytest.mark.parametrize("contiguous", [False, True])
def test_swap_matches_ref(gen, swap, contiguous):
    src, dst = _cache(gen, 20), _cache(gen, 12)
    src_ids, dst_ids = _ids(gen, 7, 20, contiguous), _ids(gen, 7, 12, contiguous)
    expected = dst.cpu()
    swap_blocks_ref(src.cpu(), expected, src_ids, dst_ids)
    swap(src, dst, src_ids, dst_ids)
    assert torch.equal(dst.cpu(), expected)


@needs_kernels
def test_swap_out_and_back_in_restores_cache(gen):
    cache = _cache(gen, 16, dtype=torch.float32)
    original = cache.clone()
    host = _cache(gen, 8, dtype=torch.float32, device="cpu")
    dev_ids, host_ids = _ids(gen, 5, 16), torch.tensor([2, 3, 4, 7, 0])
    _swap_out_staged(cache, host, dev_ids, host_ids)
    cache[:, :, dev_ids.to(cache.device)] = float("nan")  # the blocks get reused meanwhile
    _swap_in_staged(host, cache, host_ids, dev_ids)
    assert torch.equal(cache, original)


def test_swap_rejects_bad_inputs():
    a, b = torch.zeros(2, 2, 4, 16, 2, 64), torch.zeros(2, 2, 4, 16, 2, 32)
    ids = torch.arange(2)
    with pytest.raises(ValueError, match="differ outside dim 2"):
        swap_blocks(a, b, ids, ids)
    with pytest.raises(ValueError, match="equal in length"):
        swap_blocks(a, a.clone(), ids, ids[:1])
    with pytest.raises(ValueError, match="out of range"):
        swap_blocks(a, a.clone(), ids, ids + 3)
    with pytest.raises(ValueError, match="mode"):
        swap_blocks(a, a.clone(), ids, ids, mode="fast")


@pytest.mark.parametrize("mode", ["staged", "zero_copy", "auto"])
@pytest.mark.parametrize("n,contiguous", [(1, False), (64, True), (64, False), (300, True)])
def test_swap_gpu_host_roundtrip_gpu(gen, mode, n, contiguous):
    """Out to pinned host and back in, bit for bit, on a side stream."""
    cache = _cache(gen, 400, num_layers=4)
    original = cache.clone()
    host = _cache(gen, 320, num_layers=4, pin=True)
    dev_ids, host_ids = _ids(gen, n, 400), _ids(gen, n, 320, contiguous)
    expected_host = host.clone()
    swap_blocks_ref(cache.cpu(), expected_host, dev_ids, host_ids)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    swap_blocks(cache, host, dev_ids, host_ids, stream=stream, mode=mode)
    stream.synchronize()
    assert torch.equal(host, expected_host)
    cache[:, :, dev_ids.cuda()] = float("nan")
    stream.wait_stream(torch.cuda.current_stream())
    swap_blocks(host, cache, host_ids, dev_ids, stream=stream, mode=mode)
    stream.synchronize()
    assert torch.equal(cache, original)


def test_swap_unpinned_host_rejected_gpu():
    with pytest.raises(ValueError, match="pinned"):
        swap_blocks(torch.zeros(1, 2, 2, 16, 1, 64, device="cuda"), torch.zeros(1, 2, 2, 16, 1, 64),
                    torch.arange(1), torch.arange(1))  # fmt: skip


for _test in (test_swap_gpu_host_roundtrip_gpu, test_swap_unpinned_host_rejected_gpu):
    for _mark in gpu:
        _mark(_test)
