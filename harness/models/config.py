"""Model shapes: the argument dataclass and the named presets (seeded random weights)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelArgs:
    """Shape of a Llama-family decoder (Llama 2/3, Mistral, Qwen2 share it)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # HF's dict, e.g. {"rope_type": "llama3", ...}
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2 has q/k/v biases
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )

    @property
    def num_params(self) -> int:
        attn = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = 3 * self.hidden_size * self.intermediate_size
        emb = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * (attn + mlp + 2 * self.hidden_size) + emb + self.hidden_size


_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

PRESETS: dict[str, dict] = {
    # Small enough that a CPU step takes milliseconds, big enough to have GQA and several layers.
    "tiny": dict(
        vocab_size=2048, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=32, max_position_embeddings=4096, rope_theta=10000.0,
    ),
    "llama3_2_1b": dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
        num_kv_heads=8, head_dim=64, max_position_embeddings=131072, rope_theta=500000.0,
        rope_scaling={**_LLAMA3_ROPE, "factor": 32.0}, tie_word_embeddings=True,
    ),
    "llama3_8b": dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        num_kv_heads=8, head_dim=128, max_position_embeddings=131072, rope_theta=500000.0,
        rope_scaling=_LLAMA3_ROPE,
    ),
    "qwen2_5_7b": dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
        num_kv_heads=4, head_dim=128, max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, attention_bias=True,
    ),
}  # fmt: skip


def preset_args(name: str) -> ModelArgs:
    if name not in PRESETS:
        raise ValueError(f"model.preset={name!r} is not a preset; choose one of {sorted(PRESETS)}")
    return ModelArgs(**PRESETS[name])


def model_args(model, device_type: str) -> tuple[str, ModelArgs]:
    """(preset name, shape) of `model.*`; `model.preset=auto` is llama3_8b on cuda, tiny else.
    Imports no torch unless `model.path` names a checkpoint (engine=sim runs without it)."""
    from harness.config import ConfigError

    preset = model.preset
    if preset == "auto":
        preset = "llama3_8b" if device_type == "cuda" else "tiny"
    if model.path:
        from pathlib import Path

        from harness.models.loader import args_from_hf_config

        return preset, args_from_hf_config(Path(model.path).expanduser())
    try:
        return preset, preset_args(preset)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def resolve_max_model_len(max_model_len: int | None, args: ModelArgs) -> int:
    """`engine.max_model_len`, capped by (and by default) the model's max_position_embeddings."""
    return min(max_model_len or args.max_position_embeddings, args.max_position_embeddings)
