"""Paged KV-cache bookkeeping: block pools, per-request block tables, the CPU swap pool, and
automatic prefix caching (docs/prefix_caching.md).

Pure bookkeeping: no tensors live here. The executor owns the cache tensors and is told which
block ids to read, write, or copy between the GPU and CPU pools.

Prefix caching: a full GPU block is identified by a key chained over its prefix and its tokens
(`BlockKey`). Blocks are reference-counted and shared by every request whose prefix they hold;
a block whose count drops to 0 keeps its contents and key (evictable) until it is reused, and
is evicted least-recently-freed first, after the blocks that hold no key. A request only ever
writes into blocks it allocated itself (a hit stops at a full block before its last token).
"""

from __future__ import annotations

from collections import OrderedDict, deque

#: (digest of the previous block's key, or 0; the block's token ids). Dict equality compares
#: the tokens themselves, so a hit is a hash collision only if two prefixes' digests collide.
BlockKey = tuple[int, tuple[int, ...]]


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


class CachingBlockPool(BlockPool):
    """The GPU pool: reference-counted blocks, the key each full cached block holds, and two
    free lists: blocks without a key (handed out first, oldest freed first) and evictable cached
    blocks (least recently freed first). With nothing ever cached it is exactly a `BlockPool`."""

    def __init__(self, num_blocks: int, name: str = "gpu") -> None:
        super().__init__(num_blocks, name)
        self.ref_count = [0] * num_blocks
        self.key_of: list[BlockKey | None] = [None] * num_blocks
        self.cached: dict[BlockKey, int] = {}  # key -> the block holding it
        self._evictable: OrderedDict[int, None] = OrderedDict()  # free cached blocks, LRU first
        self.num_evictions = 0  # cached blocks whose key was dropped to reuse them
        self.on_evict = None  # callable(key) or None: told when a key leaves the cache
        self.on_cache = None  # callable(key) or None: told when a key enters the cache

    @property
    def num_free_blocks(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def num_evictable_blocks(self) -> int:
        return len(self._evictable)

    def allocate(self, n: int) -> list[int]:
        """`n` blocks no one holds: keyless ones first, then the least recently freed cached."""
        if n > self.num_free_blocks:
            raise OutOfBlocksError(
                f"{self.name} pool: asked for {n} blocks, {self.num_free_blocks} free"
            )
        block_ids = []
        for _ in range(n):
            if self._free:
                b = self._free.popleft()
            else:
                b, _ = self._evictable.popitem(last=False)
                self._drop_key(b)
            self._is_free[b] = False
            self.ref_count[b] = 1
            block_ids.append(b)
        return block_ids

    def _drop_key(self, b: int) -> None:
        key = self.key_of[b]
        self.key_of[b] = None
        del self.cached[key]
        self.num_evictions += 1
        if self.on_evict is not None:
            self.on_evict(key)

    def touch(self, block_ids: list[int]) -> None:
        """One more holder of each (cached) block; a free one leaves the evictable list."""
        for b in block_ids:
            if self.ref_count[b] == 0:
                del self._evictable[b]
                self._is_free[b] = False
            self.ref_count[b] += 1

    def free(self, block_ids: list[int]) -> None:
        """One holder fewer of each block. A block no one holds is free: a cached one joins the
        evictable list (a table's last block first, so that it is evicted before its prefix),
        a keyless one the keyless list."""
        for b in reversed(block_ids):
            if self.ref_count[b] <= 0:
                raise RuntimeError(f"{self.name} pool: block {b} freed twice")
            self.ref_count[b] -= 1
        for b in block_ids:  # keyless blocks in table order (exactly BlockPool's order)
            if self.ref_count[b] == 0 and self.key_of[b] is None:
                self._is_free[b] = True
                self._free.append(b)
        for b in reversed(block_ids):
            if self.ref_count[b] == 0 and self.key_of[b] is not None and not self._is_free[b]:
                self._is_free[b] = True
                self._evictable[b] = None

    def cache(self, b: int, key: BlockKey) -> bool:
        """Give held block `b` the key of its (full, computed) contents, unless another block
        already holds that key (then `b` stays keyless and is simply freed later)."""
        if key in self.cached or self.key_of[b] is not None:
            return False
        self.key_of[b], self.cached[key] = key, b
        if self.on_cache is not None:
            self.on_cache(key)
        return True


class KVCacheManager:
    """Block tables of every request on the GPU pool and in the CPU swap pool.

    `watermark_blocks` is a reserve that admissions of *new* requests should leave free
    (vLLM's watermark): without it a fresh admission can force a preemption on the next step.
    `enable_prefix_caching`: full blocks are cached by key and shared (module docstring).
    """

    def __init__(
        self,
        num_gpu_blocks: int,
        block_size: int,
        num_cpu_blocks: int = 0,
        watermark: float = 0.01,
        enable_prefix_caching: bool = False,
    ) -> None:
        if block_size < 1 or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {block_size}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.gpu = CachingBlockPool(num_gpu_blocks, "gpu")
        self.cpu = BlockPool(num_cpu_blocks, "cpu")
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self.block_tables: dict[str, list[int]] = {}  # request id -> GPU block ids, in order
        self.cpu_block_tables: dict[str, list[int]] = {}  # request id -> CPU block ids
        self._num_keyed: dict[str, int] = {}  # request id -> leading table blocks given keys
        self.num_keyed_of = self._num_keyed  # read-only to others (the engine's fast check)
        self._num_table_blocks = 0  # sum of the GPU tables' lengths (a shared block per holder)

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

    @property
    def num_free_blocks_unshared(self) -> int:
        """Free GPU blocks as if no block were shared: the free blocks (evictable ones included)
        less, for each block held by k > 1 tables, k - 1. What the policy's view reports: each
        holder is charged a shared block, so preempting any set of requests frees at least the
        blocks their tables list (docs/prefix_caching.md, "Block accounting")."""
        shared_excess = self._num_table_blocks - self.gpu.num_used_blocks
        return self.gpu.num_free_blocks - shared_excess

    # -- GPU pool ------------------------------------------------------------------------
    def allocate(self, request_id: str, num_tokens: int) -> list[int]:
        """Grow the request's block table to hold `num_tokens`; returns the new block ids."""
        if request_id in self.cpu_block_tables:
            raise RuntimeError(f"request {request_id} is swapped out; swap it in first")
        new = self.gpu.allocate(self.num_new_blocks(request_id, num_tokens))
        self.block_tables.setdefault(request_id, []).extend(new)
        self._num_table_blocks += len(new)
        return new

    def num_cached_blocks(self, keys: list[BlockKey], start: int = 0) -> int:
        """How many of `keys`, from `start` on, are cached in a row (counted from `start`)."""
        cached, n = self.gpu.cached, start
        while n < len(keys) and keys[n] in cached:
            n += 1
        return n - start

    def take_cached(self, request_id: str, keys: list[BlockKey]) -> list[int]:
        """Start the (empty) table of `request_id` with the cached blocks of `keys` (all must
        be cached), shared with their other holders; returns their ids."""
        if self.block_tables.get(request_id) or request_id in self.cpu_block_tables:
            raise RuntimeError(f"request {request_id} already holds blocks")
        blocks = [self.gpu.cached[k] for k in keys]
        self.gpu.touch(blocks)
        self.block_tables[request_id] = list(blocks)
        self._num_keyed[request_id] = len(blocks)
        self._num_table_blocks += len(blocks)
        return blocks

    def num_keyed(self, request_id: str) -> int:
        """How many leading blocks of the request's GPU table hold a key."""
        return self._num_keyed.get(request_id, 0)

    def cache_blocks(self, request_id: str, keys: list[BlockKey], num_full: int) -> None:
        """Key the request's first `num_full` table blocks (full, computed, their token ids on
        the host) with `keys[:num_full]`, from the first not keyed yet."""
        if not self.enable_prefix_caching:
            return
        table = self.block_tables.get(request_id)
        if not table:
            return
        start, stop = self._num_keyed.get(request_id, 0), min(num_full, len(table))
        for i in range(start, stop):
            self.gpu.cache(table[i], keys[i])
        self._num_keyed[request_id] = max(start, stop)

    def free(self, request_id: str) -> None:
        """Release every block (GPU and CPU) the request holds; a no-op if it holds none."""
        table = self.block_tables.pop(request_id, [])
        self._num_table_blocks -= len(table)
        self._num_keyed.pop(request_id, None)
        self.gpu.free(table)
        self.cpu.free(self.cpu_block_tables.pop(request_id, []))

    # -- swap ----------------------------------------------------------------------------
    def can_swap_out(self, request_id: str) -> bool:
        return len(self.block_tables.get(request_id, ())) <= self.cpu.num_free_blocks

    def swap_out(self, request_id: str) -> list[tuple[int, int]]:
        """Copy the request's blocks to the CPU pool and release its GPU blocks; returns
        (gpu_block, cpu_block) pairs. A shared block is copied (read only) and stays with its
        other holders; one no longer held keeps its contents and key (evictable)."""
        gpu_ids = self.block_tables.get(request_id, [])
        cpu_ids = self.cpu.allocate(len(gpu_ids))  # raises, leaving the request intact
        self.block_tables.pop(request_id, None)
        self._num_table_blocks -= len(gpu_ids)
        self._num_keyed.pop(request_id, None)
        self.gpu.free(gpu_ids)
        self.cpu_block_tables[request_id] = cpu_ids
        return list(zip(gpu_ids, cpu_ids, strict=True))

    def can_swap_in(self, request_id: str) -> bool:
        return len(self.cpu_block_tables.get(request_id, ())) <= self.gpu.num_free_blocks

    def swap_in(self, request_id: str) -> list[tuple[int, int]]:
        """Bring the request's blocks back into fresh GPU blocks of its own (keyed again as
        `cache_blocks` is next called); returns (cpu_block, gpu_block) pairs."""
        cpu_ids = self.cpu_block_tables[request_id]
        gpu_ids = self.gpu.allocate(len(cpu_ids))
        del self.cpu_block_tables[request_id]
        self.cpu.free(cpu_ids)
        self.block_tables[request_id] = gpu_ids
        self._num_table_blocks += len(gpu_ids)
        return list(zip(cpu_ids, gpu_ids, strict=True))

    # -- checks --------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise unless: on the GPU each block's reference count equals the tables listing it,
        a listed block is not free, held + evictable + keyless free = total, and the key map
        agrees with the blocks' keys; on the CPU no block is owned twice and free + owned =
        total."""
        gpu, fail = self.gpu, AssertionError
        counts = [0] * gpu.num_blocks
        for ids in self.block_tables.values():
            if len(ids) != len(set(ids)):
                raise fail("gpu pool: a table lists a block twice")
            for b in ids:
                counts[b] += 1
        if counts != gpu.ref_count:
            raise fail("gpu pool: reference counts differ from the tables' holders")
        if sum(map(len, self.block_tables.values())) != self._num_table_blocks:
            raise fail("gpu pool: table block count is off")
        keyless, evictable = set(gpu._free), set(gpu._evictable)
        if len(keyless) != len(gpu._free) or keyless & evictable:
            raise fail("gpu pool: a free block is listed twice")
        held = {b for b in range(gpu.num_blocks) if counts[b] > 0}
        if (keyless | evictable) & held:
            raise fail("gpu pool: a held block is free")
        if len(held) + len(evictable) + len(keyless) != gpu.num_blocks:
            raise fail(f"gpu pool: {len(held)} held + {len(evictable)} evictable + "
                       f"{len(keyless)} free != {gpu.num_blocks}")  # fmt: skip
        if any(gpu.key_of[b] is not None for b in keyless) or any(
            gpu.key_of[b] is None for b in evictable
        ):
            raise fail("gpu pool: a free block's key does not match its list")
        if {b: k for k, b in gpu.cached.items()} != {
            b: k for b, k in enumerate(gpu.key_of) if k is not None
        }:
            raise fail("gpu pool: the key map disagrees with the blocks' keys")
        if any(gpu._is_free[b] != (counts[b] == 0) for b in range(gpu.num_blocks)):
            raise fail("gpu pool: free flags disagree")
        owned = [b for ids in self.cpu_block_tables.values() for b in ids]
        if len(owned) != len(set(owned)):
            raise AssertionError("cpu pool: a block is owned twice")
        free = set(self.cpu._free)
        if free & set(owned):
            raise AssertionError("cpu pool: a block is both free and owned")
        if len(free) != len(self.cpu._free) or len(free) + len(owned) != self.cpu.num_blocks:
            raise AssertionError(
                f"cpu pool: {len(free)} free + {len(owned)} owned != {self.cpu.num_blocks}"
            )
