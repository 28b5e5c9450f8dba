"""`python -m harness.calibrate [--out FILE] [--quick | --grid NAME] [OVERRIDES...]`: measure an executor's
step times into a simulator profile (docs/simulator.md).

The grid runs through the very code a run uses: the real `Engine` (its views, checks, batch
building, pipelining as `engine.async_scheduling` says), the executor `engine.executor` names
(started as `run()` starts it) and the wall clock. Only the policy is scripted
(`CalibrationPolicy`): it replays a plan, built here, whose steps are the grid's cells:

- decode cells: B requests at context L (B x L over the decode batch sizes and contexts that fit
  the KV cache), first prefilled (several whole prompts per step, or chunks), then a few
  decode-only steps, then mixed steps (the B decodes plus a prefill chunk of P tokens of another
  request, at a growing context);
- prefill cells: a prompt prefilled to context C in full-budget chunks, then chunks of P tokens;
- swap cells: n blocks swapped out, then in (a one-token decode runs in each such step).

Each recorded step gives a point (the batch's features, `harness.sim_model.FEATURES`, and its
`duration_s`, `device_time_s`, `swap_time_s`); a non-negative linear model is fitted to the
step's time without its swaps (`duration_s - swap_time_s`: what the step added to the serving
clock, the host work a run exposes included) and swaps to `fixed + per_block * blocks` per
direction. The fit's error is reported in-sample and on held-out cells (every fourth cell,
fitted without them).

Each point also holds the host's own time around its launch (`host_before_s`: preparing the
step, its swaps left out; `host_after_s`: launching it, booking it, reading back the previous
step's tokens, from one launch to the next less the waits for tokens), fitted over
`harness.sim_model.HOST_FEATURES`: the simulator uses it for a pipelined profile, where the host
and the device work side by side and the slower sets the pace. For diagnosis only, each point
also holds when its launch call began (`launch_at`, unix time) and the call's own wall and CPU
seconds (`launch_wall_s`, `launch_cpu_s`): more wall than CPU time means the host's core was
taken by another process (benchmarks/host_drift.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.config import CONFIG_ERRORS, ConfigError, check_config, compose, validate
from harness.sim_model import (
    FEATURES,
    HOST_FEATURES,
    LOAD_CONSTANTS,
    PROFILE_FORMAT,
    DecodeSplit,
    features,
    fit_absolute,
    fit_loaded,
    fit_relative,
    host_features,
    loads,
    mape,
)
from policies.base import Decision, Policy, Preemption, SchedulerView

# The grid. Sizes beyond the budget, max_num_seqs, max_model_len or the KV cache are dropped.
FULL = dict(
    decode_batches=(1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 224, 256, 384, 512),
    # long contexts: one long decode row sets the split-KV kernel's time (decode_max_ctx)
    contexts=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
    chunks=(16, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
    prefill_contexts=(0, 512, 2048, 8192),
    swap_blocks=(1, 4, 16, 64, 256, 1024),
    max_cell_tokens=2**18,  # a decode cell's B x L (its prefill is most of the grid's time)
    skew_contexts=(16384, 65536),
    skew_batches=(2, 8, 16, 32, 64),
    skew_short=256,
    decode_steps=3,
    mixed_steps=6,  # mixed steps run eagerly, host-bound when small: they need the points
    repeats=1,
    # idle seconds before every other group of cells (Planner.cool): the load model's contrast
    cool_s=0.3,
)
QUICK = dict(
    decode_batches=(1, 4, 16, 64, 256),
    contexts=(32, 256, 1024),
    chunks=(32, 256, 1024),
    prefill_contexts=(0, 1024),
    swap_blocks=(2, 16, 64),
    max_cell_tokens=2**15,
    decode_steps=2,
    mixed_steps=2,
    repeats=2,
)

# Whole long prompts in one step (a policy that does not chunk, on long-context traces): run with
# a budget that holds them (budget.max_num_batched_tokens=65536) and merge the profile into a
# full one (--refit): alone it measures nothing else
LONG_PREFILL = dict(
    decode_batches=(), contexts=(), chunks=(8192, 16384, 32768, 65000),
    prefill_contexts=(0, 16384), swap_blocks=(), max_cell_tokens=0,
    decode_steps=0, mixed_steps=0, repeats=2,
)  # fmt: skip
# Big steps as a saturated run has them, back to back: the GPU at its power cap (an H200 drops
# from 1,980 to ~1,600 MHz within a step or two at 8k tokens a step; benchmarks/
# sustained_prefill.py). Each cell follows `heat_steps` unmeasured full-budget prefill steps.
# Run with budget.max_num_batched_tokens=8192 and merge into a full profile (--refit).
HOT_PREFILL = dict(
    decode_batches=(16,), contexts=(1024,), chunks=(1024, 2048, 4096, 8192),
    prefill_contexts=(0, 2048, 8192), swap_blocks=(), max_cell_tokens=2**18,
    decode_steps=1, mixed_steps=4, repeats=2, heat_steps=3,
)  # fmt: skip
GRIDS = {"full": FULL, "quick": QUICK, "long_prefill": LONG_PREFILL, "hot_prefill": HOT_PREFILL}


# -- the plan --------------------------------------------------------------------------------
@dataclass
class _Req:
    rid: str
    prompt: int
    computed: int = 0
    outputs: int = 0
    max_out: int | None = None  # set when it finishes: the outputs it sampled
    swapped: bool = False

    @property
    def num_tokens(self) -> int:
        return self.prompt + self.outputs


@dataclass
class PlanStep:
    tokens: dict[str, int]
    preempt: dict[str, Preemption] = field(default_factory=dict)
    swap_in: tuple[str, ...] = ()
    arrivals: list[str] = field(default_factory=list)  # requests first seen this step
    cell: int = -1  # -1: warm-up (not a point)
    pause_s: float = 0.0  # the host idles this long before the step (the device cools)


class Planner:
    """Builds the steps and mirrors what the engine will do with them (computed tokens, sampled
    outputs, KV blocks), so that every planned decision is valid when the engine checks it."""

    def __init__(self, block_size: int, num_blocks: int, max_tokens: int, max_seqs: int,
                 max_model_len: int) -> None:  # fmt: skip
        self.bs, self.num_blocks = block_size, num_blocks
        self.max_tokens, self.max_seqs, self.max_model_len = max_tokens, max_seqs, max_model_len
        self.reqs: dict[str, _Req] = {}
        self.live: dict[str, _Req] = {}  # holding GPU blocks or swapped
        self.steps: list[PlanStep] = []
        self.cell = -1
        self._seen: set[str] = set()
        self.pause_next = 0.0  # a pause before the next planned step

    def cool(self, seconds: float) -> None:
        """Idle `seconds` before the next step of every other group of four cells (cells
        4-7, 12-15, ...: held-out cells, every fourth, fall on both sides): the same cells
        measured after idle time and after the grid's own work set the load model apart
        (sim_model.LoadState)."""
        if seconds > 0 and (self.cell // 4) % 2 == 1:
            self.pause_next = seconds

    def blocks(self, r: _Req, computed: int | None = None) -> int:
        return -(-(r.computed if computed is None else computed) // self.bs)

    def used(self) -> int:
        return sum(self.blocks(r) for r in self.live.values() if not r.swapped)

    def fits(self, tokens: int, seqs: int = 1) -> bool:
        """Whether `seqs` more requests of `tokens` tokens each fit beside the live ones."""
        need = seqs * -(-tokens // self.bs)
        running = sum(not r.swapped for r in self.live.values())
        return need <= self.num_blocks - self.used() and seqs + running <= self.max_seqs

    def new(self, prompt: int) -> _Req:
        r = _Req(f"c{len(self.reqs)}", prompt)
        self.reqs[r.rid] = self.live[r.rid] = r
        return r

    def step(self, tokens: list[tuple[_Req, int]], finish=(), preempt=(), swap_in=()) -> None:
        new_blocks = 0
        for r, n in tokens:
            assert 1 <= n <= r.num_tokens - r.computed, (r, n)
            new_blocks += self.blocks(r, r.computed + n) - self.blocks(r)
        assert sum(n for _, n in tokens) <= self.max_tokens
        for r in swap_in:
            r.swapped = False
        for r in preempt:
            r.swapped = True
        assert self.used() + new_blocks <= self.num_blocks, "plan exceeds the KV cache"
        arrivals, sampled = [], set()
        for r, n in tokens:
            if r.rid not in self._seen:
                self._seen.add(r.rid)
                arrivals.append(r.rid)
            r.computed += n
            if r.computed == r.num_tokens:
                r.outputs += 1
                sampled.add(r.rid)
        for r in finish:
            assert r.rid in sampled, "a request finishes on a step that samples its token"
            r.max_out = r.outputs
            del self.live[r.rid]
        self.steps.append(PlanStep(
            {r.rid: n for r, n in tokens}, {r.rid: Preemption.SWAP for r in preempt},
            tuple(r.rid for r in swap_in), arrivals, self.cell, self.pause_next,
        ))  # fmt: skip
        self.pause_next = 0.0

    def prefill(self, reqs: list[_Req], chunk: int | None = None) -> None:
        """Prefill `reqs` whole, packing several prompts per step within the budget (chunked
        where one does not fit, as chunked prefill does)."""
        chunk = min(chunk or self.max_tokens, self.max_tokens)
        queue = list(reqs)
        while queue:
            rows, room = [], chunk
            while queue and room > 0:
                r = queue[0]
                n = min(room, r.prompt - r.computed)
                rows.append((r, n))
                room -= n
                if r.computed + n == r.prompt:
                    queue.pop(0)
                else:
                    break
            self.step(rows)

    def decode(self, reqs: list[_Req], extra: list[tuple[_Req, int]] = (), finish=()) -> None:
        self.step([(r, 1) for r in reqs] + list(extra), finish=finish)


def build_plan(grid: dict, block_size: int, num_blocks: int, max_tokens: int, max_seqs: int,
               max_model_len: int, swaps: bool = True) -> Planner:  # fmt: skip
    """The calibration steps for `grid` within these limits (see the module docstring)."""
    p = Planner(block_size, num_blocks, max_tokens, max_seqs, max_model_len)
    chunks = [c for c in grid["chunks"] if c <= max_tokens] or [max_tokens]
    # warm-up: a few steps of every kind before anything is measured (a swap's first copy
    # compiles its kernel on cuda)
    w = [p.new(64) for _ in range(4)]
    p.prefill(w)
    if swaps:
        p.step([(r, 1) for r in w[:3]], preempt=[w[3]])
        p.step([(r, 1) for r in w[:3]], swap_in=[w[3]])
    for i in range(6):
        p.decode(w, finish=w if i == 5 else ())
    rotate = 0
    for _ in range(grid["repeats"]):
        p.cell = -1  # a cell's id names its configuration: a repeat is held out with it
        # decode cells (and mixed steps): B rows at context L
        # batch sizes beyond max_num_seqs - 1 (a mixed step's prompt takes a row) are measured
        # at that size: the largest batches a run has are in the grid
        batches = sorted({min(b, max_seqs - 1) for b in grid["decode_batches"]})
        for ctx in grid["contexts"]:
            for b in batches:
                if b * ctx <= grid["max_cell_tokens"]:
                    rotate = _decode_cell(p, grid, [ctx] * b, chunks, rotate)
        # skewed decode cells: one row at a long context among B - 1 short ones (the split-KV
        # kernel cuts the long row into fewer splits as B grows: decode_tail_ctx)
        for ctx in grid.get("skew_contexts", ()):
            for b in grid.get("skew_batches", ()):
                rotate = _decode_cell(p, grid, [ctx] + [grid["skew_short"]] * (b - 1), chunks,
                                      rotate)  # fmt: skip
        # prefill cells: chunks of P at context C
        for ctx in grid["prefill_contexts"]:
            for c in chunks:
                if ctx + 2 * c > max_model_len - 1 or not p.fits(ctx + 2 * c + 1):
                    continue
                _heat(p, grid.get("heat_steps", 0))
                p.cell += 1
                p.cool(grid.get("cool_s", 0.0))
                r = p.new(ctx + 2 * c)
                for _ in range(ctx // max_tokens):
                    p.step([(r, max_tokens)])
                if ctx % max_tokens:
                    p.step([(r, ctx % max_tokens)])
                p.step([(r, c)])
                p.step([(r, c)], finish=[r])
        # swap cells: n blocks out, then in (with a one-token decode so that the step runs)
        for n in grid["swap_blocks"] if swaps else ():
            if n * block_size + 2 > max_model_len or not p.fits(
                n * block_size + 2 + 2 * block_size, 2
            ):
                continue
            p.cell += 1
            carrier, victim = p.new(block_size), p.new(n * block_size)
            p.prefill([carrier, victim])
            p.step([(carrier, 1)], preempt=[victim])
            p.step([(carrier, 1)], swap_in=[victim])
            p.decode([carrier, victim], finish=[carrier, victim])
    return p


def _heat(p: Planner, steps: int) -> None:
    """`steps` unmeasured full-budget prefill steps of a prompt of its own (finished in the
    last), if it fits: the GPU then runs the next cell as a saturated run would."""
    if steps < 1 or not p.fits(steps * p.max_tokens + 1):
        return
    cell, p.cell = p.cell, -1
    r = p.new(steps * p.max_tokens)
    for k in range(steps):
        p.step([(r, p.max_tokens)], finish=[r] if k == steps - 1 else ())
    p.cell = cell


def _decode_cell(p: Planner, grid: dict, ctxs: list[int], chunks: list[int], rotate: int) -> int:
    """Plan one decode cell (rows at contexts `ctxs`: prefilled, a few decode-only steps, then
    mixed steps with chunks of a filler prompt) if it fits; returns the chunk rotation."""
    b, steps = len(ctxs), grid["decode_steps"] + grid["mixed_steps"]
    if b > p.max_seqs - 1 or max(ctxs) + steps + 1 > p.max_model_len:
        return rotate
    mixed = [chunks[(rotate + k) % len(chunks)] for k in range(grid["mixed_steps"])]
    mixed = [min(c, p.max_tokens - b) for c in mixed if p.max_tokens - b >= 1]
    filler_len = sum(mixed)
    need = sum(-(-(c + steps + 1) // p.bs) for c in ctxs) + -(-filler_len // p.bs)
    running = sum(not r.swapped for r in p.live.values())
    if need > p.num_blocks - p.used() or b + bool(mixed) + running > p.max_seqs:
        return rotate
    _heat(p, grid.get("heat_steps", 0))
    p.cell += 1
    reqs = [p.new(c) for c in ctxs]
    p.prefill(reqs)
    p.cool(grid.get("cool_s", 0.0))  # before its decode steps, after its prefill
    for _ in range(grid["decode_steps"]):
        p.decode(reqs)
    if mixed:
        filler = p.new(filler_len)
        for k, c in enumerate(mixed):
            last = k == len(mixed) - 1
            p.decode(reqs, [(filler, c)], finish=[filler] if last else ())
    p.decode(reqs, finish=reqs)
    return rotate + 1


class CalibrationPolicy(Policy):
    """Replays a calibration plan, one planned decision per step (scripted, not a policy)."""

    chunks_prefills = True

    def __init__(self, steps: list[PlanStep]) -> None:
        self.steps, self.i = steps, 0

    def schedule(self, view: SchedulerView) -> Decision:
        s = self.steps[self.i]
        self.i += 1
        return Decision(num_scheduled_tokens=s.tokens, preempt=s.preempt, swap_in=s.swap_in)


class RecordingExecutor:
    """The executor, keeping each launched batch (for its features once the run is done), when
    each launch began and how long the host waited for each step's tokens (host clock)."""

    def __init__(self, executor) -> None:
        self._executor, self.batches = executor, []
        self.launch_s: list[float] = []
        self.waits: list[tuple[float, float]] = []  # (when a result() call began, its wait)
        # each launch call's own (unix time, wall s, this thread's CPU s): a launch that took
        # more wall than CPU time lost the core to someone else (host contention)
        self.launch_calls: list[tuple[float, float, float]] = []

    def __getattr__(self, name):
        return getattr(self._executor, name)

    def launch(self, batch, feed_from=None):
        self.batches.append(batch)
        at, cpu0 = time.time(), time.thread_time()
        t0 = time.perf_counter()
        self.launch_s.append(t0)
        inner = feed_from._handle if isinstance(feed_from, _TimedHandle) else feed_from
        handle = self._executor.launch(batch, inner)
        self.launch_calls.append((at, time.perf_counter() - t0, time.thread_time() - cpu0))
        return _TimedHandle(handle, self.waits)

    def host_after_launch(self, prepare_s: list[float]) -> list[float | None]:
        """Per step j, the host's seconds from its launch to the next step's preparation, less
        the waits for tokens: launching it, booking it, reading back and stamping the previous
        step (`launch[j+1] - launch[j] - waits - prepare_s[j+1]`, `prepare_s`: each step's whole
        preparation, its swaps included); None for the last step."""
        out: list[float | None] = []
        waits = sorted(self.waits)
        k = 0
        for j in range(len(self.launch_s) - 1):
            a, b = self.launch_s[j], self.launch_s[j + 1]
            waited = 0.0
            while k < len(waits) and waits[k][0] < b:
                if waits[k][0] >= a:
                    waited += waits[k][1]
                k += 1
            out.append(b - a - waited - prepare_s[j + 1])
        return out + [None]


