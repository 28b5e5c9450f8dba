"""Attention metadata (passed down explicitly) and the backends that read/write the paged cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.kv_store import kv_store_ref
from kernels.paged_attention import paged_extend_attention_ref


@dataclass
class AttentionMetadata:
    """Where every token of a flat varlen batch lives in the paged cache."""

    slot_mapping: torch.Tensor  # [num_tokens] int64, -1 = padding (not stored)
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32, cumulative query lengths
    seq_lens: torch.Tensor  # [num_seqs] int32, context incl. this step's tokens
    block_tables: torch.Tensor  # [num_seqs, max_num_blocks] int32
    max_query_len: int
    max_seq_len: int
    is_decode_only: bool  # every sequence has exactly one query token
    num_decode_seqs: int = 0  # the first this many sequences have one query token each
    max_decode_seq_len: int = 0


class TorchAttention:
    """Reference backend: the plain-torch kernels (CPU, and the oracle on any device)."""

    def store_kv(self, key, value, k_cache, v_cache, meta: AttentionMetadata) -> None:
        kv_store_ref(key, value, k_cache, v_cache, meta.slot_mapping)

    def warmup(self, *args, **kwargs) -> int:
        """Nothing to compile."""
        return 0

    def attend(self, query, k_cache, v_cache, meta: AttentionMetadata, scale: float, out=None):
        """[num_tokens, num_heads, head_dim]; written into `out` when given."""
        o = paged_extend_attention_ref(
            query, k_cache, v_cache, meta.block_tables, meta.query_start_loc.cpu(),
            meta.seq_lens.cpu(), scale,
        )  # fmt: skip
        return o if out is None else out.copy_(o)

    def plan(self, query, k_cache, v_cache, meta: AttentionMetadata, scale: float, out):
        """Every layer's attention over one batch (see TritonAttention.plan)."""
        return lambda k, v: self.attend(query, k, v, meta, scale, out=out)


class TritonAttention:
    """GPU backend: Triton kernels from `kernels/` (decode rows and extend rows)."""

    def __init__(self) -> None:
        from kernels.kv_store import kv_store
        from kernels.paged_decode import plan_decode_attention
        from kernels.paged_extend import plan_extend_attention

        self._kv_store = kv_store
        self._plans = (plan_decode_attention, plan_extend_attention)

    def store_kv(self, key, value, k_cache, v_cache, meta: AttentionMetadata) -> None:
        self._kv_store(key, value, k_cache, v_cache, meta.slot_mapping)

    def warmup(self, num_heads, num_kv_heads, head_dim, page_size, dtype, device, max_query_len):
        """Compile every kernel variant a run can launch before it starts (see kernels)."""
        from kernels.paged_attention import warmup

        return warmup(num_heads, num_kv_heads, head_dim, page_size, dtype, device, max_query_len)

    def attend(self, query, k_cache, v_cache, meta: AttentionMetadata, scale: float, out=None):
        """[num_tokens, num_heads, head_dim]; written into `out` when given (a plan used once)."""
        return self.plan(query, k_cache, v_cache, meta, scale, out)(k_cache, v_cache)

    def plan(self, query, k_cache, v_cache, meta: AttentionMetadata, scale: float, out=None):
        """Every layer's attention over one batch, planned once (kernels/launch.py): call the
        plan with a layer's K and V caches (of `k_cache`'s shape) to write that layer's
        attention into `out`. The piecewise graphs' per-layer host work is only this."""
        decode, extend = self._plans
        if meta.is_decode_only:
            return decode(query, k_cache, v_cache, meta.block_tables, meta.seq_lens, scale,
                          max_seq_len=meta.max_seq_len, out=out)  # fmt: skip
        return extend(
            query, k_cache, v_cache, meta.block_tables, meta.query_start_loc, meta.seq_lens,
            max_query_len=meta.max_query_len, scale=scale, out=out,
            num_decode_seqs=meta.num_decode_seqs, max_decode_seq_len=meta.max_decode_seq_len or None,
        )  # fmt: skip
