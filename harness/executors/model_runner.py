"""Runs the real model on one device: owns the paged KV cache tensors and the host swap pool."""

from __future__ import annotations

import numpy as np
import torch

from harness.executors.base import Batch
from harness.executors.cuda_graphs import DecodeGraphs
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
        cuda_graphs: bool = False,
        max_num_seqs: int = 256,
        max_model_len: int | None = None,
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
        self.graphs = None
        if cuda_graphs and self.device.type == "cuda":
            self.graphs = DecodeGraphs(
                model, self.kv_cache, self.backend, max_num_seqs,
                max_model_len or model.args.max_position_embeddings, block_size,
            )  # fmt: skip
            self.graphs.capture()
        self._events = self.device.type == "cuda"  # time each step on the device

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device, non_blocking=True)

    def execute(self, batch: Batch) -> np.ndarray:
        """One forward pass; the sampled ids once they are on the host."""
        return self.launch(batch).result()

    @torch.inference_mode()
    def launch(self, batch: Batch) -> StepHandle:
        """Queue one forward pass and its sampling; the sampled ids are copied to pinned host
        memory asynchronously. On the CPU everything is done on return."""
        start = end = None
        if self._events:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        if self._use_graph(batch):
            logits = self.graphs.run(batch)[self._tensor(batch.logits_indices)]
        else:
            logits = self._eager_logits(batch)
        if logits is None:
            return StepHandle(torch.empty(0, dtype=torch.long), None, None)
        sampled = sample(logits, batch.temperature, batch.top_p, self.generator)
        if self.device.type != "cuda":
            return StepHandle(sampled, None, None)
        host = torch.empty(sampled.shape, dtype=sampled.dtype, pin_memory=True)
        host.copy_(sampled, non_blocking=True)
        end.record()
        return StepHandle(host, start, end)

    def _use_graph(self, batch: Batch) -> bool:
        return (
            self.graphs is not None
            and batch.max_query_len == 1
            and batch.num_padding_tokens == 0
            and self.graphs.bucket(batch.num_seqs) is not None
            and batch.max_seq_len <= self.graphs.max_model_len
        )

    def _eager_logits(self, batch: Batch) -> torch.Tensor | None:
        meta = AttentionMetadata(
            slot_mapping=self._tensor(batch.slot_mapping),
            query_start_loc=self._tensor(batch.query_start_loc),
            seq_lens=self._tensor(batch.seq_lens),
            block_tables=self._tensor(batch.block_tables),
            max_query_len=batch.max_query_len,
            max_seq_len=batch.max_seq_len,
            is_decode_only=batch.max_query_len == 1,
            num_decode_seqs=batch.num_decode_seqs,
            max_decode_seq_len=batch.max_decode_seq_len,
        )
        hidden = self.model(
            self._tensor(batch.input_ids), self._tensor(batch.positions), self.kv_cache, meta,
            self.backend,
        )  # fmt: skip  # [num_tokens, hidden_size]
        if len(batch.logits_indices) == 0:
            return None
        return self.model.compute_logits(hidden[self._tensor(batch.logits_indices)])

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        self._swap(pairs, self.kv_cache, self.cpu_cache)

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        self._swap(pairs, self.cpu_cache, self.kv_cache)

    def _swap(self, pairs, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy whole blocks of every layer; on cuda a batched copy on its own stream, finished
        before returning (the freed or filled blocks are used by the very next step)."""
        src_ids = torch.tensor([p[0] for p in pairs])
        dst_ids = torch.tensor([p[1] for p in pairs])
        if self.device.type != "cuda":
            swap_blocks_ref(src, dst, src_ids, dst_ids)
            return
        from kernels.kv_swap import swap_blocks

        stream = self._swap_stream = getattr(self, "_swap_stream", None) or torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())  # the last step's cache writes are done
        swap_blocks(src, dst, src_ids, dst_ids, stream=stream)
        stream.synchronize()


class StepHandle:
    """A launched step. `result()` waits for its sampled ids (the step's one host
    synchronisation) and sets `device_time_s`, the forward + sampling time on the device."""

    def __init__(self, sampled: torch.Tensor, start, end) -> None:
        self._sampled, self._start, self._end = sampled, start, end
        self.device_time_s: float | None = None

    def result(self) -> np.ndarray:
        if self._end is not None:
            self._end.synchronize()
            self.device_time_s = self._start.elapsed_time(self._end) / 1e3
            self._end = None
        return self._sampled.numpy()


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
