"""The iteration loop: view -> policy -> validate & apply -> execute -> update -> record.

The engine owns the requests, the KV bookkeeping and the clock; it never decides (the policy
does) and never touches tensors (the executor does).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.batch import (
    PLACEHOLDER_TOKEN,
    Batch,
    Rows,
    StepShape,
    build_batch,
    decode_first,
    feed_rows,
    step_shape,
)
from harness.decisions import DecisionError, Limits, StallError, check_decision, rejection_reason
from harness.executors.base import Executor
from harness.kv_cache import KVCacheManager
from harness.prefix_cache import PrefixTracker, build_view
from harness.records import step_sink
from harness.request import Request, RequestSpec, RequestStatus
from harness.step_cost import Timeline
from policies.base import Decision, Policy, Preemption

__all__ = ["DecisionError", "Engine", "Limits", "StallError"]


@dataclass
class _Applied:
    """What `_apply` did, for the batch and the step record."""

    scheduled: list[tuple[Request, int]]
    num_preempted: int = 0
    num_swapped_out_blocks: int = 0
    num_swapped_in_blocks: int = 0
    swap_time_s: float = 0.0
    num_cached_tokens: int = 0  # taken from the prefix cache by the requests admitted
    num_evicted_blocks: int = 0


@dataclass
class _InFlight:
    """A launched step whose results are not on the host yet."""

    handle: object  # executor handle: .result() -> sampled ids, .device_time_s
    batch: Batch | StepShape  # as launched (its sizes only, to an executor that runs none)
    sampled_rows: list[tuple[Request, int]]  # (request, index of its placeholder output)
    finishing: list[Request]  # requests whose last token this step samples
    applied: _Applied
    start_s: float
    host_done_s: float
    device_time_s: float | None = None  # measured, or the step-cost model's
    device_done_s: float = 0.0  # modelled: when the device has finished it (harness/step_cost)


class Engine:
    """Runs one policy over one executor; `step()` is one iteration."""

    def __init__(
        self, policy: Policy, executor: Executor, kv: KVCacheManager, limits: Limits, clock,
        recorder, temperature: float = 0.0, top_p: float = 1.0, pipelined: bool = False,
        admission=None, step_cost=None, replay_steady: bool = False,
    ) -> None:  # fmt: skip
        self.policy, self.executor, self.kv = policy, executor, kv
        self.limits, self.clock, self.recorder = limits, clock, recorder
        self._record_row = step_sink(recorder)  # a step's values, one tuple (harness/records.py)
        self.temperature, self.top_p = temperature, top_p
        self.admission = admission  # harness.admission.Admission, or None: admit all that fits
        self.timeline = Timeline(step_cost, clock) if step_cost else None  # None: time measured
        self.prefix = PrefixTracker(kv) if kv.enable_prefix_caching else None  # None: no caching
        self.requests: dict[str, Request] = {}
        # Insertion-ordered dicts used as queues: O(1) removal from the middle.
        self.waiting: dict[str, Request] = {}  # arrival order, recompute victims in front
        self.running: dict[str, Request] = {}  # admission order
        self.swapped: dict[str, Request] = {}  # swap-out order
        self.num_steps, self.num_done = 0, 0  # num_done: finished + rejected + aborted
        # Pipelining pays only where the device runs while the host prepares the next step; on a
        # synchronous executor (cpu) it would only delay every token's stamp by one step. A
        # simulator reads no token from the device (`takes_feed` False): no feed to build for it.
        self.pipelined = pipelined and bool(getattr(executor, "overlaps_host", False))
        self._feed = getattr(executor, "takes_feed", True)
        # An executor that runs no tensors (engine=sim) is given each step's sizes (`StepShape`),
        # not a batch of token arrays it would never read
        self._shape_only = not getattr(executor, "needs_batch", True)
        self._inflight: list[_InFlight] = []  # launched steps, oldest first
        # Steady decode steps (policies/base.py `Policy.steady_decodes`): on a modelled clock,
        # the policy's last decision while it still holds, instead of asking the policy again
        # (no wall time is measured, so skipping the call changes nothing but the run's speed)
        self._replay = replay_steady and type(policy).__dict__.get("steady_decodes", False)
        self._steady: Rows | None = None  # the rows of the last steady decision, as applied
        self.num_replayed = 0  # steps that applied the steady decision again
        # the last step's shape (`_shape_only`): a replayed step's is the same one token further
        self._last_shape: StepShape | None = None
        self._last_end_s = 0.0

    def add_request(self, spec: RequestSpec) -> Request:
        """Queue a request, or reject it at once if it can never be served."""
        if spec.request_id in self.requests:
            raise ValueError(f"duplicate request id {spec.request_id!r}")
        request = Request(spec)
        self.requests[spec.request_id] = request
        lim, gpu = self.limits, self.kv.gpu
        reason = rejection_reason(request, lim.max_model_len, gpu.num_blocks, self.kv.block_size)
        if not reason and self.admission is not None:
            reason = self.admission.shed_reason(self.waiting.values())
        if reason:
            request.status, request.reason = RequestStatus.REJECTED, reason
            request.finish_s = self.clock.now()
            self.num_done += 1
        else:
            self.waiting[spec.request_id] = request
            if self.prefix is not None:
                self.prefix.add(request)
        return request

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.swapped or self._inflight)

    @property
    def num_steps_started(self) -> int:
        """Recorded + in flight: the step where an asynchronous device error surfaces."""
        return self.num_steps + len(self._inflight)

    # -- one iteration -------------------------------------------------------------------
    def step(self) -> bool:
        """Run one iteration. Returns False if the policy did nothing (no tokens, no swaps).

        Pipelined (`pipelined=True`): the step is scheduled, prepared and launched while the
        previous one still runs on the device; decode rows whose last token is still on the device
        take it from there (`Batch.feed`). Then the previous step's tokens are read back and
        stamped while this one runs, so the device never waits for the host between steps. This
        is exact because output lengths are forced: no decision depends on a token's value.

        On a modelled clock, a steady decode step of a policy that declares it (`_replay_steady`)
        applies the policy's last decision again without asking it.
        """
        start_s = self.clock.now()
        applied = self._replay_steady() if self._steady is not None else None
        padding, replayed = (), applied is not None
        if applied is None:
            view = self._view(start_s)
            decision = self.policy.schedule(view)
            check_decision(view, decision, self.policy.name, self.policy.bounded_by_token_budget,
                           self.num_steps)  # fmt: skip
            applied, padding = self._apply(decision), decision.padding
            if self._replay:
                self._steady = applied.scheduled if _is_steady(view, decision) else None
        if not applied.scheduled:
            progressed = bool(self._inflight)
            self.flush()
            return progressed or applied.num_preempted > 0 or applied.num_swapped_in_blocks > 0
        applied.scheduled, num_decode = decode_first(applied.scheduled)
        prev = self._inflight[-1] if self._inflight else None
        if self._shape_only:
            if replayed:  # the previous step's decodes, each one token further
                batch = self._last_shape = self._last_shape.advanced()
            else:
                batch = self._last_shape = step_shape(applied.scheduled, padding, num_decode)
        else:
            batch = build_batch(applied.scheduled, padding, num_decode,
                                self.kv.block_tables, self.kv.block_size, self.temperature,
                                self.top_p)  # fmt: skip
            if prev is not None and self._feed:
                batch.feed = feed_rows(batch, applied.scheduled, prev.sampled_rows)
        host_done_s = self.timeline.prepare(batch) if self.timeline else self.clock.now()
        handle = self.executor.launch(batch, prev.handle if prev is not None else None)
        rows = self._advance(applied.scheduled)
        f = _InFlight(handle, batch, *rows, applied, start_s, host_done_s)
        if self.timeline is not None:
            f.device_done_s, f.device_time_s = self.timeline.launch(batch)
        self._inflight.append(f)
        self.flush(keep=1 if self.pipelined else 0)  # earlier steps' tokens, while this one runs
        return True

    def flush(self, keep: int = 0) -> None:
        """Wait for the steps in flight, oldest first, until `keep` remain; stamp, record them."""
        while len(self._inflight) > keep:
            f = self._inflight[0]
            sampled = f.handle.result()  # may raise (a device fault): the step stays in flight
            self._inflight.pop(0)
            if self.timeline is None:
                f.device_time_s = getattr(f.handle, "device_time_s", None)
            else:  # modelled: the host waits until the device has finished the step
                self.clock.wait_until(f.device_done_s)
            end_s = self.clock.now()
            for (r, index), token in zip(f.sampled_rows, sampled.tolist(), strict=True):
                r.output_ids[index] = token
                r.token_times_s.append(end_s)
            for r in f.finishing:  # its last token is on the host: now it is finished
                r.status, r.finish_s = RequestStatus.FINISHED, end_s
                self.num_done += 1
            self._record(f, end_s)
            self._last_end_s, self.num_steps = end_s, self.num_steps + 1

    def _replay_steady(self) -> _Applied | None:
        """Apply the last steady decision again (each of its requests decodes one token, in its
        order) if it holds: nothing waiting or swapped, the same requests running (a running
        request leaves only by finishing or by a decision, and joins only by a decision) and the
        blocks their next tokens open within the free ones as the policy counts them. Else None,
        and the policy decides."""
        rows, kv = self._steady, self.kv
        if self.waiting or self.swapped or len(self.running) != len(rows):
            self._steady = None
            return None
        tables, bs = kv.block_tables, kv.block_size
        grow = [r for r, _ in rows if len(tables[r.request_id]) * bs <= r.num_computed_tokens]
        if len(grow) > kv.num_free_blocks_unshared:
            self._steady = None  # under KV pressure the policy must choose
            return None
        num_evictions = kv.gpu.num_evictions
        for r in grow:  # in the decision's order, as `_apply` allocates
            kv.allocate(r.request_id, r.num_computed_tokens + 1)
        self.num_replayed += 1
        return _Applied(scheduled=rows, num_evicted_blocks=kv.gpu.num_evictions - num_evictions)

    def _view(self, now_s: float):
        return build_view(self, now_s)  # harness/prefix_cache.py

    def _apply(self, d: Decision) -> _Applied:
        """Preempt, swap in, then allocate blocks for and admit what `d` schedules (checked), in
        its order (`scheduled`: a `harness.batch.Rows`, marked when all rows are decodes)."""
        kv, running, prefix = self.kv, self.running, self.prefix
        applied, num_evictions = _Applied(scheduled=[]), kv.gpu.num_evictions
        if d.preempt:
            self._preempt(d.preempt, applied)
        for rid in d.num_scheduled_tokens if prefix is not None and self.waiting else ():
            r = self.waiting.get(rid)  # admissions take their cached blocks before any allocation
            if r is not None:  # (exactly the requests in status WAITING are in `waiting`)
                r.num_computed_tokens = cached = prefix.admit(r)
                applied.num_cached_tokens += cached
                r.num_cached_tokens = cached if r.first_scheduled_s is None else r.num_cached_tokens
        if d.swap_in:
            moved = [(self.swapped.pop(rid), kv.swap_in(rid)) for rid in d.swap_in]
            for r, _ in moved:
                r.status, running[r.request_id] = RequestStatus.RUNNING, r
            applied.num_swapped_in_blocks = self._copy_blocks(moved, applied, swap_in=True)
        tables, bs, rows, num_decode = kv.block_tables, kv.block_size, Rows(), 0
        for rid, n in d.num_scheduled_tokens.items():
            r = running.get(rid)
            if r is None:  # admitted now (a running request was scheduled before)
                r = self.waiting.pop(rid)
                r.status, running[rid] = RequestStatus.RUNNING, r
                if r.first_scheduled_s is None:
                    r.first_scheduled_s = self.clock.now()
                    if self.admission is not None:
                        self.admission.on_admit(r.first_scheduled_s)
            c, out = r.num_computed_tokens + n, r.output_ids
            if len(tables.get(rid, ())) * bs < c:  # else: its blocks hold them already
                kv.allocate(rid, c)
            rows.append((r, n))
            num_decode += n == 1 and len(r.spec.prompt_ids) + len(out) == c and len(out) > 0
        rows.num_decode, applied.scheduled = num_decode if num_decode == len(rows) else None, rows
        applied.num_evicted_blocks = kv.gpu.num_evictions - num_evictions
        return applied

    def _preempt(self, preempt: dict[str, Preemption], applied: _Applied) -> None:
        recomputed, moved = [], []  # (recompute victims), (swap victims, their block pairs)
        for rid, kind in preempt.items():
            r = self.running.pop(rid)
            r.num_preemptions += 1
            if kind is Preemption.SWAP:
                moved.append((r, self.kv.swap_out(rid)))
                r.status, r.num_swaps, self.swapped[rid] = RequestStatus.SWAPPED, r.num_swaps + 1, r
            else:
                self.kv.free(rid)
                r.status, r.num_computed_tokens = RequestStatus.WAITING, 0
                recomputed.append(r)
                if self.prefix is not None:
                    self.prefix.add(r)
        applied.num_swapped_out_blocks = self._copy_blocks(moved, applied, swap_in=False)
        recomputed.sort(key=lambda r: r.arrival_s)  # back to the queue's front, oldest first
        self.waiting = {**{r.request_id: r for r in recomputed}, **self.waiting}
        applied.num_preempted = len(preempt)

    def _copy_blocks(self, moved: list[tuple[Request, list]], applied: _Applied, swap_in) -> int:
        """Run one batched swap copy for all `moved` (request, block pairs); time it, and charge
        each request its share by blocks. Returns the number of blocks moved."""
        pairs = [p for _, request_pairs in moved for p in request_pairs]
        if not pairs:
            return 0
        t0 = self.clock.now()
        (self.executor.swap_in if swap_in else self.executor.swap_out)(pairs)
        if self.timeline is not None:
            self.timeline.swap(len(pairs), swap_in)
        elapsed = self.clock.now() - t0
        applied.swap_time_s += elapsed
        for r, request_pairs in moved:
            r.swap_time_s += elapsed * len(request_pairs) / len(pairs)
        return len(pairs)

    # -- update, record ------------------------------------------------------------------
    def _advance(
        self, scheduled: list[tuple[Request, int]]
    ) -> tuple[list[tuple[Request, int]], list[Request]]:
        """Book a launched step: computed counts advance, each sampling row gets a placeholder
        token (filled by `flush`). A request sampling its last token leaves the running queue and
        frees its blocks now (reused after this step); it is finished once that token is on host."""
        sampled_rows, finishing, prefix, kv = [], [], self.prefix, self.kv
        keyed, bs = (kv.num_keyed_of, prefix.block_size) if prefix else ({}, 1)
        for r, n in scheduled:
            c = r.num_computed_tokens = r.num_computed_tokens + n
            spec, out = r.spec, r.output_ids  # on_computed only with a full block not keyed yet:
            if prefix is not None and c // bs > keyed.get(spec.request_id, 0):
                prefix.on_computed(r)
            if c < len(spec.prompt_ids) + len(out):
                continue  # a prefill chunk that does not reach the end samples nothing
            sampled_rows.append((r, len(out)))
            out.append(PLACEHOLDER_TOKEN)
            if len(out) >= spec.max_output_tokens:
                kv.free(spec.request_id)
                self.running.pop(spec.request_id, None)
                finishing.append(r)
        return sampled_rows, finishing

    def _record(self, f: _InFlight, end_s: float) -> None:
        a, batch, d = f.applied, f.batch, f.batch.num_decode_seqs
        self._record_row((  # a StepRecord's values, in field order
            self.num_steps, f.start_s, end_s - max(f.start_s, self._last_end_s),  # pipelined: added
            f.host_done_s - f.start_s, f.device_time_s,
            batch.num_tokens - batch.num_padding_tokens - d, d, batch.num_padding_tokens,
            len(a.scheduled), len(self.running), len(self.waiting), len(self.swapped),
            self.kv.gpu.num_used_blocks, a.num_preempted, a.num_swapped_out_blocks,
            a.num_swapped_in_blocks, a.swap_time_s, a.num_cached_tokens, a.num_evicted_blocks,
        ))  # fmt: skip

    def abort_unfinished(self, reason: str, not_arrived: list[RequestSpec] = ()) -> None:
        """Mark every request not yet done, and those that never arrived, as aborted."""
        try:
            self.flush()
        except Exception:  # the steps in flight are lost: their requests are not done
            lost, self._inflight = self._inflight, []
            for f in lost:
                for r, index in f.sampled_rows:
                    del r.output_ids[index:]
                for r in f.finishing:
                    self.running[r.request_id] = r
        now = self.clock.now()
        for queue in (self.waiting, self.running, self.swapped):
            queue.clear()
        # every request not done, in a queue or not: an interrupt (a signal lands between any two
        # bytecodes) may have taken one off its queue before the step that holds it was in flight
        for r in self.requests.values():
            if not r.status.is_done:
                out = r.output_ids  # a placeholder left now is a step's that never ran
                while out and out[-1] == PLACEHOLDER_TOKEN:
                    out.pop()
                r.status, r.reason, r.finish_s = RequestStatus.ABORTED, reason, now
                self.kv.free(r.request_id)
                self.num_done += 1
        for spec in not_arrived:
            r = self.requests[spec.request_id] = Request(spec, RequestStatus.ABORTED, reason=reason)
            r.finish_s = None
            self.num_done += 1


def _is_steady(view, d: Decision) -> bool:
    """Whether `d`, decided on `view`, is a steady decode step: nothing waiting or swapped, and
    every running request (each a decode) computes one token, nothing else happens."""
    if view.waiting or view.swapped or not view.running or d.preempt or d.swap_in or d.padding:
        return False
    scheduled = d.num_scheduled_tokens
    return len(scheduled) == len(view.running) and all(
        scheduled.get(r.request_id) == 1 and r.is_decode for r in view.running
    )
