"""The split-K skinny linear kernel (Triton) against torch's linear."""

from __future__ import annotations

import pytest
import torch
from kernel_factories import DEVICE, needs_kernels

from kernels.linear import linear, linear_ref, skinny_config
from kernels.paged_common import num_sms

pytestmark = needs_kernels
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def _check(gen, m, n, k, dtype, with_bias, **config):
    x = torch.randn(m, k, generator=gen).to(DEVICE, dtype)
    w = (torch.randn(n, k, generator=gen) / k**0.5).to(DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(DEVICE, dtype) if with_bias else None
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)
    linear(x, w, b, out=out, **config)
    ref = linear_ref(x.float(), w.float(), None if b is None else b.float())
    assert not torch.isnan(out).any()
    err = ((out.float() - ref).norm() / ref.norm()).item()
    assert err < TOL[dtype], err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,n,k,split", [
    (1, 64, 256, 1),    # one row, one tile of columns, no split
    (5, 100, 256, 2),   # columns not a multiple of the tile; two K slices
    (17, 64, 320, 3),   # rows cross a 16-row tile; K slices of unequal length
    (40, 48, 200, 2),   # K not a multiple of the K tile
])  # fmt: skip
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_matches_torch(gen, dtype, m, n, k, split, with_bias):
    _check(gen, m, n, k, dtype, with_bias, split=split, block_n=32, block_k=64)


def test_default_config_splits_k_when_few_column_tiles():
    """Few column tiles: K is split to give every SM work; many: no split."""
    dev = torch.device(DEVICE)
    few = skinny_config(1, 64, 4096, torch.bfloat16, dev)
    many = skinny_config(1, 64 * 2 * num_sms(dev), 4096, torch.bfloat16, dev)
    assert few["split"] > 1 and many["split"] == 1


def test_bad_shapes_are_named():
    x = torch.zeros(2, 8, device=DEVICE)
    with pytest.raises(ValueError, match="must be \\[m, k\\] and \\[n, k\\]"):
        linear(x, torch.zeros(4, 9, device=DEVICE))


@pytest.mark.parametrize("m", [1, 16, 100, 256])
@pytest.mark.parametrize("n,k", [(6144, 4096), (4096, 14336), (28672, 4096)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
def test_linear_model_shapes_on_gpu(gen, m, n, k, dtype):
    _check(gen, m, n, k, dtype, with_bias=n == 6144)