def host_times(steps, recording: RecordingExecutor) -> tuple[list, list]:
    """Per step, the host's own time before its launch (its swaps left out: they are modelled
    apart) and after it (`RecordingExecutor.host_after_launch`, less the next step's whole
    preparation, its swaps included)."""
    before = [rec.host_time_s - rec.swap_time_s for rec in steps]
    return before, recording.host_after_launch([rec.host_time_s for rec in steps])


class _TimedHandle:
    """A launched step's handle that times the host's wait in `result()`."""

    def __init__(self, handle, waits: list) -> None:
        self._handle, self._waits = handle, waits

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def result(self):
        t0 = time.perf_counter()
        out = self._handle.result()
        self._waits.append((t0, time.perf_counter() - t0))
        return out


# -- measure, fit, write ---------------------------------------------------------------------
class ProcessClock:
    """Seconds of this process's CPU time since `start()`, plus the idle waits for arrivals.

    On a dedicated core a cpu run's steps are CPU-bound and this is the wall time; on a shared
    host (other jobs on the same cores) it leaves out the time they take from this process, so
    measurements do not depend on the neighbours' load. Only for cpu executors (a GPU works
    while the host waits). `python -m harness.calibrate --clock process` and the simulator's
    accuracy test use it; a wall-clock run of the same code is the default."""

    virtual = False

    def __init__(self) -> None:
        self._t0 = time.process_time()
        self._idle = 0.0

    def start(self) -> None:
        self._t0, self._idle = time.process_time(), 0.0

    def now(self) -> float:
        return time.process_time() - self._t0 + self._idle

    def wait_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            self._idle += delay


