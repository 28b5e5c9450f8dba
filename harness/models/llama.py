"""A Llama-family decoder (RMSNorm, RoPE, GQA, SwiGLU) over one flat varlen batch and a paged cache."""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.models.attention import AttentionMetadata
from harness.models.config import ModelArgs


class TorchOps:
    """The layer's elementwise ops as plain torch (the references in kernels/fused_ops.py)."""

    def __init__(self) -> None:
        from kernels.fused_ops import add_rmsnorm_ref, rope_ref, silu_mul_ref

        self.add_rmsnorm, self.silu_mul = add_rmsnorm_ref, silu_mul_ref
        self._rope = rope_ref

    def rope(self, x, positions, cos, sin):
        return self._rope(x, positions, cos, sin)


class TritonOps(TorchOps):
    """The same ops as single Triton kernels (GPU): one pass instead of several casts."""

    def __init__(self) -> None:
        from kernels.fused_ops import add_rmsnorm, rope_, silu_mul

        self.add_rmsnorm, self.silu_mul = add_rmsnorm, silu_mul
        self._rope = rope_


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, ops, residual: torch.Tensor | None = None):
        """(norm(x + residual), x + residual); float32 inside, rounded as HF Llama rounds."""
        return ops.add_rmsnorm(x, self.weight, self.eps, residual)


