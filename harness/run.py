"""One run from a composed config: build the parts, serve the workload, write the results.

`run()` is a plain function (no Hydra) so tests and scripts call it directly.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from harness.admission import Admission
from harness.config import ConfigError, validate
from harness.engine import DecisionError, Engine, Limits, StallError
from harness.kv_cache import KVCacheManager
from harness.metrics import Recorder, requests_frame, summarize
from harness.request import workload_fingerprint
from harness.serve import VirtualClock, WallClock, serve
from harness.step_cost import LinearStepCost


@dataclass
class RunResult:
    summary: dict
    requests: object  # pandas DataFrame, one row per request
    steps: object  # pandas DataFrame, one row per step
    output_dir: Path | None
    resolved: dict | None = None  # what the config resolved to (device, KV blocks, ...)


def instantiate_node(cfg: DictConfig, key: str):
    """Instantiate `cfg[key]` (a `_target_` node), naming the key on a bad argument."""
    try:
        return instantiate(cfg[key], _convert_="all")
    except Exception as exc:  # Hydra wraps the constructor's TypeError/ValueError
        cause = exc.__cause__ or exc
        raise ConfigError(f"{key}: {cause}") from None


def build_executor(cfg: DictConfig):
    """`engine.executor` (a `_target_` node), given `engine.*` and `model.*` besides its own
    arguments. Cheap: it knows the model's shape and `max_model_len`; `start()` builds."""
    node = cfg.engine.executor
    try:
        cls = get_class(node._target_)
        own = {k: node[k] for k in node if not k.startswith("_")}
        return cls(engine=cfg.engine, model=cfg.model, **own)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"engine.executor: {type(exc).__name__}: {exc}") from None


DEFAULT_BATCHED_TOKENS = 2048  # vLLM's default step budget with chunked prefill


def resolve_token_budget(cfg: DictConfig, policy, specs, max_model_len: int) -> int:
    """`budget.max_num_batched_tokens`, or its default when unset (null).

    A policy that chunks prompts gets 2048 (vLLM's default). One that computes prompts whole
    gets vLLM's rule when chunking is off, max(2048, max_model_len), with max_model_len taken
    as the longest sequence this workload can reach: every request then fits a step, as in vLLM,
    and the activations are not sized for lengths no request reaches. An explicit value is
    honoured as given; a whole prompt longer than it then runs alone in its own step."""
    given = cfg.budget.max_num_batched_tokens
    if given is not None:
        return int(given)
    if policy.chunks_prefills or not policy.bounded_by_token_budget:
        return DEFAULT_BATCHED_TOKENS
    longest = max((s.num_prompt_tokens + s.max_output_tokens - 1 for s in specs), default=0)
    return max(DEFAULT_BATCHED_TOKENS, min(longest, max_model_len))


