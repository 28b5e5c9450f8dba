"""Factories and markers shared by the kernel tests (imported after conftest set the env)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

# Kernels run on the GPU when there is one (interpreter off), else on the CPU interpreter.
DEVICE = "cuda" if HAS_CUDA and not INTERPRET else "cpu"
needs_kernels = pytest.mark.skipif(
    not (HAS_TRITON and (DEVICE == "cuda" or INTERPRET)),
    reason="needs CUDA or TRITON_INTERPRET=1 (and triton installed)",
)
gpu = [pytest.mark.gpu, pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")]


@dataclass
class PagedBatch:
    """A varlen batch over a paged cache. Unused cache slots are NaN so stray reads show."""

    query: torch.Tensor  # [num_tokens, num_heads, head_dim]
    k_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # [num_seqs, max_num_blocks] int32
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32
    seq_lens: torch.Tensor  # [num_seqs] int32
    max_query_len: int
    max_seq_len: int


def make_paged_batch(
    q_lens: list[int],
    seq_lens: list[int],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    gen: torch.Generator,
    device: str = DEVICE,
) -> PagedBatch:
    """Random queries and caches; each sequence's blocks are scattered over the cache."""
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 2  # the last block stays NaN: block-table padding
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    block_tables = torch.full((len(seq_lens), max(max(blocks_per_seq), 1)), num_blocks - 1)
    perm = torch.randperm(num_blocks - 1, generator=gen)
    used = 0
    for i, (seq_len, n) in enumerate(zip(seq_lens, blocks_per_seq, strict=True)):
        ids = perm[used : used + n]
        used += n
        block_tables[i, :n] = ids
        slots = (ids[:, None] * block_size + torch.arange(block_size)).reshape(-1)[:seq_len]
        for cache in (k_cache, v_cache):
            flat = cache.view(-1, num_kv_heads, head_dim)
            flat[slots] = torch.randn(seq_len, num_kv_heads, head_dim, generator=gen).to(dtype)
    query_start_loc = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()])
    query = torch.randn(sum(q_lens), num_heads, head_dim, generator=gen).to(dtype)
    to = dict(device=device)
    return PagedBatch(
        query=query.to(**to),
        k_cache=k_cache.to(**to),
        v_cache=v_cache.to(**to),
        block_tables=block_tables.to(device=device, dtype=torch.int32),
        query_start_loc=query_start_loc.to(device=device, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        max_query_len=max(q_lens),
        max_seq_len=max(seq_lens),
    )


def assert_close_rows(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, seed_msg=""):
    """Every element written (no NaN left from the poison) and each token row within tolerance.

    Relative L2 error per token (all heads): fp32 < 2e-5; bf16/fp16 < 2e-2.
    """
    assert not torch.isnan(out).any(), f"unwritten or NaN outputs {seed_msg}"
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    diff = (out.double() - ref.double()).flatten(1).norm(dim=1)
    scale = ref.double().flatten(1).norm(dim=1).clamp_min(1e-6)
    worst = (diff / scale).max().item()
    assert worst < tol, f"worst per-token relative error {worst:.3e} >= {tol} {seed_msg}"