def rope_inv_freq(args: ModelArgs) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2], with Llama 3's long-context rescaling when configured."""
    d = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    sc = args.rope_scaling or {}
    if sc.get("rope_type", sc.get("type")) == "llama3":
        factor, low, high = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old_len = sc["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        inv_freq = torch.where(mid, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)
    elif sc and sc.get("rope_type", sc.get("type")) not in (None, "default"):
        raise ValueError(f"rope_scaling {sc} is not supported (only llama3 and default)")
    return inv_freq.float()


class RotaryEmbedding(nn.Module):
    """Precomputed float32 cos/sin tables indexed by position (HF's rotate-half convention)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        t = torch.arange(args.max_position_embeddings, dtype=torch.float32)
        freqs = torch.outer(t, rope_inv_freq(args))  # [max_pos, head_dim // 2]
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def forward(self, positions: torch.Tensor, qk: torch.Tensor, ops) -> torch.Tensor:
        """Rotate q and k heads together: qk is [num_tokens, num_heads + num_kv_heads, head_dim]."""
        return ops.rope(qk, positions, self.cos, self.sin)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            args.num_heads, args.num_kv_heads, args.head_dim,
        )  # fmt: skip
        self.q_size = args.num_heads * args.head_dim
        self.kv_size = args.num_kv_heads * args.head_dim
        self.qkv_proj = nn.Linear(
            args.hidden_size, self.q_size + 2 * self.kv_size, bias=args.attention_bias
        )
        self.o_proj = nn.Linear(self.q_size, args.hidden_size, bias=False)
        self.scale = args.head_dim**-0.5

    def project_and_store(self, x, positions, rope, kv_cache, meta: AttentionMetadata, backend,
                          ops) -> torch.Tensor:  # fmt: skip
        """QKV projection, RoPE, and the new K/V stored in the paged cache (by
        `meta.slot_mapping` only); returns the queries [num_tokens, num_heads, head_dim]."""
        qkv = self.qkv_proj(x)  # [num_tokens, q_size + 2 * kv_size]
        qk, v = qkv.split([self.q_size + self.kv_size, self.kv_size], dim=-1)
        qk = rope(positions, qk.view(-1, self.num_heads + self.num_kv_heads, self.head_dim), ops)
        q = qk[:, : self.num_heads]  # [num_tokens, num_heads, head_dim]
        k = qk[:, self.num_heads :]  # [num_tokens, num_kv_heads, head_dim]
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        backend.store_kv(k, v, kv_cache[0], kv_cache[1], meta)
        return q


class MLP(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.inter = args.intermediate_size
        self.gate_up_proj = nn.Linear(args.hidden_size, 2 * args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, ops) -> torch.Tensor:
        return self.down_proj(ops.silu_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.mlp = MLP(args)

    def forward(self, x, residual, positions, rope, kv_cache, meta, backend, ops):
        """Returns (this layer's MLP output, the residual stream before it), vLLM-style: the
        next norm adds them, so each residual add is fused into a norm."""
        q, residual = self.before_attention(x, residual, positions, rope, kv_cache, meta,
                                            backend, ops)  # fmt: skip
        out = backend.attend(q, kv_cache[0], kv_cache[1], meta, self.self_attn.scale)
        return self.after_attention(out, residual, ops)

    # The layer cut at its attention, for piecewise CUDA graphs (harness/executors/cuda_graphs.py):
    # everything but the attention over the paged cache depends on the token count only.
    def before_attention(self, x, residual, positions, rope, kv_cache, meta, backend, ops):
        """(queries [num_tokens, num_heads, head_dim], residual stream): norm, QKV, RoPE, and
        the K/V stored."""
        h, residual = self.input_layernorm(x, ops, residual)
        q = self.self_attn.project_and_store(h, positions, rope, kv_cache, meta, backend, ops)
        return q, residual

    def after_attention(self, attn_out, residual, ops):
        """(MLP output, residual stream) from the attention's output [num_tokens, heads, dim]."""
        h = self.self_attn.o_proj(attn_out.reshape(-1, self.self_attn.q_size))
        h, residual = self.post_attention_layernorm(h, ops, residual)
        return self.mlp(h, ops), residual


class LlamaModel(nn.Module):
    """Decoder + LM head. `forward` takes a flat batch (prefill chunks and decodes mixed)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.rope = RotaryEmbedding(args)
        self.layers = nn.ModuleList(DecoderLayer(args) for _ in range(args.num_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        if args.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.ops = TorchOps()  # elementwise ops; `TritonOps()` on the GPU (see loader)

    def forward(
        self,
        input_ids: torch.Tensor,  # [num_tokens]
        positions: torch.Tensor,  # [num_tokens]
        kv_cache: torch.Tensor,  # [num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]
        meta: AttentionMetadata,
        backend,
    ) -> torch.Tensor:
        """Hidden states after the final norm: [num_tokens, hidden_size]."""
        x, residual = self.embed_tokens(input_ids), None
        for i, layer in enumerate(self.layers):
            x, residual = layer(
                x, residual, positions, self.rope, kv_cache[i], meta, backend, self.ops
            )
        return self.norm(x, self.ops, residual)[0]

    def piece(self, i: int, x, residual, positions, kv_cache, meta, backend):
        """Piece `i` of the forward pass cut at every attention (num_layers + 1 pieces): piece
        0 embeds `x` (token ids) and runs layer 0 up to its attention; piece i runs layer i - 1
        from its attention's output `x` and layer i up to its attention; both return (queries,
        residual). The last piece returns (hidden states after the final norm, None). Running
        the pieces with each layer's attention between them computes `forward`."""
        if i == 0:
            x, residual = self.embed_tokens(x), None
        else:
            x, residual = self.layers[i - 1].after_attention(x, residual, self.ops)
        if i == len(self.layers):
            return self.norm(x, self.ops, residual)[0], None
        return self.layers[i].before_attention(
            x, residual, positions, self.rope, kv_cache[i], meta, backend, self.ops
        )

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[num_rows, vocab_size] in the model's dtype (greedy sampling needs no float copy)."""
        return self.lm_head(hidden)


@torch.no_grad()
def init_random_weights(model: LlamaModel, seed: int, std: float = 0.02) -> None:
    """Seeded N(0, std) weights (HF's initializer_range), unit norms, zero biases."""
    # Drawn on the parameters' device: an 8B model is initialised in seconds on a GPU.
    gen = None
    for name, p in model.named_parameters():
        if gen is None:
            gen = torch.Generator(device=p.device).manual_seed(seed)
        if name.endswith("layernorm.weight") or name == "norm.weight":
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        else:
            p.normal_(0.0, std, generator=gen)