def run(
    cfg: DictConfig,
    output_dir: Path | None,
    names: dict[str, str] | None = None,
    specs: list | None = None,
    model=None,
    clock=None,
    executor=None,
) -> RunResult:
    """Serve `cfg.workload` with `cfg.policy`; write results to `output_dir` via `cfg.logger`.

    Prebuilt parts replace what the config would build: `specs` (a request list) the workload,
    `model` (matching `cfg.model`) the model (benchmarks run many configs on one model), `clock`
    (with `start`, `now`, `wait_until`; `virtual` and `advance` if it is modelled) the serving
    clock, `executor` (not started) `engine.executor`.
    """
    validate(cfg)
    names = names or {}
    if executor is None:
        executor = build_executor(cfg)
    max_model_len = executor.max_model_len
    policy = instantiate_node(cfg, "policy")
    workload = instantiate_node(cfg, "workload")
    logger = instantiate_node(cfg, "logger")
    if specs is None:
        specs = workload.build(
            seed=cfg.seed, vocab_size=executor.args.vocab_size, max_model_len=max_model_len
        )
    workload_stats = json.loads(json.dumps(getattr(workload, "stats", {}), default=str))

    budget = resolve_token_budget(cfg, policy, specs, max_model_len)
    prefill_budget = cfg.budget.max_num_prefill_tokens
    if prefill_budget is not None and prefill_budget > budget:
        raise ConfigError(
            f"budget.max_num_prefill_tokens={prefill_budget} is larger than the step budget "
            f"budget.max_num_batched_tokens={budget}"
        )
    num_gpu_blocks, num_cpu_blocks = executor.start(cfg.budget, budget, seed=cfg.seed, model=model)
    # static batching models a request-level engine (HF generate): it caches no prefix
    caching = cfg.engine.enable_prefix_caching and policy.supports_prefix_caching
    kv = KVCacheManager(num_gpu_blocks, cfg.budget.block_size, num_cpu_blocks,
                        cfg.budget.watermark, enable_prefix_caching=caching)  # fmt: skip
    limits = Limits(
        budget, cfg.budget.max_num_seqs, max_model_len, cfg.engine.starvation_threshold,
        prefill_budget,
    )  # fmt: skip
    # A step's time is measured on a wall clock; on a virtual one it is modelled: by the
    # executor's own model if it has one (a simulator's profile), else by engine.virtual_cost.
    step_cost = getattr(executor, "step_cost", None)
    if clock is None:
        clock = WallClock() if cfg.engine.clock == "wall" else VirtualClock()
    if getattr(clock, "virtual", False):
        step_cost = step_cost or LinearStepCost(**cfg.engine.virtual_cost)
    elif step_cost is not None:
        raise ConfigError(f"engine.clock={cfg.engine.clock}: this executor models its step "
                          "times and needs engine.clock=virtual")  # fmt: skip
    recorder = Recorder()
    try:
        admission = Admission(**OmegaConf.to_container(cfg.admission))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    engine = Engine(
        policy, executor, kv, limits, clock, recorder,
        temperature=cfg.engine.temperature, top_p=cfg.engine.top_p,
        pipelined=cfg.engine.async_scheduling, admission=admission, step_cost=step_cost,
        replay_steady=cfg.engine.replay_steady_decodes and getattr(clock, "virtual", False),
    )  # fmt: skip

    fingerprint = workload_fingerprint(specs)
    resolved = {
        **executor.describe(), "num_gpu_blocks": num_gpu_blocks, "num_cpu_blocks": num_cpu_blocks,
        "max_model_len": max_model_len, "max_num_batched_tokens": budget,
        "max_num_batched_tokens_given": cfg.budget.max_num_batched_tokens is not None,
        "async_scheduling": engine.pipelined, "enable_prefix_caching": caching,
        "workload_fingerprint": fingerprint,
        "workload_stats": workload_stats, **names,
    }  # fmt: skip
    cfg = cfg.copy()
    with open_dict(cfg):  # the run folder's config shows the budget the run really had
        cfg.budget.max_num_batched_tokens = budget
    logger.start(cfg, resolved, output_dir)
    complete, error = True, None
    with _interrupts_as_keyboard_interrupt():
        # Time 0 of every latency: after the model, the executor and the logger are up.
        clock.start()
        try:
            serve(engine, specs, clock, progress=cfg.engine.progress)
        except KeyboardInterrupt:
            complete, error = False, f"interrupted at step {engine.num_steps}"
        except (StallError, DecisionError) as exc:
            complete, error = False, str(exc)
        except Exception as exc:  # an executor/device fault: keep what was done, say where
            traceback.print_exc()
            complete, error = (
                False,
                f"step {engine.num_steps_started} failed: {type(exc).__name__}: {exc}",
            )
    if not complete:
        arrived = engine.requests
        engine.abort_unfinished(error, [s for s in specs if s.request_id not in arrived])
    requests_df = requests_frame(engine.requests.values())
    steps_df = recorder.steps_frame()
    slo = OmegaConf.to_container(cfg.slo)
    summary = summarize(
        requests_df, steps_df, slo, complete=complete, error=error,
        starvation_threshold=cfg.engine.starvation_threshold, num_gpu_blocks=num_gpu_blocks,
        max_num_batched_tokens=budget if policy.bounded_by_token_budget else None,
        workload_fingerprint=fingerprint, workload_stats=workload_stats,
    )  # fmt: skip
    if engine.num_replayed:  # steps that applied the policy's steady decision again (engine.py)
        summary["num_steps_replayed"] = engine.num_replayed
    notes = getattr(executor, "run_notes", None)
    if notes is not None:
        summary.update(notes())
        _say_range(summary.get("sim_profile_range"))
    logger.finish(summary, requests_df, steps_df)
    result = RunResult(summary, requests_df, steps_df, output_dir, resolved)
    if error:
        print(f"run stopped early: {error}", file=sys.stderr)
    return result


def _say_range(r: dict | None) -> None:
    """One line when a simulated run's steps went beyond what its profile measured."""
    if not r or not r["num_beyond"]:
        return
    parts = ", ".join(f"{f} > {r['measured_max'][f]:,.0f}: {n:,}" for f, n in r["beyond"].items()
                      if n)  # fmt: skip
    print(f"engine=sim: {r['num_beyond']:,} of {r['num_steps']:,} steps "
          f"({r['num_beyond'] / max(r['num_steps'], 1):.1%}) beyond what the profile measured "
          f"({parts}): their times are extrapolated", file=sys.stderr)  # fmt: skip


class _interrupts_as_keyboard_interrupt:
    """SIGTERM behaves like Ctrl-C during serving, so partial results are written either way."""

    def __enter__(self):
        self._old = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, self._raise)
        except ValueError:  # not the main thread
            self._old = None
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False
