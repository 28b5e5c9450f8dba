"""What a step costs when time is modelled rather than measured (`engine.clock=virtual`).

A clock only keeps time; a step-cost model says how far a step moves it. `LinearStepCost` is the
fixed model of `engine.virtual_cost.*` (exactly reproducible runs of the real engine); a
simulator's executor brings its own model, fitted to a profile measured on the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearStepCost:
    """Seconds: a fixed part per step, per token computed, per context token attended, per KV
    block swapped."""

    step_s: float = 2e-3
    per_token_s: float = 2e-5
    per_context_token_s: float = 1e-8
    per_swap_block_s: float = 1e-5

    def step_time(self, batch) -> float:
        """The modelled duration of one step that runs `batch` (a `harness.batch.Batch`)."""
        cost = self.step_s + self.per_token_s * batch.num_tokens
        return cost + self.per_context_token_s * float(batch.seq_lens.sum())

    def swap_time(self, num_blocks: int, swap_in: bool = False) -> float:
        """The modelled duration of one batched swap copy of `num_blocks` blocks."""
        return self.per_swap_block_s * num_blocks