def measure(cfg, grid: dict, clock_kind: str = "wall") -> tuple[dict, list[dict]]:
    """Run the grid on `cfg`'s executor; returns (the run's settings, the measured points)."""
    from harness.engine import Engine, Limits
    from harness.executors.cuda_graphs import PIECEWISE_VERSION
    from harness.kv_cache import KVCacheManager
    from harness.metrics import Recorder
    from harness.request import RequestSpec
    from harness.run import DEFAULT_BATCHED_TOKENS, build_executor
    from harness.serve import WallClock

    executor = build_executor(cfg)
    if getattr(executor, "step_cost", None) is not None or cfg.engine.kind == "sim":
        raise ConfigError("harness.calibrate measures a real executor: use engine=cpu|cuda|auto")
    b = cfg.budget
    max_tokens = int(b.max_num_batched_tokens or DEFAULT_BATCHED_TOKENS)
    num_gpu, num_cpu = executor.start(b, max_tokens, seed=cfg.seed)
    plan = build_plan(grid, b.block_size, int(num_gpu * 0.95), max_tokens, b.max_num_seqs,
                      executor.max_model_len, swaps=num_cpu > 0)  # fmt: skip
    rng = np.random.default_rng(0)
    vocab = executor.args.vocab_size
    specs = {
        r.rid: RequestSpec(
            r.rid, 0.0, tuple(rng.integers(0, vocab, r.prompt).tolist()), r.max_out
        )  # fmt: skip
        for r in plan.reqs.values()
    }
    # as run() builds it (its prefix cache's bookkeeping is host work a run has; no two
    # calibration prompts share a block, so nothing is ever served from it)
    caching = bool(cfg.engine.get("enable_prefix_caching", False))
    kv = KVCacheManager(num_gpu, b.block_size, num_cpu, 0.0, enable_prefix_caching=caching)
    limits = Limits(max_tokens, b.max_num_seqs, executor.max_model_len, None, None)
    recording, recorder = RecordingExecutor(executor), Recorder()
    clock = ProcessClock() if clock_kind == "process" else WallClock()
    engine = Engine(
        CalibrationPolicy(plan.steps), recording, kv, limits, clock, recorder,
        temperature=cfg.engine.temperature, top_p=cfg.engine.top_p,
        pipelined=cfg.engine.async_scheduling,
    )  # fmt: skip
    clock.start()
    t0 = time.perf_counter()
    for s in plan.steps:
        if s.pause_s:
            time.sleep(s.pause_s)
        for rid in s.arrivals:
            engine.add_request(specs[rid])
        if not engine.step():
            raise RuntimeError(f"calibration step {engine.num_steps} did not run")
    engine.flush()
    elapsed = time.perf_counter() - t0
    unfinished = [r for r in engine.requests.values() if not r.status.is_done]
    assert not unfinished, f"{len(unfinished)} calibration requests did not finish"
    buckets = None
    runner = getattr(executor, "runner", None)
    if getattr(runner, "graphs", None) is not None:
        buckets = list(runner.graphs.sizes)
    pieces = list(runner.pieces.sizes) if getattr(runner, "pieces", None) is not None else None
    split = _decode_split(executor)
    before, after = host_times(recorder.steps, recording)
    timeline = device_timeline(recorder.steps, recording, buckets, pieces)
    load = loads(timeline[:, 0], timeline[:, 1], timeline[:, 2], **LOAD_CONSTANTS)
    points = []
    for j, (s, rec, batch) in enumerate(
        zip(plan.steps, recorder.steps, recording.batches, strict=True)
    ):
        if s.cell < 0:
            continue
        points.append({
            "cell": s.cell, **dict(zip(FEATURES, features(batch, buckets, split, pieces),
                                      strict=True)),
            "duration_s": rec.duration_s, "device_time_s": rec.device_time_s,
            "swap_time_s": rec.swap_time_s, "swap_out_blocks": rec.num_swapped_out_blocks,
            "swap_in_blocks": rec.num_swapped_in_blocks,
            **{f"host_{k}": v for k, v in zip(HOST_FEATURES, host_features(batch, buckets, pieces),
                                              strict=True)},
            "host_before_s": before[j], "host_after_s": after[j],
            "device_start_s": round(float(timeline[j, 0]), 6), "load": round(float(load[j]), 5),
            **dict(zip(("launch_at", "launch_wall_s", "launch_cpu_s"), recording.launch_calls[j],
                       strict=True)),
        })  # fmt: skip
    settings = {
        "executor": cfg.engine.executor._target_, "kind": cfg.engine.kind,
        "block_size": b.block_size, "max_num_batched_tokens": max_tokens,
        "max_num_seqs": b.max_num_seqs, "async_scheduling": engine.pipelined,
        "cuda_graphs": buckets is not None, "decode_buckets": buckets,
        "piecewise_buckets": pieces, "piecewise_version": PIECEWISE_VERSION if pieces else None,
        "num_threads": cfg.engine.num_threads, "gpu_memory_utilization":
        cfg.engine.gpu_memory_utilization, "cpu_kv_cache_gb": cfg.engine.cpu_kv_cache_gb,
        "cpu_swap_gb": cfg.engine.cpu_swap_gb, "enable_prefix_caching": caching,
        "num_steps": len(plan.steps),
        "num_cells": plan.cell + 1, "repeats": grid["repeats"],
        "host_after_excludes_swaps": True, "measure_s": round(elapsed, 3), "clock": clock_kind,
        "decode_split": dataclasses.asdict(split) if split else None,
        "cool_s": grid.get("cool_s", 0.0), **{f"load_{k}": v for k, v in LOAD_CONSTANTS.items()},
    }  # fmt: skip
    info = {
        "device": _device_name(executor), "dtype": executor.dtype_name,
        "model": {"preset": executor.preset if not cfg.model.path else "hf",
                  "path": cfg.model.path, "args": _args_dict(executor.args)},
        "kv_capacity": {"num_gpu_blocks": num_gpu, "num_cpu_blocks": num_cpu,
                        "block_size": b.block_size},
        "settings": settings,
        # every step, measured or not (warm-up, heat): the history a point's load comes from
        "timeline": {"columns": ["start_s", "time_s", "prefill_tokens"],
                     "rows": [[round(float(v), 6) for v in r] for r in timeline]},
    }  # fmt: skip
    return info, points


