"""`engine=cpu|cuda|auto`: the real model on this machine's device (`ModelRunner`).

An executor is a `_target_` node (`engine.executor` in `conf/engine/*.yaml`). Its constructor is
cheap and says what the run needs before anything heavy is built (the model's shape, the dtype,
`max_model_len`); `start()` builds what only it can (the model, the KV cache sized in blocks,
the swap pool) and returns the block counts that the KV bookkeeping then mirrors.
"""

from __future__ import annotations

import gc

import torch
from omegaconf import DictConfig

from harness.config import ConfigError
from harness.models.config import ModelArgs, model_args, resolve_max_model_len  # noqa: F401
from harness.models.loader import build_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(kind: str) -> torch.device:
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("engine.kind=cuda but no CUDA device is visible")
    return torch.device(kind)


def attention_backend(device: torch.device):
    from harness.models.attention import TorchAttention, TritonAttention

    return TritonAttention() if device.type == "cuda" else TorchAttention()


class LocalExecutor:
    """The model in `model.*` on `engine.kind`'s device, one forward pass per step."""

    def __init__(self, engine: DictConfig, model: DictConfig) -> None:
        self.engine_cfg, self.model_cfg = engine, model
        self.device = resolve_device(engine.kind)
        self.preset, self.args = model_args(model, self.device.type)
        name = engine.dtype
        if name == "auto":
            name = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype_name, self.dtype = name, DTYPES[name]
        self.max_model_len = resolve_max_model_len(engine.max_model_len, self.args)
        # Only a cuda launch returns before the step is computed, so only there can the engine
        # prepare step n+1 while step n runs.
        self.overlaps_host = self.device.type == "cuda"
        self.runner = None
        self.model = None

    def describe(self) -> dict:
        """What the run resolved to, for config.yaml's `resolved` node."""
        return {
            "device": str(self.device), "dtype": self.dtype_name,
            "model_preset": self.preset if not self.model_cfg.path else "hf",
        }  # fmt: skip

    def start(
        self, budget: DictConfig, max_num_batched_tokens: int, seed: int = 0, model=None
    ) -> tuple[int, int]:
        """Build the model (or take `model`, matching `model.*`), size the KV cache and the swap
        pool, and build the runner; returns (num_gpu_blocks, num_cpu_blocks)."""
        from harness.executors.model_runner import ModelRunner

        e = self.engine_cfg
        if e.num_threads:
            torch.set_num_threads(e.num_threads)
        elif self.device.type == "cpu" and self.preset == "tiny" and not self.model_cfg.path:
            torch.set_num_threads(1)  # tiny matrices: more threads only add contention
        torch.manual_seed(seed)
        if model is None:
            model = build_model(self.preset, self.model_cfg.path, self.device, self.dtype,
                                seed=self.model_cfg.seed)  # fmt: skip
        self.model = model
        num_gpu, num_cpu = self._num_blocks(budget, max_num_batched_tokens)
        # On cuda the activations were measured for a step of this many tokens; a larger one
        # (static batching's padded pass, a whole prompt beyond the budget) runs as several
        # forward passes.
        cuda = self.device.type == "cuda"
        max_forward = max(max_num_batched_tokens, budget.max_num_seqs) if cuda else None
        self.runner = ModelRunner(
            model, num_gpu, num_cpu, budget.block_size, backend=attention_backend(self.device),
            seed=seed, cuda_graphs=not e.enforce_eager, max_num_seqs=budget.max_num_seqs,
            max_model_len=self.max_model_len, max_forward_tokens=max_forward,
            piecewise_max_tokens=self.piecewise_max_tokens(max_forward),
        )  # fmt: skip
        return num_gpu, num_cpu

    def piecewise_max_tokens(self, max_forward: int | None) -> int:
        """The largest step the piecewise graphs take (0: none): engine.piecewise_max_tokens,
        at most a forward pass's tokens; none on the cpu or under enforce_eager."""
        e = self.engine_cfg
        if self.device.type != "cuda" or e.enforce_eager or e.piecewise_max_tokens <= 0:
            return 0
        return min(e.piecewise_max_tokens, max_forward or e.piecewise_max_tokens)

    # -- the executor interface (harness/executors/base.py) ------------------------------
    def launch(self, batch, feed_from=None):
        return self.runner.launch(batch, feed_from)

    def execute(self, batch):
        return self.runner.execute(batch)

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        self.runner.swap_out(pairs)

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        self.runner.swap_in(pairs)

    # -- KV sizing -----------------------------------------------------------------------
    def _num_blocks(self, b: DictConfig, max_num_batched_tokens: int) -> tuple[int, int]:
        """KV blocks on the device and in the host swap pool, from the budget or from memory."""
        from harness.executors.model_runner import kv_block_bytes, peak_step_bytes

        e, device = self.engine_cfg, self.device
        block_bytes = kv_block_bytes(self.model, b.block_size, self.dtype)
        num_gpu = b.num_gpu_blocks
        if num_gpu is None:
            if device.type == "cuda":
                # vLLM's rule: the run may use `gpu_memory_utilization` of the device; what this
                # process holds now (weights) and the activations come off it; the rest is KV
                # cache. The activations are measured: the largest eager step (a full token
                # budget of prefill, then the LM head and sampling of max_num_seqs rows) plus
                # the largest decode graph's pool (max_num_seqs one-token rows), the piecewise
                # graphs' pool (bounded by an eager step of their largest bucket), and 512 MiB
                # for allocator slack and library workspaces. Memory another process holds is not
                # ours to take, so free memory also bounds it.
                profile = (self.model, attention_backend(device))
                sampling = (e.temperature, e.top_p)
                tokens = max(max_num_batched_tokens, b.max_num_seqs)
                act = peak_step_bytes(*profile, tokens, b.max_num_seqs, b.block_size,
                                      self.max_model_len, *sampling)  # fmt: skip
                act += peak_step_bytes(*profile, b.max_num_seqs, b.max_num_seqs, b.block_size,
                                       1, *sampling)  # fmt: skip
                pieces = self.piecewise_max_tokens(tokens)
                if pieces:
                    act += peak_step_bytes(*profile, pieces, b.max_num_seqs, b.block_size,
                                           self.max_model_len, *sampling)  # fmt: skip
                act += 2**29
                gc.collect()  # an earlier run's model and cache in this process, if unreachable
                torch.cuda.empty_cache()
                free, total = torch.cuda.mem_get_info(device)
                held = torch.cuda.memory_allocated(device)
                budget = total * e.gpu_memory_utilization - held - act
                num_gpu = int(max(0, min(budget, free - act)) // block_bytes)
            else:
                num_gpu = int(e.cpu_kv_cache_gb * 2**30 // block_bytes)
            if num_gpu < b.max_num_seqs:
                raise ConfigError(
                    f"only {num_gpu} KV blocks fit in memory, fewer than budget.max_num_seqs="
                    f"{b.max_num_seqs}; lower it or set budget.num_gpu_blocks"
                )
        num_cpu = b.num_cpu_blocks
        if num_cpu is None:  # cpu: as large as the "device" cache; cuda: engine.cpu_swap_gb
            cpu = device.type == "cpu"
            num_cpu = num_gpu if cpu else int(e.cpu_swap_gb * 2**30 // block_bytes)
        return num_gpu, num_cpu
