"""Replay a workload against the engine on a clock: arrivals, steps, idle waits, progress."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm import tqdm

from harness.engine import Engine, StallError
from harness.request import RequestSpec


class WallClock:
    """Seconds since the run started, on the host's monotonic clock."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def wait_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)


def serve(engine: Engine, specs: Sequence[RequestSpec], clock, progress: bool = True) -> None:
    """Feed arrivals to the engine and step it until every request is done.

    A request becomes visible at the first step boundary after its arrival time.
    """
    pending = sorted(specs, key=lambda s: (s.arrival_s, s.request_id))
    i = num_done = 0
    bar = tqdm(total=len(pending), unit="req", disable=not progress, dynamic_ncols=True)
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
            if engine.num_done != num_done:
                bar.update(engine.num_done - num_done)
                num_done = engine.num_done
                bar.set_postfix(
                    step=engine.num_steps, run=len(engine.running), wait=len(engine.waiting)
                )
    finally:
        bar.close()


def _stall_message(engine: Engine) -> str:
    return (
        f"policy {engine.policy.name} scheduled nothing at step {engine.num_steps} with "
        f"{len(engine.waiting)} waiting, {len(engine.running)} running, {len(engine.swapped)} "
        f"swapped and {engine.kv.gpu.num_free_blocks} free KV blocks: the run cannot progress"
    )
