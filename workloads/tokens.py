"""Prompt token ids: seeded random ids, or for traces with prefix hashes (Mooncake) one seeded
block of ids per hash id, so requests that share a hash id share those tokens exactly."""

from __future__ import annotations

import numpy as np

from workloads.table import RequestTable


def random_prompt(n: int, vocab_size: int, rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(rng.integers(0, vocab_size, size=n).tolist())


class PrefixBlocks:
    """The ids of hash block `h`: a function of (seed, h) only, built once per id."""

    def __init__(self, seed: int, vocab_size: int, block_tokens: int) -> None:
        self.seed, self.vocab_size, self.block_tokens = seed, vocab_size, block_tokens
        self._blocks: dict[int, np.ndarray] = {}

    def __getitem__(self, h: int) -> np.ndarray:
        block = self._blocks.get(h)
        if block is None:
            rng = np.random.default_rng([self.seed, 0x9E3779B9, h])
            block = rng.integers(0, self.vocab_size, size=self.block_tokens)
            self._blocks[h] = block
        return block

    def prompt(self, hash_ids: np.ndarray, n: int, rng: np.random.Generator) -> tuple[int, ...]:
        """`n` ids: the hash blocks in order (the last one cut short), random ids past them."""
        parts = [self[int(h)] for h in hash_ids[: -(-n // self.block_tokens)]]
        ids = np.concatenate(parts)[:n] if parts else np.zeros(0, dtype=np.int64)
        if len(ids) < n:  # the trace names fewer blocks than its length needs
            ids = np.concatenate([ids, rng.integers(0, self.vocab_size, size=n - len(ids))])
        return tuple(ids.tolist())


def prompt_ids(
    table: RequestTable, vocab_size: int, seed: int, rng: np.random.Generator, block_tokens: int
) -> list[tuple[int, ...]]:
    """Prompt ids for every request of `table`, in order."""
    if table.hash_ids is None:
        return [random_prompt(int(n), vocab_size, rng) for n in table.prompt_tokens]
    blocks = PrefixBlocks(seed, vocab_size, block_tokens)
    return [
        blocks.prompt(h, int(n), rng)
        for h, n in zip(table.hash_ids, table.prompt_tokens, strict=True)
    ]
