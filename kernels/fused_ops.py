"""Fused elementwise ops of a Llama layer: residual add + RMSNorm, SiLU-and-multiply, RoPE.

Each replaces several torch kernels (casts, reductions, temporaries) with one pass over the
activations; the `_ref` functions are the definitions (they round where HF Llama rounds).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def add_rmsnorm_ref(
    x: torch.Tensor,  # [num_tokens, hidden]
    weight: torch.Tensor,  # [hidden]
    eps: float,
    residual: torch.Tensor | None = None,  # [num_tokens, hidden]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual) * weight, x + residual): the add rounds to x's dtype first."""
    h = x if residual is None else x + residual
    hf = h.float()
    normed = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(h.dtype), h


@triton.jit
def _add_rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, hidden, eps,
                        stride_x, stride_r, stride_o, stride_ro,
                        HAS_RES: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RES:  # add in float32 and round once, as torch's bf16 add does
        r = tl.load(res_ptr + row * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(res_out_ptr + row * stride_ro + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / hidden + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    y = (xf * rstd).to(x.dtype).to(tl.float32) * w.to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def add_rmsnorm(x, weight, eps: float, residual=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton `add_rmsnorm_ref`: one program per token row."""
    if x.dim() != 2 or x.stride(1) != 1 or weight.shape != (x.shape[1],):
        raise ValueError(f"add_rmsnorm: x must be [tokens, hidden] row-major, got {tuple(x.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.stride(1) != 1):
        raise ValueError("add_rmsnorm: residual must match x")
    out = torch.empty_like(x)
    res_out = torch.empty_like(x) if residual is not None else x
    if x.shape[0]:
        res = residual if residual is not None else x
        _add_rmsnorm_kernel[(x.shape[0],)](
            x, res, weight, out, res_out, x.shape[1], eps,
            x.stride(0), res.stride(0), out.stride(0), res_out.stride(0),
            HAS_RES=residual is not None, BLOCK=triton.next_power_of_2(x.shape[1]),
            num_warps=8 if x.shape[1] >= 4096 else 4,
        )  # fmt: skip
    return out, res_out


def silu_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up for gate_up = [gate | up] along the last dim (each rounded as torch does)."""
    gate, up = gate_up.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, inter, stride_gu, stride_o, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    g = tl.load(gu_ptr + row * stride_gu + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * stride_gu + inter + cols, mask=mask, other=0.0)
    s = (g / (1.0 + tl.exp(-g))).to(u.dtype).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (s * u.to(tl.float32)).to(u.dtype), mask=mask)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """Triton `silu_mul_ref`."""
    if gate_up.dim() != 2 or gate_up.stride(1) != 1 or gate_up.shape[1] % 2:
        raise ValueError(
            f"silu_mul: gate_up must be [tokens, 2 * inter], got {tuple(gate_up.shape)}"
        )
    inter = gate_up.shape[1] // 2
    out = torch.empty((gate_up.shape[0], inter), dtype=gate_up.dtype, device=gate_up.device)
    if gate_up.shape[0]:
        block = 1024
        _silu_mul_kernel[(gate_up.shape[0], triton.cdiv(inter, block))](
            gate_up, out, inter, gate_up.stride(0), out.stride(0), BLOCK=block
        )
    return out


def rope_ref(x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate-half RoPE of x [tokens, heads, head_dim] in float32, rounded once to x's dtype."""
    c = cos[positions].unsqueeze(1)  # [tokens, 1, head_dim // 2]
    s = sin[positions].unsqueeze(1)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


@triton.jit
def _rope_kernel(x_ptr, pos_ptr, cos_ptr, sin_ptr, num_heads, stride_t, stride_h, stride_cs,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr):  # fmt: skip
    t = tl.program_id(0)
    heads = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, HALF)[None, :]
    mask = heads < num_heads
    pos = tl.load(pos_ptr + t)
    c = tl.load(cos_ptr + pos * stride_cs + d)
    s = tl.load(sin_ptr + pos * stride_cs + d)
    base = x_ptr + t * stride_t + heads * stride_h + d
    x1 = tl.load(base, mask=mask, other=0.0)
    x2 = tl.load(base + HALF, mask=mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    tl.store(base, (x1f * c - x2f * s).to(x1.dtype), mask=mask)
    tl.store(base + HALF, (x2f * c + x1f * s).to(x1.dtype), mask=mask)


def rope_(x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Triton `rope_ref`, in place on x [tokens, heads, head_dim] (heads may be strided)."""
    half = x.shape[-1] // 2
    if x.stride(-1) != 1 or cos.shape[-1] != half or cos.dtype != torch.float32:
        raise ValueError("rope_: x's last dim must be contiguous; cos/sin float32 [max_pos, dim/2]")
    if x.shape[0]:
        _rope_kernel[(x.shape[0],)](
            x, positions, cos, sin, x.shape[1], x.stride(0), x.stride(1), cos.stride(0),
            HALF=half, BLOCK_H=triton.next_power_of_2(x.shape[1]),
        )  # fmt: skip
    return x
