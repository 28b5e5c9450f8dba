"""What a step costs when time is modelled rather than measured (`engine.clock=virtual`).

A clock only keeps time; a step-cost model says how far a step moves it. `LinearStepCost` is the
fixed model of `engine.virtual_cost.*` (exactly reproducible runs of the real engine); a
simulator's executor brings its own model, fitted to a profile measured on the hardware.

`Timeline` is how the engine spends modelled time: the host's work around each step and a
device that runs the launched steps one after another. Without pipelining a step's tokens are
read back as soon as it is launched, so each step simply moves the clock by its cost. With
pipelining (a profile measured with `engine.async_scheduling`) the host prepares and launches
step n+1 while step n runs, exactly as the real engine does on a GPU: a step starts on the
device when the previous one is done and the host has prepared it, and the host, having
launched it, waits only for the previous step's tokens. So a request that arrives while step n
runs joins step n+2 at the earliest, and a step whose host work outlasts the device's (an eager
pass's kernel launches) sets the pace, as on the GPU.
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

    def step_time(self, batch, start_s: float | None = None) -> float:
        """The modelled duration of one step that runs `batch` (a `harness.batch.Batch`, or its
        `StepShape`); `start_s`, when the device starts it, which this fixed model does not use."""
        cost = self.step_s + self.per_token_s * batch.num_tokens
        return cost + self.per_context_token_s * float(batch.context_tokens)

    def swap_time(self, num_blocks: int, swap_in: bool = False) -> float:
        """The modelled duration of one batched swap copy of `num_blocks` blocks."""
        return self.per_swap_block_s * num_blocks


class Timeline:
    """Modelled time on a virtual clock: the host's own work (a cost model's optional
    `host_time(batch) -> (before_launch_s, after_launch_s)`: preparing the step, then launching
    it and booking the previous one) and one device that runs launched steps and swap copies in
    order."""

    def __init__(self, cost, clock) -> None:
        self.cost, self.clock = cost, clock
        self.host_time = getattr(cost, "host_time", None)
        self.device_free_s = 0.0  # when the device has run everything launched so far
        self._after_launch_s = 0.0

    def prepare(self, batch) -> float:
        """The host's work before the launch (scheduling, building the batch); returns the
        time the launch starts."""
        if self.host_time is not None:
            before, self._after_launch_s = self.host_time(batch)
            self.clock.advance(before)
        return self.clock.now()

    def launch(self, batch) -> tuple[float, float]:
        """Launch `batch` now: (when the device will have finished it, its device time)."""
        # told when the device starts it: a model may depend on the steps before (sim_model's
        # load model)
        start = max(self.device_free_s, self.clock.now())
        device_s = self.cost.step_time(batch, start)
        self.device_free_s = start + device_s
        if self._after_launch_s:
            self.clock.advance(self._after_launch_s)  # the host launches it, books the last
            self._after_launch_s = 0.0
        return self.device_free_s, device_s

    def swap(self, num_blocks: int, swap_in: bool) -> None:
        """A swap copy: it runs after what the device has in flight, and the host waits for it
        (the blocks it frees or fills are used by the very next step)."""
        swap_end = getattr(self.cost, "swap_end", None)  # a model that knows how it was timed
        if swap_end is not None:
            self.device_free_s = swap_end(self.clock.now(), self.device_free_s, num_blocks, swap_in)
        else:
            start = max(self.device_free_s, self.clock.now())
            self.device_free_s = start + self.cost.swap_time(num_blocks, swap_in)
        self.clock.wait_until(self.device_free_s)
