"""The iteration loop: view -> policy -> validate & apply -> execute -> update -> record.

The engine owns the requests, the KV bookkeeping and the clock; it never decides (the policy
does) and never touches tensors (the executor does).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np

from harness.executors.base import Batch, Executor
from harness.kv_cache import KVCacheManager
from harness.request import Request, RequestSpec, RequestStatus
from policies.base import Decision, Padding, Policy, Preemption, RequestView, SchedulerView


class DecisionError(RuntimeError):
    """A policy's decision broke a bound (token budget, max_num_seqs, KV blocks, a state rule)."""


class StallError(RuntimeError):
    """The policy scheduled nothing while work remains and nothing else can change the state."""


@dataclass(frozen=True)
class Limits:
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    starvation_threshold: int | None = None  # preemptions after which a request is protected


PLACEHOLDER_TOKEN = -1  # an output token sampled on the device, not yet on the host


@dataclass
class _Applied:
    """What `_apply` did, for the batch and the step record."""

    scheduled: list[tuple[Request, int]]
    num_preempted: int = 0
    num_swapped_out_blocks: int = 0
    num_swapped_in_blocks: int = 0
    swap_time_s: float = 0.0


@dataclass
class _InFlight:
    """A launched step whose results are not on the host yet."""

    handle: object  # executor handle: .result() -> sampled ids, .device_time_s
    batch: Batch
    sampled_rows: list[tuple[Request, int]]  # (request, index of its placeholder output)
    applied: _Applied
    start_s: float
    host_done_s: float
    num_decode: int
    num_padding_tokens: int
    device_time_s: float | None = None  # set from the clock's model under a virtual clock