def device_timeline(steps, recording, buckets, pieces) -> np.ndarray:
    """Each step's (start on the device, time, prefill tokens), in launch order: a step starts
    when its launch call began or when the step before it ended, whichever is later (one device
    runs the steps in order), and runs its `device_time_s` (its `duration_s` where none was
    measured: the cpu). Seconds from the first launch."""
    out = np.zeros((len(steps), 3))
    t0, end = recording.launch_s[0] if recording.launch_s else 0.0, 0.0
    for j, (rec, batch, at) in enumerate(zip(steps, recording.batches, recording.launch_s,
                                             strict=True)):  # fmt: skip
        t = rec.device_time_s if rec.device_time_s else rec.duration_s - rec.swap_time_s
        start = max(at - t0, end)
        end = start + t
        out[j] = (start, t, features(batch, buckets, None, pieces)[2])
    return out


def unused_features(settings: dict) -> tuple[str, ...]:
    """Step features a calibration's kernels have no cost for, fitted with coefficient 0: the
    Triton attention on cuda (settings.decode_split) skips the masked half of a prompt's scores,
    so `prefill_qk` (the dense score matrices the cpu's torch reference computes) is not its
    work. Left in, the fit used it to bend the short prompts' cost and overestimated a 67k-token
    prompt in one step by 32% (5.88 s against 4.46 s measured on the H200; 4.36 s without)."""
    return ("prefill_qk",) if settings.get("decode_split") else ()


