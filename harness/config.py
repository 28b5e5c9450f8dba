"""Structured config: the schema Hydra checks every key against, and start-up validation.

A mistyped key fails when Hydra composes the config (the schema is strict) or, for a key added
with `+key=value` or a constructor argument of a `_target_` node, in `check_config()`; an
impossible value fails in `validate()` before any model is built. Each names the key.
"""

from __future__ import annotations

import difflib
import inspect
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from workloads.errors import WorkloadError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# keys `hydra.utils.instantiate` reads itself, beside the constructor's arguments
_INSTANTIATE_KEYS = frozenset({"_target_", "_convert_", "_recursive_", "_partial_", "_args_"})


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


# Errors in what the user asked for: one line and exit status 2, no traceback. A workload's own
# error comes from `workloads`, which imports nothing from `harness`.
CONFIG_ERRORS = (ConfigError, WorkloadError)


@dataclass
class VirtualCostConfig:
    """Step cost under `engine.clock=virtual` (seconds): a fixed part, per token computed,
    per context token attended, per KV block swapped."""

    step_s: float = 2e-3
    per_token_s: float = 2e-5
    per_context_token_s: float = 1e-8
    per_swap_block_s: float = 1e-5


def _local_executor() -> dict:
    return {"_target_": "harness.executors.local.LocalExecutor"}


@dataclass
class EngineConfig:
    # What runs a step (a `_target_` node given engine.* and model.*): the engine=NAME presets
    # in conf/engine/ set it; the real model on this machine's device by default
    executor: Any = field(default_factory=_local_executor)
    kind: str = "auto"  # auto | cuda | cpu | sim (engine=sim: conf/engine/sim.yaml)
    # engine=sim: the calibrated step-time profile, a packaged name (harness/profiles/NAME.json)
    # or a file written by `python -m harness.calibrate` (docs/simulator.md)
    profile: str | None = None
    dtype: str = "auto"  # auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16 | float16
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    gpu_memory_utilization: float = 0.90  # cuda: fraction of device memory the run may use
    # cpu: KV cache size when budget.num_gpu_blocks is unset; small on purpose, so that the
    # default tiny run feels KV pressure as a loaded GPU does (640 blocks of the tiny model)
    cpu_kv_cache_gb: float = 0.02
    cpu_swap_gb: float = 4.0  # cuda: pinned host swap pool when budget.num_cpu_blocks is unset
    enforce_eager: bool = False  # cuda: no CUDA graphs
    # cuda: prefill and mixed steps of up to this many tokens replay piecewise CUDA graphs (all
    # but the attention captured per token bucket; harness/executors/cuda_graphs.py); larger
    # ones run eagerly. 0: every such step eagerly (the engine before 2026-12-02)
    piecewise_max_tokens: int = 1024
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
    # automatic prefix caching: full KV blocks are shared by hash of their tokens and prefix
    # (docs/prefix_caching.md); off: every request computes its whole prompt
    enable_prefix_caching: bool = True
    # on a virtual clock (engine=sim, engine.clock=virtual): while nothing waits or is swapped
    # and every running request decodes, a policy that declares `steady_decodes` (fcfs,
    # decode_priority, chunked_prefill, prefill_priority, preempt_cpu) is not asked again: its
    # last decision is applied again, the same result faster (docs/simulator.md). false: the
    # policy decides every step
    replay_steady_decodes: bool = True
    virtual_cost: VirtualCostConfig = field(default_factory=VirtualCostConfig)


@dataclass
class ModelConfig:
    preset: str = "auto"  # auto (tiny on cpu, llama3_8b on cuda) | tiny | llama3_2_1b | ...
    path: str | None = None  # a local Hugging Face directory; wins over `preset`
    seed: int = 0  # seed of the random preset weights


