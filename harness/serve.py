"""Replay a workload against the engine on a clock: arrivals, steps, idle waits, progress."""

from __future__ import annotations

import time
from collections.abc import Sequence

from harness.engine import Engine, StallError
from harness.progress import make_progress
from harness.request import RequestSpec


class WallClock:
    """Seconds since the run started, on the host's monotonic clock."""

    virtual = False

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def start(self) -> None:
        """Time 0 of the serving clock: call it once everything is built and warm."""
        self._t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def wait_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)


class VirtualClock:
    """Time that moves only when told: by a step's modelled cost (`advance`, called by the
    engine with its step-cost model, harness/step_cost.py) or to the next arrival. A run on it
    is exactly reproducible."""

    virtual = True

    def __init__(self) -> None:
        self.t = 0.0

    def start(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wait_until(self, t: float) -> None:
        self.t = max(self.t, t)

    def advance(self, seconds: float) -> None:
        self.t += seconds


def serve(engine: Engine, specs: Sequence[RequestSpec], clock, progress: bool = True) -> None:
    """Feed arrivals to the engine and step it until every request is done.

    A request becomes visible at the first step boundary after its arrival time.
    """
    pending = sorted(specs, key=lambda s: (s.arrival_s, s.request_id))
    i = 0
    bar = make_progress(len(pending), enabled=progress)  # a bar on a terminal, else log lines
    try:
        while True:
            now = clock.now()
            while i < len(pending) and pending[i].arrival_s <= now:
                engine.add_request(pending[i])
                i += 1
            if not engine.has_unfinished and i == len(pending):
                break
            progressed = engine.has_unfinished and engine.step()
            if not progressed:
                if i == len(pending):
                    raise StallError(_stall_message(engine))
                clock.wait_until(pending[i].arrival_s)
            bar.update(engine.num_done, len(engine.running), len(engine.waiting), engine.num_steps)
    finally:
        bar.close()


def _stall_message(engine: Engine) -> str:
    return (
        f"policy {engine.policy.name} scheduled nothing at step {engine.num_steps} with "
        f"{len(engine.waiting)} waiting, {len(engine.running)} running, {len(engine.swapped)} "
        f"swapped and {engine.kv.gpu.num_free_blocks} free KV blocks: the run cannot progress"
    )
