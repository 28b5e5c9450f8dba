"""CUDA graphs for decode-only steps: one graph per batch-size bucket, replayed on static buffers.

A decode step of n sequences runs the graph of the smallest bucket >= n; the extra rows are
padding (slot -1: nothing stored; seq_len 0: attention returns zeros). A graph ends at the final
hidden states: the LM head then runs eagerly on the n real rows only, and no bucket keeps a
[bucket, vocab] logits buffer alive (over all buckets of 1024 sequences those would hold ~17 GB).
Mixed prefill/decode steps run eagerly.
"""

from __future__ import annotations

import torch

from harness.models.attention import AttentionMetadata


def capture_sizes(max_num_seqs: int) -> list[int]:
    """vLLM-style buckets: 1, 2, 4, 8, then every 16 up to max_num_seqs (always included)."""
    sizes = [s for s in (1, 2, 4, 8) if s < max_num_seqs]
    sizes += list(range(16, max_num_seqs, 16)) + [max_num_seqs]
    return sorted(set(sizes))


class DecodeGraphs:
    """Static input buffers + one captured forward (to the final hidden states) per bucket."""

    def __init__(
        self, model, kv_cache, backend, max_num_seqs: int, max_model_len: int, block_size: int
    ):
        self.model, self.kv_cache, self.backend = model, kv_cache, backend
        self.max_model_len = max_model_len
        dev = kv_cache.device
        n, width = max_num_seqs, -(-max_model_len // block_size)
        self.input_ids = torch.zeros(n, dtype=torch.long, device=dev)
        self.positions = torch.zeros(n, dtype=torch.long, device=dev)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.long, device=dev)
        self.seq_lens = torch.zeros(n, dtype=torch.int32, device=dev)
        self.block_tables = torch.zeros((n, width), dtype=torch.int32, device=dev)
        self.query_start_loc = torch.arange(n + 1, dtype=torch.int32, device=dev)
        self.sizes = capture_sizes(max_num_seqs)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.hidden: dict[int, torch.Tensor] = {}  # each bucket's output: [bucket, hidden_size]

    def _meta(self, bs: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:bs], query_start_loc=self.query_start_loc[: bs + 1],
            seq_lens=self.seq_lens[:bs], block_tables=self.block_tables[:bs], max_query_len=1,
            max_seq_len=self.max_model_len, is_decode_only=True,
        )  # fmt: skip

    def _forward(self, bs: int) -> torch.Tensor:
        return self.model(  # [bs, hidden_size]
            self.input_ids[:bs], self.positions[:bs], self.kv_cache, self._meta(bs), self.backend
        )

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every bucket, largest first so the smaller ones reuse its memory pool."""
        pool = None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for bs in reversed(self.sizes):
                self._forward(bs)  # warm-up: Triton compiles, allocator settles
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    self.hidden[bs] = self._forward(bs)
                pool = graph.pool()
                self.graphs[bs] = graph
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()

    def bucket(self, num_seqs: int) -> int | None:
        for bs in self.sizes:
            if bs >= num_seqs:
                return bs
        return None

    def run(self, batch, staged: dict[str, torch.Tensor]) -> torch.Tensor:
        """Replay the bucket's graph for a decode-only batch whose arrays are already on the
        device (`staged`); returns [num_seqs, vocab] logits, row i for sequence i."""
        n = batch.num_seqs
        bs = self.bucket(n)
        width = batch.block_tables.shape[1]
        for name, pad in (("input_ids", 0), ("positions", 0), ("slot_mapping", -1),
                          ("seq_lens", 0)):  # fmt: skip
            buf = getattr(self, name)
            buf[:n].copy_(staged[name])
            if bs > n:
                buf[n:bs].fill_(pad)
        self.block_tables[:n, :width].copy_(staged["block_tables"])
        self.graphs[bs].replay()
        return self.model.compute_logits(self.hidden[bs][:n])
