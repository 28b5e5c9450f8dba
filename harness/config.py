"""Structured config: the schema Hydra checks every key against, and start-up validation.

A mistyped key fails when Hydra composes the config (the schema is strict); an impossible value
fails in `validate()` before any model is built. Both name the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


@dataclass
class VirtualCostConfig:
    """Step cost under `engine.clock=virtual` (seconds): a fixed part, per token computed,
    per context token attended, per KV block swapped."""

    step_s: float = 2e-3
    per_token_s: float = 2e-5
    per_context_token_s: float = 1e-8
    per_swap_block_s: float = 1e-5


@dataclass
class EngineConfig:
    kind: str = "auto"  # auto | cuda | cpu
    dtype: str = "auto"  # auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16 | float16
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    gpu_memory_utilization: float = 0.90  # cuda: fraction of device memory the run may use
    # cpu: KV cache size when budget.num_gpu_blocks is unset; small on purpose, so that the
    # default tiny run feels KV pressure as a loaded GPU does (640 blocks of the tiny model)
    cpu_kv_cache_gb: float = 0.02
    cpu_swap_gb: float = 4.0  # cuda: pinned host swap pool when budget.num_cpu_blocks is unset
    enforce_eager: bool = False  # cuda: no CUDA graphs
    # schedule and prepare step n+1 while step n runs on the device (exact: lengths are forced)
    async_scheduling: bool = True
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    progress: bool = True  # a progress bar on the terminal
    num_threads: int | None = None  # cpu torch threads (default: 1 for tiny, else torch's)
    # wall: arrivals and token times on the host clock (what the hardware really does);
    # virtual: time advances by `virtual_cost` per step, so a run is exactly reproducible
    clock: str = "wall"
    # a request preempted this many times is reported as starving and protected from being a
    # victim again while other candidates exist (null: neither)
    starvation_threshold: int | None = 8
    virtual_cost: VirtualCostConfig = field(default_factory=VirtualCostConfig)


@dataclass
class ModelConfig:
    preset: str = "auto"  # auto (tiny on cpu, llama3_8b on cuda) | tiny | llama3_2_1b | ...
    path: str | None = None  # a local Hugging Face directory; wins over `preset`
    seed: int = 0  # seed of the random preset weights


@dataclass
class BudgetConfig:
    max_num_batched_tokens: int = 2048  # tokens computed in one step, all requests together
    max_num_seqs: int = 256  # requests holding KV blocks at once
    block_size: int = 16  # tokens per KV block
    num_gpu_blocks: int | None = None  # KV cache size in blocks; default: sized from memory
    num_cpu_blocks: int | None = (
        None  # swap pool in blocks; default: cpu = num_gpu_blocks, cuda = engine.cpu_swap_gb
    )
    watermark: float = 0.01  # fraction of blocks new admissions leave free


@dataclass
class SloConfig:
    ttft_s: float | None = 2.0
    tpot_s: float | None = 0.1
    e2e_s: float | None = None


@dataclass
class RunConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    policy: Any = MISSING  # a `_target_` node: the policy class and its constructor arguments
    workload: Any = MISSING  # a `_target_` node: the workload class and its arguments
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    slo: SloConfig = field(default_factory=SloConfig)
    logger: Any = MISSING  # a `_target_` node: where results go
    seed: int = 0
    results_dir: str = "results"


def register() -> None:
    """The schema, and `${traces:FILE}`: FILE in the traces folder (`workloads.fetch`)."""
    from workloads.fetch import trace_file

    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    OmegaConf.register_new_resolver("traces", trace_file, replace=True)


def validate(cfg) -> None:
    """Reject impossible values, naming the key; runs before anything heavy is built."""
    e, b = cfg.engine, cfg.budget
    if e.kind not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"engine.kind={e.kind!r}: use auto, cuda or cpu")
    if e.clock not in ("wall", "virtual"):
        raise ConfigError(f"engine.clock={e.clock!r}: use wall or virtual")
    if e.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"engine.dtype={e.dtype!r}: use auto, float32, bfloat16 or float16")
    for key in ("max_num_batched_tokens", "max_num_seqs", "block_size"):
        if b[key] < 1:
            raise ConfigError(f"budget.{key}={b[key]} must be >= 1")
    if b.block_size & (b.block_size - 1):
        raise ConfigError(f"budget.block_size={b.block_size} must be a power of two")
    if b.num_gpu_blocks is not None and b.num_gpu_blocks < b.max_num_seqs:
        raise ConfigError(
            f"budget.num_gpu_blocks={b.num_gpu_blocks} is smaller than one block per sequence "
            f"(budget.max_num_seqs={b.max_num_seqs})"
        )
    if b.num_cpu_blocks is not None and b.num_cpu_blocks < 0:
        raise ConfigError(f"budget.num_cpu_blocks={b.num_cpu_blocks} must be >= 0")
    if not 0.0 <= b.watermark < 1.0:
        raise ConfigError(f"budget.watermark={b.watermark} must be in [0, 1)")
    if not 0.0 < e.gpu_memory_utilization <= 1.0:
        raise ConfigError(
            f"engine.gpu_memory_utilization={e.gpu_memory_utilization} must be in (0, 1]"
        )
    if e.max_model_len is not None and e.max_model_len < 2:
        raise ConfigError(f"engine.max_model_len={e.max_model_len} must be >= 2")
    if e.temperature < 0 or not 0 < e.top_p <= 1:
        raise ConfigError(
            f"engine.temperature={e.temperature} / engine.top_p={e.top_p} out of range"
        )
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        if cfg.slo[key] is not None and cfg.slo[key] <= 0:
            raise ConfigError(f"slo.{key}={cfg.slo[key]} must be > 0 (or null for none)")