class Engine:
    """Runs one policy over one executor; `step()` is one iteration."""

    def __init__(
        self,
        policy: Policy,
        executor: Executor,
        kv: KVCacheManager,
        limits: Limits,
        clock,
        recorder,
        temperature: float = 0.0,
        top_p: float = 1.0,
        pipelined: bool = False,
    ) -> None:
        self.policy, self.executor, self.kv = policy, executor, kv
        self.limits, self.clock, self.recorder = limits, clock, recorder
        self.temperature, self.top_p = temperature, top_p
        self.requests: dict[str, Request] = {}
        # Insertion-ordered dicts used as queues: O(1) removal from the middle.
        self.waiting: dict[str, Request] = {}
        self.running: dict[str, Request] = {}
        self.swapped: dict[str, Request] = {}
        self.num_steps = 0
        self.num_done = 0  # finished + rejected + aborted
        # Pipelining only pays where the device runs while the host prepares the next step; on
        # an executor whose launch computes synchronously (cpu) it would only delay every
        # token's stamp by one step, so it is off there whatever was asked.
        self.pipelined = pipelined and bool(getattr(executor, "overlaps_host", False))
        self._inflight: list[_InFlight] = []  # launched steps, oldest first
        self._last_end_s = 0.0

    # -- arrivals ------------------------------------------------------------------------
    def add_request(self, spec: RequestSpec) -> Request:
        """Queue a request, or reject it at once if it can never be served."""
        if spec.request_id in self.requests:
            raise ValueError(f"duplicate request id {spec.request_id!r}")
        request = Request(spec)
        self.requests[spec.request_id] = request
        reason = self._rejection_reason(request)
        if reason:
            request.status, request.reason = RequestStatus.REJECTED, reason
            request.finish_s = self.clock.now()
            self.num_done += 1
        else:
            self.waiting[spec.request_id] = request
        return request

    def _rejection_reason(self, r: Request) -> str:
        """Why `r` can never be served, or "". Every reason depends on the model and the KV
        cache only, never on the policy: every policy of a comparison serves the same requests.
        A reason starts with its kind (`max_model_len: ...`) so reasons can be counted."""
        lim = self.limits
        total = r.num_prompt_tokens + r.spec.max_output_tokens
        if r.num_prompt_tokens < 1 or r.spec.max_output_tokens < 1:
            return "empty: empty prompt or max_output_tokens < 1"
        if total > lim.max_model_len:
            return (
                f"max_model_len: prompt + max output = {total} tokens > "
                f"max_model_len={lim.max_model_len}"
            )
        need = self.kv.num_blocks_for(r.max_num_tokens)
        if need > self.kv.gpu.num_blocks:
            return f"kv_capacity: needs {need} KV blocks, the cache has {self.kv.gpu.num_blocks}"
        return ""

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.swapped or self._inflight)

    @property
    def num_steps_started(self) -> int:
        """Steps recorded plus those in flight: the index of the step being launched, or of the
        newest one in flight (where an asynchronous device error surfaces)."""
        return self.num_steps + len(self._inflight)

    # -- one iteration -------------------------------------------------------------------
    def step(self) -> bool:
        """Run one iteration. Returns False if the policy did nothing (no tokens, no swaps).

        Pipelined (`pipelined=True`): the step is scheduled, prepared and launched while the
        previous one still runs on the device; decode rows whose last token is still on the
        device take it from there (`Batch.feed`). Then the previous step's tokens are read back
        and stamped while this one runs, so the device never waits for the host between steps.
        This is exact because output lengths are forced: no decision depends on a token's value.
        """
        start_s = self.clock.now()
        decision = self.policy.schedule(self._view(start_s))
        applied = self._apply(decision)
        if not applied.scheduled:
            progressed = bool(self._inflight)
            self.flush()
            return progressed or applied.num_preempted > 0 or applied.num_swapped_in_blocks > 0
        # Decode rows first: the attention kernels take them as one cheap group.
        is_decode = [n == 1 and r.num_output_tokens > 0 and r.num_uncomputed_tokens == 1
                     for r, n in applied.scheduled]  # fmt: skip
        num_decode = sum(is_decode)
        applied.scheduled = [x for x, d in zip(applied.scheduled, is_decode, strict=True) if d] + [
            x for x, d in zip(applied.scheduled, is_decode, strict=True) if not d
        ]
        batch = self._prepare(applied.scheduled, decision.padding, num_decode)
        prev = self._inflight[-1] if self._inflight else None
        # Only decode rows can read a token still on the device: a preempted request is never
        # rescheduled in the step that preempts it, so a recomputed prompt's tokens are all known.
        assert not (batch.input_ids[num_decode:] == PLACEHOLDER_TOKEN).any()
        if prev is not None:
            batch.feed = self._feed(batch, applied.scheduled, num_decode, prev)
        host_done_s = self.clock.now()
        handle = self.executor.launch(batch, prev.handle if prev is not None else None)
        sampled_rows = self._advance(applied.scheduled)
        self._inflight.append(_InFlight(
            handle, batch, sampled_rows, applied, start_s, host_done_s, num_decode,
            decision.num_padding_tokens,
        ))  # fmt: skip
        self.flush(keep=1 if self.pipelined else 0)  # earlier steps' tokens, while this one runs
        return True

    @staticmethod
    def _feed(
        batch: Batch, scheduled: list[tuple[Request, int]], num_decode: int, prev: _InFlight
    ) -> np.ndarray | None:
        """Rows whose input is a token of `prev` still on the device -> its sampled row there."""
        ids = batch.input_ids[:num_decode]
        waiting = np.flatnonzero(ids == PLACEHOLDER_TOKEN)
        if not len(waiting):
            return None
        row_of = {r.request_id: k for k, (r, _) in enumerate(prev.sampled_rows)}
        feed = np.full(batch.num_tokens, -1, dtype=np.int64)
        feed[waiting] = [row_of[scheduled[i][0].request_id] for i in waiting]
        ids[waiting] = 0
        return feed

    def flush(self, keep: int = 0) -> None:
        """Wait for the steps in flight, oldest first, until `keep` remain: stamp their tokens
        and record them."""
        while len(self._inflight) > keep:
            f = self._inflight[0]
            sampled = f.handle.result()  # may raise (a device fault): the step stays in flight
            self._inflight.pop(0)
            modelled = self.clock.advance_step(f.batch)  # a virtual clock's cost, or None
            if modelled is not None:
                f.device_time_s = modelled
            end_s = self.clock.now()
            for (r, index), token in zip(f.sampled_rows, sampled.tolist(), strict=True):
                r.output_ids[index] = token
                r.token_times_s.append(end_s)
                if r.status is RequestStatus.FINISHED and index == len(r.output_ids) - 1:
                    r.finish_s = end_s
            self._record(f, end_s)
            self._last_end_s = end_s
            self.num_steps += 1

    def _view(self, now_s: float) -> SchedulerView:
        def snap(r: Request) -> RequestView:
            table = self.kv.cpu_block_tables if r.status is RequestStatus.SWAPPED else None
            table = table if table is not None else self.kv.block_tables
            return RequestView(
                r.request_id, r.arrival_s, r.spec.priority, r.num_prompt_tokens, r.num_tokens,
                r.num_computed_tokens, r.num_output_tokens, r.spec.max_output_tokens,
                len(table.get(r.request_id, ())), r.num_preemptions, r.spec.tenant,
            )  # fmt: skip

        return SchedulerView(
            now_s=now_s,
            waiting=tuple(map(snap, self.waiting.values())),
            running=tuple(map(snap, self.running.values())),
            swapped=tuple(map(snap, self.swapped.values())),
            num_free_blocks=self.kv.gpu.num_free_blocks,
            num_total_blocks=self.kv.gpu.num_blocks,
            num_free_cpu_blocks=self.kv.cpu.num_free_blocks,
            watermark_blocks=self.kv.watermark_blocks,
            block_size=self.kv.block_size,
            max_num_batched_tokens=self.limits.max_num_batched_tokens,
            max_num_seqs=self.limits.max_num_seqs,
            max_model_len=self.limits.max_model_len,
            starvation_threshold=self.limits.starvation_threshold,
        )

    # -- validate and apply --------------------------------------------------------------
    def _fail(self, bound: str, detail: str) -> DecisionError:
        return DecisionError(
            f"policy {self.policy.name} broke {bound} at step {self.num_steps}: {detail}"
        )

    def _validate(self, d: Decision) -> list[tuple[Request, int, int]]:
        """Raise DecisionError unless `d` can be applied as a whole; mutates nothing.

        Returns (request, tokens, new GPU blocks) for each scheduled request."""
        for rid in d.preempt:
            if rid not in self.running or rid in d.num_scheduled_tokens:
                raise self._fail("preemption", f"{rid!r} is not an unscheduled running request")
        for rid in d.swap_in:
            if rid not in self.swapped:
                raise self._fail("swap_in", f"{rid!r} is not swapped")
        if any(p.num_tokens < 1 or p.context_len < p.num_tokens for p in d.padding):
            raise self._fail("padding", "each row needs 1 <= num_tokens <= context_len")
        if any(p.context_len > self.limits.max_model_len for p in d.padding):
            raise self._fail("padding", f"context_len > max_model_len={self.limits.max_model_len}")
        self._check_token_budget(d)
        admitted = 0
        need_blocks = sum(len(self.kv.cpu_block_tables[rid]) for rid in d.swap_in)
        rows = []
        bs, gpu_tables, cpu_tables = (
            self.kv.block_size,
            self.kv.block_tables,
            self.kv.cpu_block_tables,
        )
        for rid, n in d.num_scheduled_tokens.items():
            r = self.requests.get(rid)
            live = r is not None and (
                r.status in (RequestStatus.WAITING, RequestStatus.RUNNING) or rid in d.swap_in
            )
            if not live:
                raise self._fail("request state", f"{rid!r} cannot be scheduled (not live)")
            if not 1 <= n <= r.num_uncomputed_tokens:
                raise self._fail(
                    "token count",
                    f"{rid!r} given {n} tokens, has {r.num_uncomputed_tokens} to compute",
                )
            admitted += r.status is RequestStatus.WAITING
            table = gpu_tables.get(rid) or cpu_tables.get(rid) or ()
            need = max(0, -(-(r.num_computed_tokens + n) // bs) - len(table))
            need_blocks += need
            rows.append((r, n, need))
        num_seqs = len(self.running) - len(d.preempt) + len(d.swap_in) + admitted
        if num_seqs > self.limits.max_num_seqs:
            raise self._fail(
                "budget.max_num_seqs", f"{num_seqs} running > {self.limits.max_num_seqs}"
            )
        freed = sum(len(self.kv.block_tables.get(rid, ())) for rid in d.preempt)
        if need_blocks > self.kv.gpu.num_free_blocks + freed:
            raise self._fail(
                "KV blocks",
                f"needs {need_blocks} GPU blocks, {self.kv.gpu.num_free_blocks} free + {freed} freed",
            )
        swap_blocks = sum(
            len(self.kv.block_tables.get(rid, ()))
            for rid, kind in d.preempt.items()
            if kind is Preemption.SWAP
        )
        if swap_blocks > self.kv.cpu.num_free_blocks:
            raise self._fail(
                "CPU swap blocks", f"needs {swap_blocks}, {self.kv.cpu.num_free_blocks} free"
            )
        return rows

    def _check_token_budget(self, d: Decision) -> None:
        """A step stays within `max_num_batched_tokens`, with two exceptions that keep every
        request servable by every policy: a policy that is not bound by the budget (static
        batching: its padded batch is one pass, bounded by memory), and one request's whole
        remaining computation run alone, which a policy that does not split prompts needs for a
        prompt longer than the budget."""
        total = sum(d.num_scheduled_tokens.values()) + d.num_padding_tokens
        budget = self.limits.max_num_batched_tokens
        if total <= budget or not self.policy.bounded_by_token_budget:
            return
        if len(d.num_scheduled_tokens) == 1 and not d.padding:
            ((rid, n),) = d.num_scheduled_tokens.items()
            r = self.requests.get(rid)
            if r is not None and n == r.num_uncomputed_tokens:
                return
        raise self._fail("budget.max_num_batched_tokens", f"{total} tokens > {budget}")

    def _apply(self, d: Decision) -> _Applied:
        rows = self._validate(d)
        applied = _Applied(scheduled=[])
        self._preempt(d.preempt, applied)
        moved = []
        for rid in d.swap_in:
            moved.append((self.swapped.pop(rid), self.kv.swap_in(rid)))
            moved[-1][0].status = RequestStatus.RUNNING
            self.running[rid] = moved[-1][0]
        applied.num_swapped_in_blocks = self._copy_blocks(moved, self.executor.swap_in, applied)
        for r, n, need in rows:
            rid = r.request_id
            if need or rid not in self.kv.block_tables:
                self.kv.allocate(rid, r.num_computed_tokens + n)
            if r.status is RequestStatus.WAITING:
                del self.waiting[rid]
                r.status = RequestStatus.RUNNING
                self.running[rid] = r
            if r.first_scheduled_s is None:
                r.first_scheduled_s = self.clock.now()
            applied.scheduled.append((r, n))
        return applied

    def _preempt(self, preempt: dict[str, Preemption], applied: _Applied) -> None:
        recomputed: list[Request] = []
        moved = []
        for rid, kind in preempt.items():
            r = self.running.pop(rid)
            r.num_preemptions += 1
            if kind is Preemption.SWAP:
                moved.append((r, self.kv.swap_out(rid)))
                r.status, r.num_swaps = RequestStatus.SWAPPED, r.num_swaps + 1
                self.swapped[rid] = r
            else:
                self.kv.free(rid)
                r.status, r.num_computed_tokens = RequestStatus.WAITING, 0
                recomputed.append(r)
        num_swapped_out = self._copy_blocks(moved, self.executor.swap_out, applied)
        # Recompute victims go back to the front of the queue, oldest first.
        recomputed.sort(key=lambda r: r.arrival_s)
        self.waiting = {**{r.request_id: r for r in recomputed}, **self.waiting}
        applied.num_preempted = len(preempt)
        applied.num_swapped_out_blocks = num_swapped_out

    def _copy_blocks(self, moved: list[tuple[Request, list]], copy, applied: _Applied) -> int:
        """Run one batched swap copy for all `moved` (request, block pairs); time it, and charge
        each request its share by blocks. Returns the number of blocks moved."""
        pairs = [p for _, request_pairs in moved for p in request_pairs]
        if not pairs:
            return 0
        t0 = self.clock.now()
        copy(pairs)
        self.clock.advance_swap(len(pairs))
        elapsed = self.clock.now() - t0
        applied.swap_time_s += elapsed
        for r, request_pairs in moved:
            r.swap_time_s += elapsed * len(request_pairs) / len(pairs)
        return len(pairs)

    # -- batch, update, record -----------------------------------------------------------
    def _prepare(
        self,
        scheduled: list[tuple[Request, int]],
        padding: tuple[Padding, ...],
        num_decode: int = 0,
    ) -> Batch:
        """Flatten the scheduled chunks, then any padding rows, into one varlen batch.

        Padding rows are real work (token 0, slot -1 so nothing is stored, block table of block
        0 so their attention reads `context_len` cached positions) whose outputs are dropped.
        """
        bs = self.kv.block_size
        lens = np.array([n for _, n in scheduled] + [p.num_tokens for p in padding], dtype=np.int64)
        num_seqs = len(lens)
        query_start_loc = np.zeros(num_seqs + 1, dtype=np.int32)
        np.cumsum(lens, out=query_start_loc[1:])
        num_tokens = int(query_start_loc[-1])
        input_ids = np.zeros(num_tokens, dtype=np.int64)
        positions = np.empty(num_tokens, dtype=np.int64)
        slot_mapping = np.full(num_tokens, -1, dtype=np.int64)
        seq_lens = np.empty(num_seqs, dtype=np.int32)
        tables = [self.kv.block_tables[r.request_id] for r, _ in scheduled]
        width = max(
            [len(t) for t in tables] + [self.kv.num_blocks_for(p.context_len) for p in padding]
        )
        block_tables = np.zeros((num_seqs, width), dtype=np.int32)
        table_lens = [len(t) for t in tables]
        flat = np.fromiter(chain.from_iterable(tables), dtype=np.int32, count=sum(table_lens))
        rows = np.repeat(np.arange(len(tables)), table_lens)
        block_tables[
            rows, np.arange(len(flat)) - np.repeat(np.cumsum(table_lens) - table_lens, table_lens)
        ] = flat
        # Decode rows (first `num_decode`): one token at position num_computed_tokens, sampled.
        d = num_decode
        dec_pos = [r.num_computed_tokens for r, _ in scheduled[:d]]
        positions[:d] = dec_pos
        input_ids[:d] = [r.output_ids[-1] for r, _ in scheduled[:d]]
        slot_mapping[:d] = [t[p // bs] * bs + p % bs for t, p in zip(tables, dec_pos, strict=False)]
        seq_lens[:d] = positions[:d] + 1
        logits_indices = list(range(d))
        for i in range(d, len(scheduled)):  # prefill chunks (and recomputes)
            r, n = scheduled[i]
            a, b, start = query_start_loc[i], query_start_loc[i + 1], r.num_computed_tokens
            input_ids[a:b] = r.token_ids(start, start + n)
            pos = np.arange(start, start + n)
            positions[a:b] = pos
            slot_mapping[a:b] = block_tables[i][pos // bs].astype(np.int64) * bs + pos % bs
            seq_lens[i] = start + n
            if start + n == r.num_tokens:  # the chunk reaches the end: sample the next token
                logits_indices.append(b - 1)
        for j, p in enumerate(padding, start=len(scheduled)):
            positions[query_start_loc[j] : query_start_loc[j + 1]] = np.arange(
                p.context_len - p.num_tokens, p.context_len
            )
            seq_lens[j] = p.context_len
        return Batch(
            input_ids=input_ids, positions=positions, slot_mapping=slot_mapping,
            query_start_loc=query_start_loc, seq_lens=seq_lens, block_tables=block_tables,
            logits_indices=np.asarray(logits_indices, dtype=np.int64),
            max_query_len=int(lens.max()), max_seq_len=int(seq_lens.max()),
            num_padding_tokens=int(sum(p.num_tokens for p in padding)),
            num_decode_seqs=num_decode,
            max_decode_seq_len=int(seq_lens[:num_decode].max()) if num_decode else 0,
            temperature=self.temperature, top_p=self.top_p,
        )  # fmt: skip

    def _advance(self, scheduled: list[tuple[Request, int]]) -> list[tuple[Request, int]]:
        """Book a launched step: computed counts advance, each sampling row gets a placeholder
        token (filled by `flush`), requests that reached their output length finish and free
        their blocks (the device reuses them only after this step, in stream order)."""
        sampled_rows = []
        for r, n in scheduled:
            r.num_computed_tokens += n
            if r.num_computed_tokens < r.num_tokens:
                continue  # a prefill chunk that does not reach the end samples nothing
            sampled_rows.append((r, len(r.output_ids)))
            r.output_ids.append(PLACEHOLDER_TOKEN)
            if r.num_output_tokens >= r.spec.max_output_tokens:
                self.kv.free(r.request_id)
                self.running.pop(r.request_id, None)
                r.status = RequestStatus.FINISHED
                self.num_done += 1
        return sampled_rows

    def _record(self, f: _InFlight, end_s: float) -> None:
        num_tokens = sum(n for _, n in f.applied.scheduled)
        a = f.applied
        self.recorder.on_step(
            step=self.num_steps,
            start_s=f.start_s,
            # pipelined steps overlap: a step's duration is what it added to the wall time
            duration_s=end_s - max(f.start_s, self._last_end_s),
            host_time_s=f.host_done_s - f.start_s,
            device_time_s=f.device_time_s
            if f.device_time_s is not None
            else getattr(f.handle, "device_time_s", None),
            num_prefill_tokens=num_tokens - f.num_decode,
            num_decode_tokens=f.num_decode,
            num_padding_tokens=f.num_padding_tokens,
            num_scheduled_seqs=len(a.scheduled),
            num_running=len(self.running),
            num_waiting=len(self.waiting),
            num_swapped=len(self.swapped),
            num_kv_blocks_used=self.kv.gpu.num_used_blocks,
            num_preempted=a.num_preempted,
            num_swapped_out_blocks=a.num_swapped_out_blocks,
            num_swapped_in_blocks=a.num_swapped_in_blocks,
            swap_time_s=a.swap_time_s,
        )

    def _lost_rows(self) -> list[tuple[Request, int]]:
        lost, self._inflight = self._inflight, []
        return [row for f in lost for row in f.sampled_rows]

    def abort_unfinished(self, reason: str, not_arrived: list[RequestSpec] = ()) -> None:
        """Mark every request not yet done, and those that never arrived, as aborted."""
        try:
            self.flush()
        except Exception:  # the step in flight is lost: its requests are not done
            for r, index in self._lost_rows():
                del r.output_ids[index:]
                if r.status is RequestStatus.FINISHED:
                    r.status = RequestStatus.RUNNING
                    self.running[r.request_id] = r
                    self.num_done -= 1
        now = self.clock.now()
        for queue in (self.waiting, self.running, self.swapped):
            for r in queue.values():
                r.status, r.reason, r.finish_s = RequestStatus.ABORTED, reason, now
                self.kv.free(r.request_id)
                self.num_done += 1
            queue.clear()
        for spec in not_arrived:
            r = self.requests[spec.request_id] = Request(spec, RequestStatus.ABORTED, reason=reason)
            r.finish_s = None
            self.num_done += 1
