"""Runs the real model on one device: owns the paged KV cache tensors and the host swap pool."""

from __future__ import annotations

import time

import numpy as np
import torch

from harness.executors.base import Batch, split_batch
from harness.executors.cuda_graphs import DecodeGraphs, PiecewiseGraphs, piece_sizes
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


@torch.inference_mode()
def peak_step_bytes(
    model: LlamaModel,
    backend,
    num_tokens: int,
    num_seqs: int,
    block_size: int,
    max_model_len: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> int:
    """Device memory the largest step allocates beyond what is held now, measured (vLLM's
    profile run): `num_tokens` prefill tokens in sequences of at most `max_model_len` through
    every layer, then the LM head and sampling on `num_seqs` rows. It stores nothing (slot -1,
    a one-block cache). Call it on a CUDA model before the KV cache is allocated."""
    p = next(model.parameters())
    device, dtype = p.device, p.dtype
    q = min(-(-num_tokens // max(1, min(num_seqs, num_tokens))), max_model_len)
    n = -(-num_tokens // q)  # sequences of q tokens, the last one shorter
    lens = np.full(n, q, np.int32)
    lens[-1] = num_tokens - q * (n - 1)
    starts = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    positions = np.concatenate([np.arange(k) for k in lens])
    rows = min(num_seqs, num_tokens)
    cache = torch.zeros(kv_cache_shape(model, 1, block_size), dtype=dtype, device=device)

    def dev(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    meta = AttentionMetadata(
        slot_mapping=dev(np.full(num_tokens, -1, np.int64)), query_start_loc=dev(starts),
        seq_lens=dev(lens), block_tables=dev(np.zeros((n, -(-q // block_size)), np.int32)),
        max_query_len=q, max_seq_len=q, is_decode_only=q == 1,
    )  # fmt: skip
    ids, pos = dev(np.zeros(num_tokens, np.int64)), dev(positions.astype(np.int64))
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    hidden = model(ids, pos, cache, meta, backend)
    logits = model.compute_logits(hidden[dev(np.arange(rows) * num_tokens // rows)])
    gen = torch.Generator(device=device).manual_seed(0)
    sample(logits, temperature, top_p, gen)
    del hidden, logits
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


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
        max_forward_tokens: int | None = None,
        piecewise_max_tokens: int = 0,
    ) -> None:
        self.model = model
        # A batch with more tokens than this (static batching's padded pass, a whole prompt
        # longer than the step budget) runs as several forward passes within one step, so its
        # activations never exceed what the KV cache sizing measured (None: no limit).
        self.max_forward_tokens = max_forward_tokens
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
        self.staging = Staging(self.device)
        self._events = self.device.type == "cuda"  # time each step on the device
        # Only a cuda launch returns before the step is computed, so only there can the engine
        # prepare step n+1 while step n runs (on the cpu a launch computes synchronously).
        self.overlaps_host = self.device.type == "cuda"
        self.graphs = self.pieces = None
        self._warmup(block_size, max_model_len or model.args.max_position_embeddings)
        if cuda_graphs and self.device.type == "cuda":
            self.graphs = DecodeGraphs(
                model, self.kv_cache, self.backend, max_num_seqs,
                max_model_len or model.args.max_position_embeddings, block_size,
            )  # fmt: skip
            self.graphs.capture()
        # Prefill and mixed steps of up to this many tokens (and no more than a forward pass
        # takes) replay piecewise graphs, the attention eager between them
        top = min(piecewise_max_tokens, max_forward_tokens or piecewise_max_tokens)
        if cuda_graphs and self.device.type == "cuda" and top > 0:
            self.pieces = PiecewiseGraphs(model, self.kv_cache, self.backend, piece_sizes(top))
            self.pieces.capture()

    def _warmup(self, block_size: int, max_model_len: int) -> None:
        """Compile every Triton kernel variant now (on cuda), not during a measured step: the
        attention kernels' variants on tiny inputs, then a 1-token decode and a 2-token prefill
        through the whole model (layer ops, KV store, sampling) that store nothing (slot -1)."""
        a = self.model.args
        if self.device.type == "cuda":
            self.backend.warmup(
                a.num_heads, a.num_kv_heads, a.head_dim, block_size, self.dtype, self.device,
                max_model_len,
            )  # fmt: skip
        for n in (1, 2):
            self._launch(Batch(
                input_ids=np.zeros(n, np.int64), positions=np.arange(n, dtype=np.int64),
                slot_mapping=np.full(n, -1, np.int64), query_start_loc=np.array([0, n], np.int32),
                seq_lens=np.array([n], np.int32), block_tables=np.zeros((1, 1), np.int32),
                logits_indices=np.array([n - 1]), max_query_len=n, max_seq_len=n,
                num_decode_seqs=int(n == 1), max_decode_seq_len=int(n == 1),
            )).result()  # fmt: skip

    def execute(self, batch: Batch) -> np.ndarray:
        """One forward pass; the sampled ids once they are on the host."""
        return self.launch(batch).result()

    def launch(self, batch: Batch, feed_from: StepHandle | None = None) -> StepHandle:
        """Queue one engine step's forward pass and sampling (see `_launch`). Warm-up passes
        call `_launch` directly, so whatever wraps `launch` (fault injection, instrumentation)
        sees engine steps only."""
        return self._launch(batch, feed_from)

    @torch.inference_mode()
    def _launch(self, batch: Batch, feed_from: StepHandle | None = None) -> StepHandle:
        """Queue one forward pass and its sampling; the sampled ids are copied to pinned host
        memory asynchronously. On the CPU everything is done on return.

        `feed_from`: the previous step's handle, whose sampled ids (still on the device) are the
        input ids of this batch's rows with `batch.feed >= 0`, so this step can be queued before
        the previous one's tokens reach the host."""
        start = end = None
        if self._events:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        pieces = [
            self._forward_and_sample(piece, feed_from)
            for piece in split_batch(batch, self.max_forward_tokens)
        ]
        pieces = [p for p in pieces if p is not None]
        if not pieces:
            sampled = torch.empty(0, dtype=torch.long, device=self.device)
        else:
            sampled = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if self.device.type != "cuda":
            handle = StepHandle(sampled, None, None, sampled)
            handle.device_time_s = time.perf_counter() - t0  # the cpu's compute time
            return handle
        host = torch.empty(sampled.shape, dtype=sampled.dtype, pin_memory=True)
        host.copy_(sampled, non_blocking=True)
        end.record()
        return StepHandle(host, start, end, sampled)

    def _forward_and_sample(
        self, batch: Batch, feed_from: StepHandle | None
    ) -> torch.Tensor | None:
        """One forward pass and the sampling of its `logits_indices` rows (None: none)."""
        feed = batch.feed is not None and feed_from is not None and batch.feed.max() >= 0
        t = self.staging.stage(batch, feed)  # every host array in one copy
        if feed:
            src = feed_from.sampled_device[t["feed"].clamp(min=0)]
            t["input_ids"] = torch.where(t["feed"] >= 0, src, t["input_ids"])
        if self._use_graph(batch):
            logits = self.graphs.run(batch, t)  # decode-only: every row is sampled, in order
        elif self._use_pieces(batch):
            hidden = self.pieces.run(batch, t, self._meta(batch, t))
            logits = self._logits(batch, t, hidden)
        else:
            logits = self._eager_logits(batch, t)
        if logits is None:
            return None
        return sample(logits, batch.temperature, batch.top_p, self.generator)

    def _use_graph(self, batch: Batch) -> bool:
        return (
            self.graphs is not None
            and batch.max_query_len == 1
            and batch.num_padding_tokens == 0
            and len(batch.logits_indices) == batch.num_seqs  # every row sampled, in order
            and self.graphs.bucket(batch.num_seqs) is not None
            and batch.max_seq_len <= self.graphs.max_model_len
        )

    def _use_pieces(self, batch: Batch) -> bool:
        """A step that is not a decode graph's, of at most the largest piecewise bucket."""
        return self.pieces is not None and 0 < batch.num_tokens <= self.pieces.sizes[-1]

    @staticmethod
    def _meta(batch: Batch, t: dict[str, torch.Tensor]) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=t["slot_mapping"],
            query_start_loc=t["query_start_loc"],
            seq_lens=t["seq_lens"],
            block_tables=t["block_tables"],
            max_query_len=batch.max_query_len,
            max_seq_len=batch.max_seq_len,
            is_decode_only=batch.max_query_len == 1,
            num_decode_seqs=batch.num_decode_seqs,
            max_decode_seq_len=batch.max_decode_seq_len,
        )

    def _eager_logits(self, batch: Batch, t: dict[str, torch.Tensor]) -> torch.Tensor | None:
        hidden = self.model(
            t["input_ids"], t["positions"], self.kv_cache, self._meta(batch, t), self.backend
        )  # [num_tokens, hidden_size]
        return self._logits(batch, t, hidden)

    def _logits(self, batch: Batch, t: dict[str, torch.Tensor], hidden: torch.Tensor):
        """The LM head over the sampled rows of `hidden` (None: no row is sampled)."""
        if len(batch.logits_indices) == 0:
            return None
        return self.model.compute_logits(hidden[t["logits_indices"]])

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


STAGED = ("input_ids", "positions", "slot_mapping", "query_start_loc", "seq_lens",
          "block_tables", "logits_indices")  # fmt: skip


class Staging:
    """Moves a batch's host arrays to the device in one copy: packed into a pinned buffer, then
    one asynchronous host-to-device copy, then views. Two pinned buffers alternate, so packing
    step n+1 never overwrites what step n's copy may still be reading. On the CPU: plain views."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._host: list[torch.Tensor | None] = [None, None]
        self._done: list[torch.cuda.Event | None] = [None, None]
        self._dev: torch.Tensor | None = None
        self._turn = 0

    def stage(self, batch: Batch, feed: bool = False) -> dict[str, torch.Tensor]:
        names = STAGED + ("feed",) if feed else STAGED
        arrays = {k: np.ascontiguousarray(getattr(batch, k)) for k in names}
        if not self.cuda:
            return {k: torch.from_numpy(a.copy()) for k, a in arrays.items()}
        offsets, n = {}, 0
        for k, a in arrays.items():
            offsets[k] = n
            n += -(-a.nbytes // 64) * 64  # aligned views: kernels specialise on 16-byte alignment
        i = self._turn
        self._turn ^= 1
        if self._done[i] is not None:
            self._done[i].synchronize()  # that buffer's copy (two steps ago) has been read
        if self._host[i] is None or self._host[i].numel() < n:
            self._host[i] = torch.empty(max(n, 1 << 20), dtype=torch.uint8, pin_memory=True)
        if self._dev is None or self._dev.numel() < n:
            self._dev = torch.empty(max(n, 1 << 20), dtype=torch.uint8, device=self.device)
        host = self._host[i].numpy()
        for k, a in arrays.items():
            host[offsets[k] : offsets[k] + a.nbytes] = a.view(np.uint8).reshape(-1)
        self._dev[:n].copy_(self._host[i][:n], non_blocking=True)
        self._done[i] = torch.cuda.Event()
        self._done[i].record()
        out = {}
        for k, a in arrays.items():
            dtype = torch.from_numpy(a[:0]).dtype
            out[k] = self._dev[offsets[k] : offsets[k] + a.nbytes].view(dtype).view(a.shape)
        return out


class StepHandle:
    """A launched step. `result()` waits for its sampled ids (the step's one host
    synchronisation) and sets `device_time_s`, the forward + sampling time on the device.
    `sampled_device` holds the same ids on the device, for the next step's input."""

    def __init__(self, sampled: torch.Tensor, start, end, sampled_device=None) -> None:
        self._sampled, self._start, self._end = sampled, start, end
        self.sampled_device = sampled_device
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
    """Greedy when temperature is 0, else temperature + nucleus (top-p) sampling, on device.
    Greedy takes the argmax of the logits as they are (bf16 values convert to float32 exactly,
    so the choice is the same); sampling works in float32."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [num_rows, vocab]
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(dim=-1) - sorted_p > top_p  # keep the smallest set >= top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
