"""Runs the real model on one device: owns the paged KV cache tensors and the host swap pool."""

from __future__ import annotations

import numpy as np
import torch

from harness.executors.base import Batch
from harness.models.attention import AttentionMetadata, TorchAttention
from harness.models.llama import LlamaModel
from kernels.kv_swap import swap_blocks_ref


def kv_cache_shape(model: LlamaModel, num_blocks: int, block_size: int) -> tuple[int, ...]:
    a = model.args
    return (a.num_layers, 2, num_blocks, block_size, a.num_kv_heads, a.head_dim)


def kv_block_bytes(model: LlamaModel, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one block takes over all layers, K and V."""
    a = model.args
    return a.num_layers * 2 * block_size * a.num_kv_heads * a.head_dim * dtype.itemsize


class ModelRunner:
    """The `cpu`/`cuda` executor: one forward pass per step over the paged cache."""

    def __init__(
        self,
        model: LlamaModel,
        num_gpu_blocks: int,
        num_cpu_blocks: int,
        block_size: int,
        backend=None,
        seed: int = 0,
    ) -> None:
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.backend = backend or TorchAttention()
        # [num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]
        self.kv_cache = torch.zeros(
            kv_cache_shape(model, num_gpu_blocks, block_size), dtype=self.dtype, device=self.device
        )
        pin = self.device.type == "cuda"
        self.cpu_cache = torch.empty(
            kv_cache_shape(model, num_cpu_blocks, block_size), dtype=self.dtype, pin_memory=pin
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device, non_blocking=True)

    @torch.inference_mode()
    def execute(self, batch: Batch) -> np.ndarray:
        meta = AttentionMetadata(
            slot_mapping=self._tensor(batch.slot_mapping),
            query_start_loc=self._tensor(batch.query_start_loc),
            seq_lens=self._tensor(batch.seq_lens),
            block_tables=self._tensor(batch.block_tables),
            max_query_len=batch.max_query_len,
            max_seq_len=batch.max_seq_len,
            is_decode_only=batch.max_query_len == 1,
        )
        hidden = self.model(
            self._tensor(batch.input_ids), self._tensor(batch.positions), self.kv_cache, meta,
            self.backend,
        )  # fmt: skip  # [num_tokens, hidden_size]
        if len(batch.logits_indices) == 0:
            return np.empty(0, dtype=np.int64)
        logits = self.model.compute_logits(hidden[self._tensor(batch.logits_indices)])
        return sample(logits, batch.temperature, batch.top_p, self.generator).cpu().numpy()

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        src, dst = zip(*pairs, strict=True)
        swap_blocks_ref(self.kv_cache, self.cpu_cache, torch.tensor(src), torch.tensor(dst))

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        src, dst = zip(*pairs, strict=True)
        swap_blocks_ref(self.cpu_cache, self.kv_cache, torch.tensor(src), torch.tensor(dst))


def sample(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """Greedy when temperature is 0, else temperature + nucleus (top-p) sampling, on device."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)  # [num_rows, vocab]
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(dim=-1) - sorted_p > top_p  # keep the smallest set >= top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