@dataclass
class BudgetConfig:
    # tokens computed in one step, all requests together; null: 2048 for a policy that chunks
    # prompts, max(2048, the longest request) for one that does not (vLLM's rule, see run.py)
    max_num_batched_tokens: int | None = None
    # prefill tokens (every row but a decode) per step, within max_num_batched_tokens, so that
    # prompts cannot take a whole step from decodes; null: no separate cap
    max_num_prefill_tokens: int | None = None
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
class AdmissionConfig:
    """Admission control at arrival (harness/admission.py); null: off."""

    max_waiting: int | None = None  # requests waiting at most; more are shed
    max_predicted_wait_s: float | None = None  # shed above this predicted queueing delay


@dataclass
class RunConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    policy: Any = MISSING  # a `_target_` node: the policy class and its constructor arguments
    workload: Any = MISSING  # a `_target_` node: the workload class and its arguments
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    slo: SloConfig = field(default_factory=SloConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    logger: Any = MISSING  # a `_target_` node: where results go
    seed: int = 0
    results_dir: str = "results"


def register() -> None:
    """The schema, and `${traces:FILE}`: FILE in the traces folder (`workloads.fetch`)."""
    from workloads.fetch import trace_file

    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    OmegaConf.register_new_resolver("traces", trace_file, replace=True)


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python -m harness OVERRIDES` composes, with its `hydra` node."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


def check_config(cfg: DictConfig) -> None:
    """Every key known and every value set and resolvable (the `hydra` node aside), so that a
    typo fails before anything is built, naming the key (and the closest valid one)."""
    _check_keys(cfg, "", RunConfig)
    try:
        for key in cfg:
            if key != "hydra" and OmegaConf.is_config(cfg[key]):
                OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(one_line(exc)) from None


def valid_keys(cfg: DictConfig, path: str) -> set[str] | None:
    """The keys allowed under `path` ("" for the top) of a composed config, or (a free-form
    node, such as `workload.arrival`) those it has; None: unknown."""
    node, schema = cfg, RunConfig
    for part in path.split(".") if path else []:
        schema = _field_types(schema).get(part)
        node = node._get_node(part) if isinstance(node, DictConfig) and part in node else None
    allowed = _allowed(node, schema)
    if allowed is None and isinstance(node, DictConfig):
        return set(node)
    return allowed


def unknown_key_error(full_key: str, valid: Iterable[str] | None) -> ConfigError:
    parent, _, name = full_key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    valid = sorted(k for k in valid or () if not k.startswith("_"))
    if not valid:
        return ConfigError(f"unknown key {full_key}")
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean {prefix}{close[0]}?" if close else f"valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown key {full_key}; {hint}")


def one_line(exc: BaseException) -> str:
    """An OmegaConf/Hydra message on one line (without its `full_key:`/`object_type=` lines)."""
    parts = []
    for e in (exc, exc.__cause__):
        for line in str(e or "").splitlines():
            line = line.strip()
            if line and not line.startswith(("full_key:", "reference_type=", "object_type=")):
                parts.append(line.rstrip("."))
    return "; ".join(dict.fromkeys(parts))


def _check_keys(node: DictConfig, prefix: str, schema) -> None:
    allowed = _allowed(node, schema)
    types = _field_types(schema)
    for key in node:
        if not prefix and key == "hydra":
            continue
        if allowed is not None and key not in allowed:
            raise unknown_key_error(f"{prefix}{key}", allowed)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            if is_dataclass(types.get(key)) or "_target_" in child:
                _check_keys(child, f"{prefix}{key}.", types.get(key))


def _allowed(node, schema) -> set[str] | None:
    """A dataclass's fields, or the arguments of a `_target_` node's constructor."""
    if is_dataclass(schema):
        return {f.name for f in fields(schema)}
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    try:
        from hydra.utils import get_object

        params = inspect.signature(get_object(node._get_node("_target_")._value())).parameters
    except Exception:  # not importable: instantiating it says why, naming the key
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params) - {"self"} | _INSTANTIATE_KEYS


def _field_types(schema) -> dict:
    return get_type_hints(schema) if is_dataclass(schema) else {}


# Run and sweep folders this process made (folder, is a sweep), for `remove_unused_run_folders`,
# and why one could not be made (Hydra then fails making it: the CLI reports this instead).
NEW_RUN_FOLDERS: list[tuple[Path, bool]] = []
FOLDER_ERRORS: list[ConfigError] = []
_HYDRA_ONLY = (".hydra", "multirun.yaml")


class RunFolders(Callback):
    """Hydra callback (`hydra.callbacks` in conf/config.yaml). Makes the run or sweep folder
    before Hydra does, so an unwritable `results_dir` is one clear error (`FOLDER_ERRORS`), and
    notes whether it is new, so a run that fails before writing in it leaves no folder behind. Names a sweep's
    job folders by the overrides that vary: the others join `override_dirname`'s exclude list."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _claim(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _claim(config, "hydra.sweep.dir")
        _exclude_constant_overrides(config)


def _exclude_constant_overrides(config: DictConfig) -> None:
    """Every job recomposes with the sweep's `hydra.overrides.hydra`: extend them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    given = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    by_key = {o.key_or_group: o for o in parser.parse_overrides(given)}  # the command line wins
    swept = {k for k, o in by_key.items() if o.is_sweep_override()}
    if not swept:
        return
    node = config.hydra.job.config.override_dirname
    exclude = list(dict.fromkeys([*node.exclude_keys, *(set(by_key) - swept)]))
    with read_write(config.hydra.overrides):
        config.hydra.overrides.hydra.append(
            f"hydra.job.config.override_dirname.exclude_keys=[{','.join(exclude)}]"
        )


def _claim(config: DictConfig, key: str) -> None:
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(config)  # for `${hydra:...}` in the folder name
    folder = Path(OmegaConf.select(config, key)).absolute()
    # noted before it is made, so that a Ctrl-C between the two cannot leave it behind
    entry = (folder, key == "hydra.sweep.dir")
    if not folder.exists():
        NEW_RUN_FOLDERS.append(entry)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:  # Hydra turns a callback's exception into a warning: keep it
        FOLDER_ERRORS.append(
            ConfigError(
                f"results_dir={config.results_dir}: cannot write the run folder {folder} "
                f"({key}): {exc.strerror or exc}"
            )
        )


def remove_unused_run_folders() -> list[Path]:
    """Remove the folders this process made that hold nothing but Hydra's own files (a sweep
    folder: once its job folders are gone); never one that existed before. Returns them."""
    removed = []
    for folder, is_sweep in NEW_RUN_FOLDERS:
        if is_sweep and folder.is_dir():
            jobs = [p for p in folder.iterdir() if p.is_dir() and p.name != ".hydra"]
            removed += [job for job in jobs if _remove_if_unused(job)]
        if _remove_if_unused(folder):
            removed.append(folder)
    NEW_RUN_FOLDERS.clear()
    return removed


def _remove_if_unused(folder: Path) -> bool:
    import shutil

    if not folder.is_dir() or any(
        p.name not in _HYDRA_ONLY and p.suffix != ".log" for p in folder.iterdir()
    ):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def validate(cfg) -> None:
    """Reject impossible values, naming the key; runs before anything heavy is built."""
    e, b = cfg.engine, cfg.budget
    if e.kind not in ("auto", "cuda", "cpu", "sim"):
        raise ConfigError(f"engine.kind={e.kind!r}: use auto, cuda, cpu or sim")
    if e.clock not in ("wall", "virtual"):
        raise ConfigError(f"engine.clock={e.clock!r}: use wall or virtual")
    if e.kind == "sim" and not e.get("profile"):
        raise ConfigError("engine=sim needs engine.profile=NAME_OR_FILE (e.g. cpu_tiny)")
    if e.kind == "sim" and e.clock != "virtual":
        raise ConfigError(f"engine=sim models its step times: engine.clock={e.clock} must be "
                          "virtual")  # fmt: skip
    if e.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"engine.dtype={e.dtype!r}: use auto, float32, bfloat16 or float16")
    for key in ("max_num_batched_tokens", "max_num_prefill_tokens", "max_num_seqs", "block_size"):
        if b[key] is not None and b[key] < 1:
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
    if e.piecewise_max_tokens < 0:
        raise ConfigError(f"engine.piecewise_max_tokens={e.piecewise_max_tokens} must be >= 0 "
                          "(0: no piecewise graphs)")  # fmt: skip
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
