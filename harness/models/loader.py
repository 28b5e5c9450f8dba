"""Build a model: a seeded random preset, or real weights from a local Hugging Face directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.models.config import ModelArgs, preset_args
from harness.models.llama import LlamaModel, RotaryEmbedding, TritonOps, init_random_weights

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


class ModelLoadError(ValueError):
    """A checkpoint directory that cannot be served (missing files, unsupported architecture)."""


def args_from_hf_config(path: Path) -> ModelArgs:
    """Read `config.json` of a Hugging Face checkpoint into ModelArgs, or explain why not."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"model.path={path}: no config.json there")
    cfg = json.loads(cfg_file.read_text())
    archs = cfg.get("architectures") or []
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise ModelLoadError(
            f"model.path={path}: architecture {archs} in {cfg_file} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    num_heads = cfg["num_attention_heads"]
    eos = cfg.get("eos_token_id")
    return ModelArgs(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=cfg.get("num_key_value_heads") or num_heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // num_heads,
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        rope_theta=cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)),
        rope_scaling=_rope_scaling(cfg),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        attention_bias=cfg.get("attention_bias", "Qwen2ForCausalLM" in archs),
        eos_token_id=eos[0] if isinstance(eos, list) else eos,
    )


def _rope_scaling(cfg: dict) -> dict | None:
    sc = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if not sc or sc.get("rope_type", sc.get("type", "default")) == "default":
        return None
    return sc


def _hf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"model.path={path}: no *.safetensors files there")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _to_fused(hf: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Rename HF keys to ours, fusing q/k/v into qkv_proj and gate/up into gate_up_proj."""
    hf = {k.removeprefix("model."): v for k, v in hf.items()}
    out = {
        "embed_tokens.weight": hf["embed_tokens.weight"],
        "norm.weight": hf["norm.weight"],
        "lm_head.weight": hf.get("lm_head.weight", hf["embed_tokens.weight"]),
    }
    for i in range(args.num_layers):
        p = f"layers.{i}."
        a = p + "self_attn."
        out[a + "qkv_proj.weight"] = torch.cat([hf[a + f"{x}_proj.weight"] for x in "qkv"])
        if args.attention_bias:
            out[a + "qkv_proj.bias"] = torch.cat([hf[a + f"{x}_proj.bias"] for x in "qkv"])
        out[a + "o_proj.weight"] = hf[a + "o_proj.weight"]
        m = p + "mlp."
        out[m + "gate_up_proj.weight"] = torch.cat(
            [hf[m + "gate_proj.weight"], hf[m + "up_proj.weight"]]
        )
        out[m + "down_proj.weight"] = hf[m + "down_proj.weight"]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[p + norm + ".weight"] = hf[p + norm + ".weight"]
    return out


def build_model(
    preset: str, path: str | None, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> LlamaModel:
    """The model for a run: `path` (an HF directory) wins over `preset` (random weights)."""
    if path:
        ckpt = Path(path).expanduser()
        args = args_from_hf_config(ckpt)
        state = _to_fused(_hf_state_dict(ckpt), args)
    else:
        args = preset_args(preset)
    with torch.device("meta"):
        model = LlamaModel(args)
    model = model.to_empty(device=device).to(dtype)
    model.rope = RotaryEmbedding(args).to(device)  # its tables were on meta; float32 always
    if args.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    if path:
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (args.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ModelLoadError(f"model.path={path}: missing {missing}, unexpected {unexpected}")
    else:
        init_random_weights(model, seed)
    if device.type == "cuda":
        model.ops = TritonOps()
    return model.eval()
