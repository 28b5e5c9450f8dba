"""Shared factories: real tiny engines on the CPU, request specs, a manual clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.engine import Engine, Limits
from harness.executors.model_runner import ModelRunner
from harness.kv_cache import KVCacheManager
from harness.metrics import Recorder
from harness.models.config import ModelArgs
from harness.models.llama import LlamaModel, TritonOps, init_random_weights
from harness.request import RequestSpec

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# A model small enough for unit tests: a step takes about a millisecond.
TEST_ARGS = ModelArgs(
    vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=16, max_position_embeddings=1024,
)  # fmt: skip


class ManualClock:
    """A clock that moves only when told: each `now()` call advances it by `tick` seconds."""

    def __init__(self, tick: float = 0.0) -> None:
        self.t, self.tick = 0.0, tick

    def start(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        self.t += self.tick
        return self.t

    def wait_until(self, t: float) -> None:
        self.t = max(self.t, t)


def make_specs(
    prompt_lens, output_lens, vocab_size=256, seed=0, arrivals=None
) -> list[RequestSpec]:
    """Requests with seeded random prompt ids; all at t=0 unless `arrivals` is given."""
    rng = np.random.default_rng(seed)
    arrivals = arrivals if arrivals is not None else [0.0] * len(prompt_lens)
    return [
        RequestSpec(
            request_id=f"r{i}",
            arrival_s=float(arrivals[i]),
            prompt_ids=tuple(rng.integers(0, vocab_size, size=p).tolist()),
            max_output_tokens=o,
        )
        for i, (p, o) in enumerate(zip(prompt_lens, output_lens, strict=True))
    ]


def make_model(
    args: ModelArgs = TEST_ARGS, seed: int = 0, std: float = 0.02, device: str = "cpu"
) -> LlamaModel:
    torch.manual_seed(seed)
    model = LlamaModel(args).float().to(device)
    if device == "cuda":
        model.ops = TritonOps()
    init_random_weights(model, seed, std=std)
    return model.eval()


def make_engine(
    policy,
    model: LlamaModel | None = None,
    num_gpu_blocks: int = 64,
    num_cpu_blocks: int = 64,
    block_size: int = 16,
    max_num_batched_tokens: int = 512,
    max_num_seqs: int = 16,
    clock=None,
    watermark: float = 0.0,
    backend=None,
    pipelined: bool = False,
    cuda_graphs: bool = False,
    piecewise_max_tokens: int = 0,
) -> Engine:
    """A real engine (tiny model; torch reference kernels unless `backend`) with a manual clock."""
    model = model or make_model()
    runner = ModelRunner(model, num_gpu_blocks, num_cpu_blocks, block_size, backend=backend,
                         cuda_graphs=cuda_graphs, max_num_seqs=max_num_seqs,
                         piecewise_max_tokens=piecewise_max_tokens)  # fmt: skip
    kv = KVCacheManager(num_gpu_blocks, block_size, num_cpu_blocks, watermark)
    limits = Limits(max_num_batched_tokens, max_num_seqs, model.args.max_position_embeddings)
    clock = clock or ManualClock(tick=1e-3)
    return Engine(policy, runner, kv, limits, clock, Recorder(), pipelined=pipelined)


def serve_checking_invariants(engine: Engine, specs) -> None:
    """Replay `specs` on the engine's clock, checking the KV invariants after every step."""
    from harness.serve import serve

    step = engine.step

    def checked_step() -> bool:
        progressed = step()
        engine.kv.check_invariants()
        return progressed

    engine.step = checked_step
    serve(engine, specs, engine.clock, progress=False)


def run_to_completion(engine: Engine, specs, max_steps: int = 10_000) -> None:
    """Add every spec at once and step until all are done (no wall clock involved)."""
    for s in specs:
        engine.add_request(s)
    for _ in range(max_steps):
        if not engine.has_unfinished:
            return
        assert engine.step(), "the policy stalled"
        engine.kv.check_invariants()
    raise AssertionError("did not finish")


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def compose_cfg():
    """Compose the project's real Hydra config with overrides."""
    from hydra import compose, initialize_config_dir

    from harness.config import register

    register()

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose("config", overrides=list(overrides))

    return _compose
