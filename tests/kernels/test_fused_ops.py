"""Fused layer ops (Triton) against their torch references: add+RMSNorm, SiLU-mul, RoPE."""

from __future__ import annotations

import pytest
import torch
from kernel_factories import DEVICE, gpu, needs_kernels

from kernels.fused_ops import (
    add_rmsnorm,
    add_rmsnorm_ref,
    rope_,
    rope_ref,
    silu_mul,
    silu_mul_ref,
)

pytestmark = needs_kernels
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def _close(out, ref, dtype):
    assert not torch.isnan(out).any()
    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    assert err < TOL[dtype], err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hidden", [64, 96])
@pytest.mark.parametrize("with_residual", [False, True])
def test_add_rmsnorm(gen, dtype, hidden, with_residual):
    x = torch.randn(7, hidden, generator=gen).to(DEVICE, dtype)
    w = (1 + 0.1 * torch.randn(hidden, generator=gen)).to(DEVICE, dtype)
    res = torch.randn(7, hidden, generator=gen).to(DEVICE, dtype) if with_residual else None
    out, h = add_rmsnorm(x, w, 1e-5, res)
    ref_out, ref_h = add_rmsnorm_ref(x, w, 1e-5, res)
    _close(out, ref_out, dtype)
    # The residual stream is an exact add (bf16 on the CPU interpreter rounds toward zero).
    if dtype == torch.float32 or DEVICE == "cuda":
        assert torch.equal(h, ref_h)
    else:
        _close(h, ref_h, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul(gen, dtype):
    gu = torch.randn(5, 2 * 1100, generator=gen).to(DEVICE, dtype)  # crosses a 1024 tile
    _close(silu_mul(gu), silu_mul_ref(gu), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,head_dim", [(6, 32), (3, 64)])
def test_rope_in_place_on_a_strided_view(gen, dtype, heads, head_dim):
    table = torch.randn(100, head_dim // 2, generator=gen)
    cos, sin = table.cos().to(DEVICE), table.sin().to(DEVICE)
    qkv = torch.randn(9, (heads + 2) * head_dim, generator=gen).to(DEVICE, dtype)
    qk = qkv[:, : heads * head_dim].view(9, heads, head_dim)  # row stride > heads * dim
    tail = qkv[:, heads * head_dim :].clone()
    pos = torch.randint(0, 100, (9,), generator=gen).to(DEVICE)
    ref = rope_ref(qk.clone(), pos, cos, sin)
    rope_(qk, pos, cos, sin)
    _close(qk, ref, dtype)
    assert torch.equal(qkv[:, heads * head_dim :], tail)  # nothing outside the view moved


@pytest.mark.parametrize("dtype", [torch.bfloat16])
@pytest.mark.parametrize("tokens", [1, 4096])
def test_fused_ops_llama8b_shapes_gpu(gen, dtype, tokens):
    x = torch.randn(tokens, 4096, generator=gen).to(DEVICE, dtype)
    w = torch.randn(4096, generator=gen).to(DEVICE, dtype)
    out, h = add_rmsnorm(x, w, 1e-5, x.clone())
    ref_out, ref_h = add_rmsnorm_ref(x, w, 1e-5, x.clone())
    _close(out, ref_out, dtype)
    gu = torch.randn(tokens, 2 * 14336, generator=gen).to(DEVICE, dtype)
    _close(silu_mul(gu), silu_mul_ref(gu), dtype)


for _mark in gpu:
    _mark(test_fused_ops_llama8b_shapes_gpu)
