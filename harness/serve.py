"""Replay a workload against the engine on a clock: arrivals (a session's turns released as
their previous turns finish), steps, idle waits, progress."""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import replace

from harness.engine import Engine, StallError
from harness.progress import make_progress
from harness.request import Request, RequestSpec, RequestStatus


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

    A request becomes visible at the first step boundary after its arrival time. A turn of a
    session (a spec with a `parent_id`) is released only once its parent has finished: it
    arrives at the parent's finish + its think time, with the parent's prompt and output ids
    before its own new tokens (`Releases`).
    """
    releases = Releases(specs)
    bar = make_progress(len(specs), enabled=progress)  # a bar on a terminal, else log lines
    try:
        while True:
            releases.settle(engine)
            for spec in releases.due(clock.now()):
                engine.add_request(spec)
            releases.settle(engine)  # a turn rejected at once ends its session now
            if not engine.has_unfinished and releases.empty:
                break
            progressed = engine.has_unfinished and engine.step()
            if not progressed:
                next_s = releases.next_arrival_s()
                if next_s is None:
                    raise StallError(_stall_message(engine))
                clock.wait_until(next_s)
            bar.update(engine.num_done, len(engine.running), len(engine.waiting), engine.num_steps)
    finally:
        bar.close()


class Releases:
    """The requests not yet given to the engine: independent ones by arrival time, and the
    turns of sessions, each waiting for its parent (the session's previous turn).

    When a parent finishes, its child is scheduled at the parent's finish + `think_time_s`,
    its prompt built from the parent's (`release`). When a parent ends otherwise (rejected,
    aborted), the child and every later turn of the session are never sent: they are recorded
    in the engine as aborted, with the reason `session ended: ...`, so every spec is accounted
    for and the run ends."""

    def __init__(self, specs: Sequence[RequestSpec]) -> None:
        ids = {s.request_id for s in specs}
        self.children: dict[str, list[RequestSpec]] = {}
        self._heap: list[tuple[float, str, RequestSpec]] = []
        for s in specs:
            if s.parent_id is None:
                self._heap.append((s.arrival_s, s.request_id, s))
            elif s.parent_id not in ids:
                raise ValueError(f"request {s.request_id}: parent {s.parent_id!r} is not a request")
            else:
                self.children.setdefault(s.parent_id, []).append(s)
        heapq.heapify(self._heap)
        reachable, stack = 0, [s.request_id for _, _, s in self._heap]
        while stack:  # every turn must descend from an independent request (no cycle)
            reachable += 1
            stack.extend(c.request_id for c in self.children.get(stack.pop(), ()))
        if reachable != len(specs):
            raise ValueError(f"{len(specs) - reachable} requests have a cycle of parents")
        self._watch: set[str] = set()  # parents given to the engine, with turns waiting
        self._seen_done = -1

    @property
    def empty(self) -> bool:
        return not self._heap and not self.children

    def next_arrival_s(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now_s: float) -> list[RequestSpec]:
        """The requests that have arrived by `now_s`, in arrival order."""
        out = []
        while self._heap and self._heap[0][0] <= now_s:
            spec = heapq.heappop(self._heap)[2]
            if spec.request_id in self.children:
                self._watch.add(spec.request_id)  # given to the engine now: watch it finish
            out.append(spec)
        return out

    def settle(self, engine: Engine) -> None:
        """Schedule (or end) the turns whose parents are done in the engine."""
        if engine.num_done == self._seen_done or not self._watch:
            return
        for parent_id in list(self._watch):
            parent = engine.requests.get(parent_id)
            if parent is None or not parent.status.is_done:
                continue
            self._watch.discard(parent_id)
            for child in self.children.pop(parent_id):
                if parent.status is RequestStatus.FINISHED:
                    spec = release(child, parent)
                    heapq.heappush(self._heap, (spec.arrival_s, spec.request_id, spec))
                else:
                    self._end_session(engine, child, f"parent {parent_id} {parent.status.value}")
        self._seen_done = engine.num_done

    def _end_session(self, engine: Engine, spec: RequestSpec, why: str) -> None:
        stack = [spec]
        while stack:
            s = stack.pop()
            r = Request(s, RequestStatus.ABORTED, reason=f"session ended: {why}")
            engine.requests[s.request_id] = r  # never sent: no arrival, no finish time
            engine.num_done += 1
            stack.extend(self.children.pop(s.request_id, ()))


def release(spec: RequestSpec, parent: Request) -> RequestSpec:
    """The turn `spec` as it arrives after its finished `parent`: at the parent's finish + its
    think time; when it extends the parent, its prompt is the parent's prompt + output ids +
    its new tokens."""
    prompt = spec.prompt_ids
    if spec.extends_parent:
        prompt = parent.spec.prompt_ids + tuple(parent.output_ids) + prompt
    arrival_s = parent.finish_s + spec.think_time_s
    return replace(spec, arrival_s=arrival_s, prompt_ids=prompt, history_tokens=0)


def _stall_message(engine: Engine) -> str:
    return (
        f"policy {engine.policy.name} scheduled nothing at step {engine.num_steps} with "
        f"{len(engine.waiting)} waiting, {len(engine.running)} running, {len(engine.swapped)} "
        f"swapped and {engine.kv.gpu.num_free_blocks} free KV blocks: the run cannot progress"
    )
