"""A swap out and back in restores the KV cache bit for bit (the cpu executor's real copies)."""

from __future__ import annotations

import torch

from harness.executors.model_runner import ModelRunner
from tests.policies.conftest import tiny_model


def _runner_with_random_cache() -> ModelRunner:
    runner = ModelRunner(tiny_model(), num_gpu_blocks=12, num_cpu_blocks=8, block_size=16)
    torch.manual_seed(0)
    runner.kv_cache.copy_(torch.randn_like(runner.kv_cache))
    return runner


def test_swap_out_and_in_restores_blocks_bit_for_bit_at_new_places():
    runner = _runner_with_random_cache()
    before = runner.kv_cache.clone()
    runner.swap_out([(3, 5), (7, 0), (8, 1)])  # (gpu block, cpu block)
    runner.kv_cache[:, :, [3, 7, 8]] = 0.0  # the freed blocks are reused by others
    runner.swap_in([(5, 10), (0, 2), (1, 9)])  # (cpu block, gpu block): new places
    for old, new in ((3, 10), (7, 2), (8, 9)):
        assert torch.equal(runner.kv_cache[:, :, new], before[:, :, old])


def test_round_trip_restores_the_whole_tensor():
    runner = _runner_with_random_cache()
    before = runner.kv_cache.clone()
    runner.swap_out([(b, b) for b in range(8)])
    runner.kv_cache[:, :, :8] = 0.0
    runner.swap_in([(b, b) for b in range(8)])
    assert torch.equal(runner.kv_cache, before)
