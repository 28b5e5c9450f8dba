"""One run from a composed config: build the parts, serve the workload, write the results.

`run()` is a plain function (no Hydra) so tests and scripts call it directly.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from harness.admission import Admission
from harness.config import ConfigError, validate
from harness.engine import DecisionError, Engine, Limits, StallError
from harness.executors.model_runner import ModelRunner, kv_block_bytes
from harness.kv_cache import KVCacheManager
from harness.metrics import Recorder, requests_frame, summarize
from harness.models.config import ModelArgs, preset_args
from harness.models.loader import args_from_hf_config, build_model
from harness.request import workload_fingerprint
from harness.serve import VirtualClock, WallClock, serve

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def resolve_device(kind: str) -> torch.device:
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("engine.kind=cuda but no CUDA device is visible")
    return torch.device(kind)


def model_args(cfg: DictConfig, device: torch.device) -> tuple[str, ModelArgs]:
    preset = cfg.model.preset
    if preset == "auto":
        preset = "llama3_8b" if device.type == "cuda" else "tiny"
    if cfg.model.path:
        return preset, args_from_hf_config(Path(cfg.model.path).expanduser())
    try:
        return preset, preset_args(preset)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def resolve_max_model_len(cfg: DictConfig, args: ModelArgs) -> int:
    """`engine.max_model_len`, capped by (and by default) the model's max_position_embeddings."""
    return min(cfg.engine.max_model_len or args.max_position_embeddings,
               args.max_position_embeddings)  # fmt: skip


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