def fit_profile(points: list[dict], pipelined: bool = False,
                unused: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """The step-time model the simulator uses (`step_model`), the other target's model for
    reference, the swap model, and their errors in-sample and on held-out cells (every fourth).

    The step model's target is what a step adds to the serving clock. Without pipelining that is
    the step's own `duration_s` (its host work included) less its swaps. With pipelining (cuda,
    `engine.async_scheduling`) a step's `duration_s` is not its own: the host reads step n's
    tokens only after it has launched step n+1, so a step that is slow to launch (an eager
    prefill) lands in the previous step's duration (measured on the H200: the durations summed
    match the device times summed within 0.3%, step by step they do not). There the target is
    the step's `device_time_s` (CUDA events around its launch: the device's work and any gap
    while the host issues an eager pass's kernels). Features in `unused` get coefficient 0
    (`unused_features`)."""
    x = np.array([[0.0 if f in unused else p[f] for f in FEATURES] for p in points],
                 dtype=np.float64)  # fmt: skip
    # the device's load at each point's start (sim_model.LoadState): only when every point has
    # it (a calibration before it, merged in, has none: no load model then)
    loaded = bool(points) and all(p.get("load") is not None for p in points)
    u = np.array([p["load"] for p in points], dtype=np.float64) if loaded else None
    cells = np.array([p["cell"] for p in points])
    swaps = np.array([p["swap_out_blocks"] + p["swap_in_blocks"] for p in points]) > 0
    duration = ("duration_s - swap_time_s",
                np.array([p["duration_s"] - p["swap_time_s"] for p in points]))  # fmt: skip
    device = ("device_time_s",
              np.array([p["device_time_s"] or np.nan for p in points], dtype=float))  # fmt: skip
    targets = (device, duration) if pipelined else (duration, device)
    out = {}
    for key, (target, y) in zip(("step_model", "reference_model"), targets, strict=True):
        ok = np.isfinite(y) & (y > 0)
        if ok.sum() < len(FEATURES):
            continue
        held = ok & (cells % 4 == 3)
        train = ok & ~held
        k, uk = 0.0, None  # the load model's coefficient, and the loads it applies to
        if loaded and key == "step_model":
            f_train, k_train = fit_loaded(x[train], y[train], u[train])
            held_mape = mape(x[held], y[held], f_train.coef, k_train, u[held])
            fit, k = fit_loaded(x[ok], y[ok], u[ok])
            uk = u[ok]
            out["load_model"] = {
                "coef": round(k, 5), **LOAD_CONSTANTS,
                "num_points": int(ok.sum()),
                "mean_load": round(float(u[ok].mean()), 4),
                "in_sample_mape_without": round(fit_relative(x[ok], y[ok]).in_sample_mape, 4),
            }  # fmt: skip
        else:
            held_mape = mape(x[held], y[held], fit_relative(x[train], y[train]).coef)
            fit = fit_relative(x[ok], y[ok])
        out[key] = {
            "target": target, "features": list(FEATURES), "coef": [float(c) for c in fit.coef],
            "in_sample_mape": round(fit.in_sample_mape, 4),
            "in_sample_mape_all_points": round(mape(x[ok], y[ok], fit.coef, k, uk), 4),
            "held_out_mape": round(held_mape, 4), "num_points": int(ok.sum()),
            "num_outliers": fit.num_outliers, "held_out": "cells with index % 4 == 3",
            "unused": list(unused),
        }  # fmt: skip
    out["swap_model"] = _fit_swaps([p for p, s in zip(points, swaps, strict=True) if s])
    if points and "host_before_s" in points[0]:
        out["host_model"] = _fit_host(points, cells)
    return out


def _fit_host(points: list[dict], cells: np.ndarray) -> dict:
    """The host's seconds before and after each launch, over HOST_FEATURES (sim_model); used by
    the simulator only for a pipelined profile (without pipelining the step model's target, the
    step's duration, holds the host's work already)."""
    h = np.array([[p[f"host_{f}"] for f in HOST_FEATURES] for p in points], dtype=np.float64)
    model = {"features": list(HOST_FEATURES)}
    for key in ("before", "after"):
        y = np.array([p[f"host_{key}_s"] if p[f"host_{key}_s"] is not None else np.nan
                      for p in points], dtype=float)  # fmt: skip
        ok = np.isfinite(y) & (y > 0)
        if ok.sum() < 2 * len(HOST_FEATURES):
            model[f"{key}_launch"] = {"coef": [0.0] * len(HOST_FEATURES), "num_points": 0}
            continue
        held = ok & (cells % 4 == 3)
        held_mape = mape(h[held], y[held], fit_absolute(h[ok & ~held], y[ok & ~held]).coef)
        fit = fit_absolute(h[ok], y[ok])
        model[f"{key}_launch"] = {
            "coef": [float(c) for c in fit.coef], "in_sample_mape": round(fit.in_sample_mape, 4),
            "held_out_mape": round(held_mape, 4), "num_points": int(ok.sum()),
            "num_outliers": fit.num_outliers,
            "median_s": round(float(np.median(y[ok])), 6), "fit": "absolute (the mean)",
        }  # fmt: skip
    return model


def _fit_swaps(points: list[dict]) -> dict:
    model = {}
    for direction, key in (("out", "swap_out_blocks"), ("in", "swap_in_blocks")):
        pts = [(p[key], p["swap_time_s"]) for p in points if p[key] and p["swap_time_s"] > 0]
        if len(pts) >= 2:
            n, t = np.array(pts, dtype=float).T
            # relative, as the steps: a one-block swap counts as much as a thousand-block one; a
            # swap that waited for the step in flight (pipelined cuda) is dropped as an outlier
            fit = fit_relative(np.stack([np.ones_like(n), n], axis=1), t)
            (fixed, per_block), err = fit.coef, fit.in_sample_mape
        else:  # no swap pool (or no swap cell fitted the cache): swaps cost nothing modelled
            fixed, per_block, err = 0.0, 0.0, float("nan")
        model[direction] = {"fixed_s": float(fixed), "per_block_s": float(per_block),
                            "mape": round(err, 4), "num_points": len(pts),
                            "num_outliers": fit.num_outliers if len(pts) >= 2 else 0}  # fmt: skip
    return model


def profile_json(profile: dict) -> str:
    """The profile as JSON text: indented, but each measured point (and each step of the
    timeline) on one line (one number a line made the H200 profile's 16k points half a million
    lines)."""
    tables = {k: profile[k] for k in ("points", "timeline") if profile.get(k)}
    marked = {**profile, **{k: {**t, "rows": f"__{k}_rows__"} for k, t in tables.items()}}
    text = json.dumps(marked, indent=1)
    for k, t in tables.items():
        rows = ",\n".join("   " + json.dumps(r) for r in t["rows"])
        text = text.replace(json.dumps(f"__{k}_rows__"), "[\n" + rows + "\n  ]")
    return text + "\n"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _args_dict(args) -> dict:
    from dataclasses import asdict

    return asdict(args)


def _device_name(executor) -> str:
    device = getattr(executor, "device", None)
    if device is not None and device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"cpu: {cpu} ({len(os.sched_getaffinity(0))} cores)"


def _decode_split(executor) -> DecodeSplit | None:
    """On cuda, what the split-KV decode kernel's split count depends on (sim_model)."""
    device = getattr(executor, "device", None)
    if getattr(device, "type", None) != "cuda":
        return None  # the torch reference kernels: no splits
    import torch

    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return DecodeSplit(sms, executor.args.num_kv_heads, executor.max_model_len)


def _git_commit() -> str | None:
    """The commit of the checkout this code runs from; None when it is not one (a copy such as
    a `git archive` unpacked inside another repository would otherwise name that one's)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, cwd=here, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.splitlines()
    if out.returncode or len(lines) != 2 or Path(lines[0]).resolve() != here.parent:
        return None
    return lines[1]


def calibrate(overrides: list[str], quick: bool = False, name: str | None = None,
              clock: str = "wall", grid: dict | None = None, preset: str = "full") -> dict:  # fmt: skip
    """Measure and fit; returns the profile (a JSON-able dict). `preset` names the grid
    (GRIDS; `quick=True` is "quick"); `grid` replaces the entries it names."""
    cfg = compose(overrides)
    check_config(cfg)
    validate(cfg)
    cpu = cfg.engine.kind == "cpu" or (cfg.engine.kind == "auto" and not _has_cuda())
    if quick or (cpu and preset == "full"):  # cpu: the full grid would take many minutes
        preset = "quick"
    grid = {**GRIDS[preset], **(grid or {})}
    t0 = time.perf_counter()
    if clock == "process" and cfg.engine.kind not in ("cpu", "auto"):
        raise ConfigError("--clock process measures a cpu executor only (a GPU runs while the "
                          "host waits)")  # fmt: skip
    info, points = measure(cfg, grid, clock)
    fits = fit_profile(points, info["settings"]["async_scheduling"],
                       unused_features(info["settings"]))  # fmt: skip
    return {
        "format": PROFILE_FORMAT, "name": name, **info, "commit": _git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m harness.calibrate " + " ".join(
            ([f"--grid {preset}"] if preset != "full" else [])
            + (["--clock", clock] if clock != "wall" else []) + list(overrides)),
        "grid": preset, "calibrate_s": round(time.perf_counter() - t0, 2),
        **fits,
        "points": {"columns": list(points[0]) if points else [],
                   "rows": [list(p.values()) for p in points]},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.calibrate",
        description="Measure an executor's step times into a simulator profile "
        "(docs/simulator.md). Other arguments are Hydra overrides, as for python -m harness.",
    )
    parser.add_argument("--out", required=True, help="the profile file to write (JSON)")
    parser.add_argument("--quick", action="store_true", help="a smaller grid (tests, a first look)")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="full",
                        help="the grid: full (default), quick (= --quick), long_prefill (whole "
                        "long prompts in one step, with budget.max_num_batched_tokens=65536), "
                        "hot_prefill (big steps after big steps, the GPU at its power cap, with "
                        "budget 8192); merge the last two into a full profile with --refit")  # fmt: skip
    parser.add_argument("--name", help="the profile's name (default: the file's stem)")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="wall (default): the serving clock of a run; process: this "
                        "process's CPU time, for a cpu executor on a shared host")  # fmt: skip
    parser.add_argument("--refit", nargs="+", metavar="PROFILE",
                        help="measure nothing: fit the points of these profiles (one model, one "
                        "device) again, with this version's features (harness/refit.py)")  # fmt: skip
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option {bad[0]}")
    if args.refit and overrides:
        parser.error("--refit takes no overrides: it fits measured points again")
    out = Path(args.out)
    try:
        if args.refit:
            from harness.refit import refit

            profile = refit(args.refit, args.name or out.stem)
        else:
            profile = calibrate(overrides, args.quick, args.name or out.stem, args.clock,
                                preset=args.grid)  # fmt: skip
    except CONFIG_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(profile_json(profile))
    m, s = profile["step_model"], profile["swap_model"]
    print(f"wrote {out}: {profile['device']}, {profile['model']['preset']} {profile['dtype']}, "
          f"{profile['kv_capacity']['num_gpu_blocks']} KV blocks; {m['num_points']} steps in "
          f"{profile['settings']['num_cells']} cells, measured in "
          f"{profile['settings']['measure_s']:.1f} s; step time error {m['in_sample_mape']:.1%} "
          f"in-sample, {m['held_out_mape']:.1%} held-out; swaps out {s['out']['mape']:.1%}, "
          f"in {s['in']['mape']:.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
