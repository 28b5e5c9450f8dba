"""Paged KV-cache bookkeeping: block pools, per-request block tables, the CPU swap pool.

Pure bookkeeping: no tensors live here. The executor owns the cache tensors and is told which
block ids to read, write, or copy between the GPU and CPU pools.
"""

from __future__ import annotations

from collections import deque


class OutOfBlocksError(RuntimeError):
    """Raised when a pool cannot hand out the blocks asked for."""


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BlockPool:
    """A fixed number of equal-sized blocks and their free list."""

    def __init__(self, num_blocks: int, name: str = "gpu") -> None:
        if num_blocks < 0:
            raise ValueError(f"{name} pool: num_blocks must be >= 0, got {num_blocks}")
        self.name = name
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._is_free = [True] * num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise OutOfBlocksError(
                f"{self.name} pool: asked for {n} blocks, {len(self._free)} free"
            )
        block_ids = [self._free.popleft() for _ in range(n)]
        for b in block_ids:
            self._is_free[b] = False
        return block_ids

    def free(self, block_ids: list[int]) -> None:
        for b in block_ids:
            if self._is_free[b]:
                raise RuntimeError(f"{self.name} pool: block {b} freed twice")
            self._is_free[b] = True
            self._free.append(b)


class KVCacheManager:
    """Block tables of every request on the GPU pool and in the CPU swap pool.

    `watermark_blocks` is a reserve that admissions of *new* requests should leave free
    (vLLM's watermark): without it a fresh admission can force a preemption on the next step.
    """

    def __init__(
        self,
        num_gpu_blocks: int,
        block_size: int,
        num_cpu_blocks: int = 0,
        watermark: float = 0.01,
    ) -> None:
        if block_size < 1 or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {block_size}")
        self.block_size = block_size
        self.gpu = BlockPool(num_gpu_blocks, "gpu")
        self.cpu = BlockPool(num_cpu_blocks, "cpu")
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self.block_tables: dict[str, list[int]] = {}  # request id -> GPU block ids, in order
        self.cpu_block_tables: dict[str, list[int]] = {}  # request id -> CPU block ids

    # -- sizes ---------------------------------------------------------------------------
    def num_blocks_for(self, num_tokens: int) -> int:
        return cdiv(num_tokens, self.block_size)

    def num_new_blocks(self, request_id: str, num_tokens: int) -> int:
        """Blocks to add so that `request_id` can hold `num_tokens` tokens."""
        have = len(self.block_tables.get(request_id, ()))
        return max(0, self.num_blocks_for(num_tokens) - have)

    def can_allocate(self, request_id: str, num_tokens: int, keep_watermark: bool = False) -> bool:
        reserve = self.watermark_blocks if keep_watermark else 0
        return self.num_new_blocks(request_id, num_tokens) <= self.gpu.num_free_blocks - reserve

    # -- GPU pool ------------------------------------------------------------------------
    def allocate(self, request_id: str, num_tokens: int) -> list[int]:
        """Grow the request's block table to hold `num_tokens`; returns the new block ids."""
        if request_id in self.cpu_block_tables:
            raise RuntimeError(f"request {request_id} is swapped out; swap it in first")
        new = self.gpu.allocate(self.num_new_blocks(request_id, num_tokens))
        self.block_tables.setdefault(request_id, []).extend(new)
        return new

    def free(self, request_id: str) -> None:
        """Release every block (GPU and CPU) the request holds; a no-op if it holds none."""
        self.gpu.free(self.block_tables.pop(request_id, []))
        self.cpu.free(self.cpu_block_tables.pop(request_id, []))

    # -- swap ----------------------------------------------------------------------------
    def can_swap_out(self, request_id: str) -> bool:
        return len(self.block_tables.get(request_id, ())) <= self.cpu.num_free_blocks

    def swap_out(self, request_id: str) -> list[tuple[int, int]]:
        """Move the request's blocks to the CPU pool; returns (gpu_block, cpu_block) pairs."""
        gpu_ids = self.block_tables.pop(request_id, [])
        try:
            cpu_ids = self.cpu.allocate(len(gpu_ids))
        except OutOfBlocksError:
            self.block_tables[request_id] = gpu_ids
            raise
        self.gpu.free(gpu_ids)
        self.cpu_block_tables[request_id] = cpu_ids
        return list(zip(gpu_ids, cpu_ids, strict=True))

    def can_swap_in(self, request_id: str) -> bool:
        return len(self.cpu_block_tables.get(request_id, ())) <= self.gpu.num_free_blocks

    def swap_in(self, request_id: str) -> list[tuple[int, int]]:
        """Bring the request's blocks back to the GPU; returns (cpu_block, gpu_block) pairs."""
        cpu_ids = self.cpu_block_tables[request_id]
        gpu_ids = self.gpu.allocate(len(cpu_ids))
        del self.cpu_block_tables[request_id]
        self.cpu.free(cpu_ids)
        self.block_tables[request_id] = gpu_ids
        return list(zip(cpu_ids, gpu_ids, strict=True))

    # -- checks --------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise if a block is owned twice, or free + owned != total, in either pool."""
        for pool, tables in ((self.gpu, self.block_tables), (self.cpu, self.cpu_block_tables)):
            owned = [b for ids in tables.values() for b in ids]
            if len(owned) != len(set(owned)):
                raise AssertionError(f"{pool.name} pool: a block is owned twice")
            free = set(pool._free)
            if free & set(owned):
                raise AssertionError(f"{pool.name} pool: a block is both free and owned")
            if len(free) != len(pool._free) or len(free) + len(owned) != pool.num_blocks:
                raise AssertionError(
                    f"{pool.name} pool: {len(free)} free + {len(owned)} owned != {pool.num_blocks}"
                )
