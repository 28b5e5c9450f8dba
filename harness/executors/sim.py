"""`engine=sim`: the same engine and policies, no model and no tensors (docs/simulator.md).

A step's duration is the calibrated profile's prediction (`harness.sim_model.ProfileStepCost`,
the engine's step-cost model on the virtual clock); the KV cache size is the profile's, measured
by `python -m harness.calibrate` under that run's memory settings. Output token ids are not
produced: every sampled id is 0 (lengths are forced, so no decision depends on a token's value).
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from harness.config import ConfigError
from harness.models.config import ModelArgs, model_args, resolve_max_model_len
from harness.sim_model import ProfileStepCost, load_profile

# The fields of ModelArgs that decide a step's cost; the profile's must match model.*'s.
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "head_dim", "tie_word_embeddings", "attention_bias")  # fmt: skip


def shape_text(name: str, args: ModelArgs | dict) -> str:
    get = args.get if isinstance(args, dict) else lambda k: getattr(args, k)
    return (f"{name} (hidden {get('hidden_size')}, {get('num_layers')} layers, heads "
            f"{get('num_heads')}/{get('num_kv_heads')}x{get('head_dim')}, mlp "
            f"{get('intermediate_size')}, vocab {get('vocab_size')})")  # fmt: skip


class _Done:
    """A simulated step's handle: its sampled ids (zeros: not produced), already 'on the host'."""

    __slots__ = ("_ids",)
    device_time_s = None  # the engine sets the modelled time from `step_cost`

    def __init__(self, n: int) -> None:
        self._ids = np.zeros(n, dtype=np.int64)

    def result(self) -> np.ndarray:
        return self._ids


class SimExecutor:
    """Runs nothing: each batch's duration comes from `profile`'s fitted step-time model."""

    # A profile measured with pipelining (engine.async_scheduling on cuda) is simulated with it:
    # the engine launches step n+1 before it reads step n's tokens (harness/step_cost.Timeline).
    overlaps_host = False
    takes_feed = False  # its sampled ids are zeros: no decode row needs the previous step's
    needs_batch = False  # the engine launches a step's sizes (harness.batch.StepShape)

    def __init__(self, engine: DictConfig, model: DictConfig, profile: str | None = None) -> None:
        if not profile:
            raise ConfigError("engine=sim needs engine.profile=NAME_OR_FILE (e.g. cpu_tiny)")
        self.engine_cfg, self.model_cfg = engine, model
        self.profile = load_profile(str(profile))
        self.profile_name = self.profile["name"]
        pm = self.profile["model"]
        if model.preset == "auto" and not model.path:
            self.preset = pm["preset"]
            self.args = ModelArgs(**pm["args"])
        else:
            self.preset, self.args = model_args(model, "cpu")
        mine = {k: getattr(self.args, k) for k in SHAPE_FIELDS}
        theirs = {k: pm["args"].get(k) for k in SHAPE_FIELDS}
        if mine != theirs:
            name = "hf" if model.path else self.preset
            raise ConfigError(
                f"engine.profile={profile} was measured on {shape_text(pm['preset'], theirs)}, "
                f"but model.* is {shape_text(name, mine)}: calibrate that model "
                "(python -m harness.calibrate) or pick its profile"
            )
        dtype = engine.dtype
        if dtype not in ("auto", self.profile["dtype"]):
            raise ConfigError(f"engine.dtype={dtype}: engine.profile={profile} was measured in "
                              f"{self.profile['dtype']}")  # fmt: skip
        self.dtype_name = self.profile["dtype"]
        self.overlaps_host = bool(self.profile["settings"].get("async_scheduling"))
        self.max_model_len = resolve_max_model_len(engine.max_model_len, self.args)
        self.step_cost: ProfileStepCost | None = None

    def describe(self) -> dict:
        """What the run resolved to, for config.yaml's `resolved` node."""
        p = self.profile
        return {
            "device": f"sim of {p['device']}", "dtype": self.dtype_name,
            "model_preset": self.preset if not self.model_cfg.path else "hf",
            "profile": self.profile_name, "profile_commit": p.get("commit"),
            "profile_date": p.get("date"), "tokens": "not produced (engine=sim)",
        }  # fmt: skip

    def start(
        self, budget: DictConfig, max_num_batched_tokens: int, seed: int = 0, model=None
    ) -> tuple[int, int]:
        """(num_gpu_blocks, num_cpu_blocks): the profile's measured KV capacity, in blocks of
        `budget.block_size` (the same bytes), unless `budget.num_*_blocks` set them."""
        if model is not None:
            raise ConfigError("engine=sim runs no model: do not pass one")
        kv = self.profile["kv_capacity"]
        scale = kv["block_size"] / budget.block_size
        num_gpu = budget.num_gpu_blocks
        if num_gpu is None:
            num_gpu = int(kv["num_gpu_blocks"] * scale)
            if num_gpu < budget.max_num_seqs:
                raise ConfigError(
                    f"engine.profile={self.profile_name} holds {num_gpu} KV blocks, fewer than "
                    f"budget.max_num_seqs={budget.max_num_seqs}; lower it or set "
                    "budget.num_gpu_blocks"
                )
        num_cpu = budget.num_cpu_blocks
        if num_cpu is None:
            num_cpu = int(kv["num_cpu_blocks"] * scale)
        buckets = pieces = None
        settings = self.profile["settings"]
        if settings.get("cuda_graphs"):
            from harness.executors.graph_sizes import capture_sizes, piece_sizes

            buckets = capture_sizes(budget.max_num_seqs)
            if settings.get("piecewise_buckets"):  # as LocalExecutor sizes them for this run
                top = max(max_num_batched_tokens, budget.max_num_seqs)
                pieces = piece_sizes(min(self.engine_cfg.piecewise_max_tokens, top))
        self.step_cost = ProfileStepCost(self.profile, buckets, budget.block_size,
                                         self.max_model_len, pieces)  # fmt: skip
        return num_gpu, num_cpu

    def run_notes(self) -> dict:
        """For the run's summary: the steps whose sizes went beyond the profile's grid."""
        if self.step_cost is None or not self.step_cost.measured_max:
            return {}  # a profile without its points: the range is unknown, nothing to say
        return {"sim_profile_range": self.step_cost.range_report()}

    # -- the executor interface (harness/executors/base.py) ------------------------------
    def launch(self, batch, feed_from=None) -> _Done:
        """`batch`: a `harness.batch.Batch` or its `StepShape`; nothing runs."""
        return _Done(batch.num_sampled)

    def execute(self, batch) -> np.ndarray:
        return self.launch(batch).result()

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        """Nothing to copy; the engine charges `step_cost.swap_time`."""

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        """Nothing to copy; the engine charges `step_cost.swap_time`."""
