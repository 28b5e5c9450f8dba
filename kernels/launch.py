"""Attention launches planned once per step and replayed for every layer.

Every layer of a step attends over the same batch: only its K/V cache differs. A plan does the
step's host work once (input checks, metadata slices, split counts, scratch buffers, grids and
tile shapes); launching a layer then costs a few microseconds of Python per kernel. Triton's
own launch path (`kernel[grid](...)`: binding and specialising every argument, a cache lookup)
runs for the first layer only; the later layers call the compiled kernel directly with the same
arguments but the cache pointers (`KernelLaunch`). Between the piecewise CUDA graphs
(harness/executors/cuda_graphs.py) that is the host's whole per-layer work.
"""

from __future__ import annotations

import torch
from triton import knobs

KV_ARGS = ("k_cache_ptr", "v_cache_ptr")


class KernelLaunch:
    """One Triton kernel with all its arguments fixed but the K/V cache pointers.

    `args` names every kernel parameter (constexprs included); `options` are the launch options
    (num_warps, num_stages). The first call launches through Triton (compiling the variant if
    needed) and keeps the compiled kernel; later calls hand the same argument list, with the
    new caches, to the compiled kernel's launcher. That is valid because a layer's caches are
    views of one contiguous tensor at block-aligned offsets, so they specialise as the first
    layer's did. Under the interpreter, or while a Triton launch hook is set (profilers), every
    call takes Triton's path."""

    def __init__(self, fn, grid: tuple[int, ...], args: dict, options: dict | None = None):
        self.fn, self.options = fn, options or {}
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.args = args
        self.kv = [n for n in KV_ARGS if n in args]
        self._compiled = None
        self.fast_calls = 0  # launches that bypassed Triton's binder (tests check it)

    def __call__(self, k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None):
        if self._compiled is not None and _no_hooks():
            values = self._values
            if self.kv:
                values = list(values)
                for pos, cache in zip(self._kv_pos, (k_cache, v_cache), strict=False):
                    values[pos] = cache
            c = self._compiled
            c.run(*self.grid, self._stream, c.function, c.packed_metadata, None, None, None,
                  *values)  # fmt: skip
            self.fast_calls += 1
            return
        args = dict(self.args)
        for name, cache in zip(self.kv, (k_cache, v_cache), strict=False):
            args[name] = cache
        compiled = self.fn[self.grid](**args, **self.options)
        if self._compiled is None and _launchable(compiled):
            names = list(self.fn.arg_names)
            self._values = [args[n] for n in names]
            self._kv_pos = [names.index(n) for n in self.kv]
            self._stream = torch.cuda.current_stream(args[names[0]].device).cuda_stream
            self._compiled = compiled


def _launchable(compiled) -> bool:
    """A compiled GPU kernel with the launcher this module calls (not the interpreter's)."""
    return all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata"))


def _no_hooks() -> bool:
    rt = knobs.runtime
    return rt.launch_enter_hook is None and rt.launch_exit_hook is None


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

    @property
    def fast_calls(self) -> int:
        return sum(launch.fast_calls for launch in self.launches)
