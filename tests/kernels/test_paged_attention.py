"""Paged decode and extend attention (Triton) against their torch references."""

from __future__ import annotations

import pytest
import torch
from kernel_factories import assert_close_rows, gpu, make_paged_batch, needs_kernels

from kernels.paged_attention import (
    paged_decode_attention,
    paged_decode_attention_ref,
    paged_extend_attention,
    paged_extend_attention_ref,
)

NUM_KV_HEADS = 2
# (head_dim, GQA group, block_size, dtype): every combination, short lengths on the CPU
# interpreter and up to 4k tokens on the GPU (plus fp16 there).
CASES = [
    (d, g, b, t)
    for d in (64, 128)
    for g in (1, 4, 8)
    for b in (16, 32)
    for t in (torch.float32, torch.bfloat16)
]
GPU_CASES = CASES + [(128, 4, 16, torch.float16)]


def _randint(gen, low, high) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _decode_lens(gen, block_size: int, max_len: int, num_seqs: int) -> list[int]:
    """Ragged lengths incl. 1, an exact multiple of the block size, and the maximum."""
    lens = [1, block_size * _randint(gen, 1, max_len // block_size), max_len]
    return lens + [_randint(gen, 1, max_len) for _ in range(num_seqs - len(lens))]


def _extend_lens(gen, block_size: int, max_prefix: int, max_chunk: int):
    """(q_lens, seq_lens): pure prefill, prefix on a block edge, prefix off it, a decode row."""
    edge = block_size * _randint(gen, 1, max_prefix // block_size)
    off = _randint(gen, 1, max_prefix - 1) | 1  # odd, so never on a block edge
    off += off % block_size == 0
    prefixes = [0, edge, off, _randint(gen, 0, max_prefix), _randint(gen, 1, max_prefix)]
    chunks = [_randint(gen, 1, max_chunk) for _ in range(4)] + [1]
    chunks[1] = block_size * max(1, max_chunk // block_size)  # chunk ending on a block edge
    return chunks, [p + c for p, c in zip(prefixes, chunks, strict=True)]


def _run_decode(gen, head_dim, group, block_size, dtype, lens, **overrides):
    batch = make_paged_batch(
        [1] * len(lens), lens, num_heads=NUM_KV_HEADS * group, num_kv_heads=NUM_KV_HEADS,
        head_dim=head_dim, block_size=block_size, dtype=dtype, gen=gen,
    )  # fmt: skip
    out = torch.full_like(batch.query, float("nan"))
    args = (batch.query, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, 0.125)
    result = paged_decode_attention(*args, max_seq_len=batch.max_seq_len, out=out, **overrides)
    assert result is out
    ref = paged_decode_attention_ref(*[a.cpu() if torch.is_tensor(a) else a for a in args])
    assert_close_rows(out.cpu(), ref, dtype)


def _run_extend(gen, head_dim, group, block_size, dtype, q_lens, seq_lens, slack=0, **overrides):
    batch = make_paged_batch(
        q_lens, seq_lens, num_heads=NUM_KV_HEADS * group, num_kv_heads=NUM_KV_HEADS,
        head_dim=head_dim, block_size=block_size, dtype=dtype, gen=gen,
    )  # fmt: skip
    out = torch.full_like(batch.query, float("nan"))
    args = (batch.query, batch.k_cache, batch.v_cache, batch.block_tables,
            batch.query_start_loc, batch.seq_lens)  # fmt: skip
    result = paged_extend_attention(
        *args, max_query_len=batch.max_query_len + slack, scale=0.125, out=out, **overrides
    )
    assert result is out
    ref = paged_extend_attention_ref(*[a.cpu() for a in args], 0.125)
    assert_close_rows(out.cpu(), ref, dtype)


@needs_kernels
@pytest.mark.parametrize("head_dim,group,block_size,dtype", CASES)
def test_decode_matches_ref(gen, head_dim, group, block_size, dtype):
    lens = _decode_lens(gen, block_size, max_len=300, num_seqs=4)
    _run_decode(gen, head_dim, group, block_size, dtype, lens)


@needs_kernels
@pytest.mark.parametrize("num_splits", [1, 3, 8])
def test_decode_split_counts_agree(gen, num_splits):
    lens = _decode_lens(gen, 16, max_len=200, num_seqs=3)
    _run_decode(gen, 64, 4, 16, torch.float32, lens, num_splits=num_splits, block_n=16)


@needs_kernels
def test_decode_empty_sequence_gives_zeros(gen):
    batch = make_paged_batch([1, 1], [0, 5], num_heads=4, num_kv_heads=2, head_dim=64,
                             block_size=16, dtype=torch.float32, gen=gen)  # fmt: skip
    out = paged_decode_attention(batch.query, batch.k_cache, batch.v_cache, batch.block_tables,
                                 batch.seq_lens, 0.125, max_seq_len=64, num_splits=2)  # fmt: skip
    assert torch.equal(out[0].cpu(), torch.zeros_like(out[0].cpu()))


@needs_kernels
@pytest.mark.parametrize("head_dim,group,block_size,dtype", CASES)
def test_extend_matches_ref(gen, head_dim, group, block_size, dtype):
    q_lens, seq_lens = _extend_lens(gen, block_size, max_prefix=100, max_chunk=48)
    _run_extend(gen, head_dim, group, block_size, dtype, q_lens, seq_lens)


@needs_kernels
@pytest.mark.parametrize("block_q,slack", [(None, 100), (16, 0), (2, 0)])
def test_extend_tile_shapes_agree(gen, block_q, slack):
    """A loose max_query_len bound and other query tiles give the same result."""
    q_lens, seq_lens = _extend_lens(gen, 16, max_prefix=60, max_chunk=40)
    _run_extend(gen, 64, 8, 16, torch.float32, q_lens, seq_lens, slack=slack, block_q=block_q)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extend_routes_leading_decode_rows(gen, dtype):
    """num_decode_seqs: the leading one-token sequences go through the decode kernel."""
    decode_lens = _decode_lens(gen, 16, max_len=200, num_seqs=3)
    q_lens, seq_lens = _extend_lens(gen, 16, max_prefix=80, max_chunk=40)
    q_lens, seq_lens = [1] * 3 + q_lens, decode_lens + seq_lens
    _run_extend(gen, 64, 4, 16, dtype, q_lens, seq_lens, num_decode_seqs=3)


@needs_kernels
def test_extend_decode_rows_only(gen):
    lens = _decode_lens(gen, 32, max_len=150, num_seqs=4)
    _run_extend(gen, 128, 4, 32, torch.bfloat16, [1] * len(lens), lens)


def test_wrapper_rejects_bad_inputs(gen):
    batch = make_paged_batch([1, 1], [5, 9], num_heads=4, num_kv_heads=2, head_dim=64,
                             block_size=16, dtype=torch.float32, gen=gen, device="cpu")  # fmt: skip
    ok = dict(query=batch.query, k_cache=batch.k_cache, v_cache=batch.v_cache,
              block_tables=batch.block_tables, seq_lens=batch.seq_lens, scale=0.1,
              max_seq_len=16)  # fmt: skip
    bad = [
        (dict(query=batch.query[:, :3]), "multiple of num_kv_heads"),
        (dict(query=batch.query.bfloat16()), "must equal query dtype"),
        (dict(query=batch.query.transpose(1, 2).contiguous().transpose(1, 2)), "unit stride"),
        (dict(block_tables=batch.block_tables[:1]), "block_tables must be"),
        (dict(seq_lens=batch.seq_lens.float()), "int32 or int64"),
        (dict(max_seq_len=0), "max_seq_len"),
        (dict(out=torch.empty(2, 4, 32)), "out must be"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            paged_decode_attention(**{**ok, **change})
    with pytest.raises(ValueError, match="query_start_loc"):
        paged_extend_attention(batch.query, batch.k_cache, batch.v_cache, batch.block_tables,
                               batch.seq_lens, batch.seq_lens, 1, 0.1)  # fmt: skip


# ----------------------------------------------------------------------------- full set, GPU


@pytest.mark.parametrize("head_dim,group,block_size,dtype", GPU_CASES)
@pytest.mark.parametrize("max_len", [64, 4096])
def test_decode_matches_ref_gpu(gen, head_dim, group, block_size, dtype, max_len):
    lens = _decode_lens(gen, block_size, max_len=max_len, num_seqs=9)
    _run_decode(gen, head_dim, group, block_size, dtype, lens)


@pytest.mark.parametrize("head_dim,group,block_size,dtype", GPU_CASES)
@pytest.mark.parametrize("max_prefix,max_chunk", [(100, 48), (3072, 1024)])
def test_extend_matches_ref_gpu(gen, head_dim, group, block_size, dtype, max_prefix, max_chunk):
    q_lens, seq_lens = _extend_lens(gen, block_size, max_prefix=max_prefix, max_chunk=max_chunk)
    _run_extend(gen, head_dim, group, block_size, dtype, q_lens, seq_lens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extend_routes_leading_decode_rows_gpu(gen, dtype):
    decode_lens = _decode_lens(gen, 16, max_len=4096, num_seqs=40)
    q_lens, seq_lens = _extend_lens(gen, 16, max_prefix=3072, max_chunk=1024)
    q_lens, seq_lens = [1] * 40 + q_lens, decode_lens + seq_lens
    _run_extend(gen, 128, 4, 16, dtype, q_lens, seq_lens, num_decode_seqs=40)


@pytest.mark.parametrize("num_splits", [1, 2, 5, 16, 64])
def test_decode_split_counts_gpu(gen, num_splits):
    lens = _decode_lens(gen, 16, max_len=4096, num_seqs=5)
    _run_decode(gen, 128, 4, 16, torch.bfloat16, lens, num_splits=num_splits)


def test_decode_cuda_graph_replay(gen):
    """Captured once, replayed on new lengths and queries written in place: no host sync."""
    batch = make_paged_batch([1] * 4, [4000, 3000, 17, 1], num_heads=32, num_kv_heads=8,
                             head_dim=128, block_size=16, dtype=torch.bfloat16, gen=gen)  # fmt: skip
    args = (batch.query, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, 0.1)
    out = torch.empty_like(batch.query)
    paged_decode_attention(*args, max_seq_len=4096, out=out)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        paged_decode_attention(*args, max_seq_len=4096, out=out)
    batch.seq_lens.copy_(torch.tensor([5, 2999, 16, 1]))  # within each sequence's blocks
    batch.query.normal_()
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    ref = paged_decode_attention_ref(*[a.cpu() if torch.is_tensor(a) else a for a in args])
    assert_close_rows(out.cpu(), ref, torch.bfloat16)


for _test in (test_decode_matches_ref_gpu, test_extend_matches_ref_gpu,
              test_extend_routes_leading_decode_rows_gpu, test_decode_split_counts_gpu,
              test_decode_cuda_graph_replay):  # fmt: skip
    for _mark in gpu:
        _mark(_test)
