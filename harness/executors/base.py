"""What an executor receives (a flat varlen batch, no requests) and must provide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from harness.batch import Batch, split_batch

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Batch", "Executor", "split_batch"]


class Executor(Protocol):
    """Runs batches and moves KV blocks between the device cache and the CPU swap pool.

    Optional class attributes the engine reads (defaults in brackets): `overlaps_host` [False],
    the device runs while the host prepares the next step (the engine may pipeline);
    `takes_feed` [True], a decode row may take its input from the previous step's sampled ids
    still on the device (`Batch.feed`); `needs_batch` [True], False for an executor that runs
    no tensors (engine=sim): `launch` then gets the step's sizes (`harness.batch.StepShape`),
    not its token arrays."""

    def launch(self, batch: Batch, feed_from=None):
        """Queue one forward pass; returns a handle whose `result()` gives the sampled token id
        of each `logits_indices` row (and whose `device_time_s` is then set, if measured).
        `feed_from` is the previous step's handle when `batch.feed` refers to its ids."""

    def execute(self, batch: Batch) -> np.ndarray:
        """`launch(batch).result()`."""

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        """Copy (gpu_block, cpu_block) pairs of every layer from the device to the host pool."""

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        """Copy (cpu_block, gpu_block) pairs of every layer from the host pool to the device."""