def _num_blocks(
    cfg: DictConfig,
    device,
    dtype,
    args: ModelArgs,
    runner_model,
    max_model_len: int,
    max_num_batched_tokens: int,
) -> tuple[int, int]:
    """KV blocks on the device and in the host swap pool, from the budget or from memory."""
    b, e = cfg.budget, cfg.engine
    block_bytes = kv_block_bytes(runner_model, b.block_size, dtype)
    num_gpu = b.num_gpu_blocks
    if num_gpu is None:
        if device.type == "cuda":
            # vLLM's rule: the run may use `gpu_memory_utilization` of the device; what this
            # process holds now (weights) and the activations come off it; the rest is KV
            # cache. The activations are measured: the largest eager step (a full token budget
            # of prefill, then the LM head and sampling of max_num_seqs rows) plus the largest
            # decode graph's pool (max_num_seqs one-token rows), and 512 MiB for allocator
            # slack and library workspaces. Memory another process holds is not ours to take,
            # so free memory also bounds it.
            from harness.executors.model_runner import peak_step_bytes

            profile = (runner_model, _backend(device))
            limits = (b.block_size, max_model_len)
            sampling = (e.temperature, e.top_p)
            tokens = max(max_num_batched_tokens, b.max_num_seqs)
            act = peak_step_bytes(*profile, tokens, b.max_num_seqs, *limits, *sampling)
            act += peak_step_bytes(*profile, b.max_num_seqs, b.max_num_seqs, b.block_size, 1,
                                   *sampling)  # fmt: skip
            act += 2**29
            gc.collect()  # an earlier run's model and cache in this process, if unreachable
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(device)
            budget = total * e.gpu_memory_utilization - torch.cuda.memory_allocated(device) - act
            num_gpu = int(max(0, min(budget, free - act)) // block_bytes)
        else:
            num_gpu = int(e.cpu_kv_cache_gb * 2**30 // block_bytes)
        if num_gpu < b.max_num_seqs:
            raise ConfigError(
                f"only {num_gpu} KV blocks fit in memory, fewer than budget.max_num_seqs="
                f"{b.max_num_seqs}; lower it or set budget.num_gpu_blocks"
            )
    num_cpu = b.num_cpu_blocks
    if num_cpu is None:  # cpu: as large as the "device" cache; cuda: engine.cpu_swap_gb pinned
        num_cpu = num_gpu if device.type == "cpu" else int(e.cpu_swap_gb * 2**30 // block_bytes)
    return num_gpu, num_cpu


def run(
    cfg: DictConfig,
    output_dir: Path | None,
    names: dict[str, str] | None = None,
    specs: list | None = None,
    model=None,
    clock=None,
) -> RunResult:
    """Serve `cfg.workload` with `cfg.policy`; write results to `output_dir` via `cfg.logger`.

    Prebuilt parts replace what the config would build: `specs` (a request list) the workload,
    `model` (matching `cfg.model`) the model (benchmarks run many configs on one model), `clock`
    (with `start`, `now`, `wait_until`, `advance_step`, `advance_swap`) the serving clock.
    """
    validate(cfg)
    names = names or {}
    device = resolve_device(cfg.engine.kind)
    preset, args = model_args(cfg, device)
    dtype_name = cfg.engine.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.type == "cuda" else "float32"
    dtype = _DTYPES[dtype_name]
    max_model_len = resolve_max_model_len(cfg, args)
    policy = instantiate_node(cfg, "policy")
    workload = instantiate_node(cfg, "workload")
    logger = instantiate_node(cfg, "logger")
    if specs is None:
        specs = workload.build(
            seed=cfg.seed, vocab_size=args.vocab_size, max_model_len=max_model_len
        )
    workload_stats = json.loads(json.dumps(getattr(workload, "stats", {}), default=str))

    budget = resolve_token_budget(cfg, policy, specs, max_model_len)
    prefill_budget = cfg.budget.max_num_prefill_tokens
    if prefill_budget is not None and prefill_budget > budget:
        raise ConfigError(
            f"budget.max_num_prefill_tokens={prefill_budget} is larger than the step budget "
            f"budget.max_num_batched_tokens={budget}"
        )
    if cfg.engine.num_threads:
        torch.set_num_threads(cfg.engine.num_threads)
    elif device.type == "cpu" and preset == "tiny" and not cfg.model.path:
        torch.set_num_threads(1)  # tiny matrices: more threads only add contention
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(preset, cfg.model.path, device, dtype, seed=cfg.model.seed)
    num_gpu_blocks, num_cpu_blocks = _num_blocks(
        cfg, device, dtype, args, model, max_model_len, budget
    )
    # On cuda the activations were measured for a step of this many tokens; a larger one (static
    # batching's padded pass, a whole prompt beyond the budget) runs as several forward passes.
    max_forward = max(budget, cfg.budget.max_num_seqs) if device.type == "cuda" else None
    executor = ModelRunner(
        model, num_gpu_blocks, num_cpu_blocks, cfg.budget.block_size,
        backend=_backend(device), seed=cfg.seed, cuda_graphs=not cfg.engine.enforce_eager,
        max_num_seqs=cfg.budget.max_num_seqs, max_model_len=max_model_len,
        max_forward_tokens=max_forward,
    )  # fmt: skip
    kv = KVCacheManager(num_gpu_blocks, cfg.budget.block_size, num_cpu_blocks, cfg.budget.watermark)
    limits = Limits(
        budget, cfg.budget.max_num_seqs, max_model_len, cfg.engine.starvation_threshold,
        prefill_budget,
    )  # fmt: skip
    if clock is None:
        wall = cfg.engine.clock == "wall"
        clock = WallClock() if wall else VirtualClock(**cfg.engine.virtual_cost)
    recorder = Recorder()
    try:
        admission = Admission(**OmegaConf.to_container(cfg.admission))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    engine = Engine(
        policy, executor, kv, limits, clock, recorder,
        temperature=cfg.engine.temperature, top_p=cfg.engine.top_p,
        pipelined=cfg.engine.async_scheduling, admission=admission,
    )  # fmt: skip

    fingerprint = workload_fingerprint(specs)
    resolved = {
        "device": str(device), "model_preset": preset if not cfg.model.path else "hf",
        "dtype": dtype_name, "num_gpu_blocks": num_gpu_blocks, "num_cpu_blocks": num_cpu_blocks,
        "max_model_len": max_model_len, "max_num_batched_tokens": budget,
        "max_num_batched_tokens_given": cfg.budget.max_num_batched_tokens is not None,
        "async_scheduling": engine.pipelined, "workload_fingerprint": fingerprint,
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
    logger.finish(summary, requests_df, steps_df)
    result = RunResult(summary, requests_df, steps_df, output_dir, resolved)
    if error:
        print(f"run stopped early: {error}", file=sys.stderr)
    return result


def _backend(device: torch.device):
    from harness.models.attention import TorchAttention, TritonAttention

    return TritonAttention() if device.type == "cuda" else TorchAttention()


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
