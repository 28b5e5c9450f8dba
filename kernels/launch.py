"""Attention launches planned once per step and replayed for every layer.

Every layer of a step attends over the same batch: only its K/V cache differs. A plan does the
step's host work once (input checks, metadata slices and offsets, split counts, scratch
buffers, grids and tile shapes); each layer then only launches its kernels (`KernelLaunch`) on
its own caches. Between the piecewise CUDA graphs (harness/executors/cuda_graphs.py) that and a
graph replay are the host's whole per-layer work: on an H200 a mixed step of 16 decodes and a
128-token chunk of Llama-3-8B costs its host 3.3 ms to launch, where calling the backend per
layer took 6-9 ms, against the step's 7.2 ms of GPU work
(benchmarks/sim_accuracy_h200_2026-12-02_round5.md).
"""

from __future__ import annotations

import torch

KV_ARGS = ("k_cache_ptr", "v_cache_ptr")


class KernelLaunch:
    """One Triton kernel with all its arguments fixed but the K/V cache pointers.

    `args` names every kernel parameter (constexprs included); `options` are the launch options
    (num_warps, num_stages). Each call launches through Triton with the layer's caches put in.
    (Calling the compiled kernel's launcher directly for the later layers, past Triton's binder,
    would save a few microseconds more per launch; it is not measured, so not done.)"""

    def __init__(self, fn, grid: tuple[int, ...], args: dict, options: dict | None = None):
        self.fn, self.grid, self.options = fn, tuple(grid), options or {}
        self.args = args
        self.kv = [n for n in KV_ARGS if n in args]

    def __call__(self, k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None):
        args = dict(self.args)
        for name, cache in zip(self.kv, (k_cache, v_cache), strict=False):
            args[name] = cache
        self.fn[self.grid](**args, **self.options)


class AttentionPlan:
    """One step's attention launches: call it with a layer's K and V caches (each
    `[num_blocks, block_size, num_kv_heads, head_dim]`, the shape and strides it was planned
    with); returns `out`, written for that layer. The launches run in order on the current
    stream, so scratch buffers shared by the layers are never read and written at once."""

    def __init__(self, launches: list[KernelLaunch], out: torch.Tensor) -> None:
        self.launches, self.out = launches, out

    def __call__(self, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        for launch in self.launches:
            launch(k_cache, v_cache)
        return self.out
