"""CUDA graphs: whole-model graphs for decode-only steps, piecewise graphs for the other steps.

`DecodeGraphs`: a decode step of n sequences runs the graph of the smallest bucket >= n; the
extra rows are padding (slot -1: nothing stored; seq_len 0: attention returns zeros). A graph
ends at the final hidden states: the LM head then runs eagerly on the n real rows only, and no
bucket keeps a [bucket, vocab] logits buffer alive (over all buckets of 1024 sequences those
would hold ~17 GB).

`PiecewiseGraphs` (vLLM's piecewise graphs): a prefill or mixed step of n tokens, up to
`engine.piecewise_max_tokens`, runs the pieces of the smallest token bucket >= n. Everything but
the attention over the paged cache (embedding, norms, projections, RoPE, the K/V store, the MLP)
depends only on the token count, so it is captured per bucket, cut at every layer's attention
(num_layers + 1 graphs); the attention, whose work depends on the batch's sequences, runs
eagerly between them on the n real tokens. Padding tokens are stored nowhere (slot -1) and their
rows are never read. Without them, an eager mixed step of an 8B model costs its host ~20 ms of
kernel launches (benchmarks/host_drift_h200_2026-12-02.md), more than a 512-token step computes.
Larger steps run eagerly: their launches hide behind their compute.
"""

from __future__ import annotations

import torch

from harness.executors.graph_sizes import capture_sizes, piece_sizes  # noqa: F401
from harness.models.attention import AttentionMetadata

# Which piecewise engine a calibration measured (its `settings.piecewise_version`): how the host
# runs a step between the pieces, which sets a small step's time when its launch outlasts its
# GPU work. 1: each layer's attention called the backend anew (7c9979f); 2: planned once per
# step (kernels/launch.py). A refit drops an older version's piece-replayed points.
PIECEWISE_VERSION = 2


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


class PiecewiseGraphs:
    """Static token buffers + num_layers + 1 captured pieces per token bucket (the module)."""

    def __init__(self, model, kv_cache, backend, sizes: list[int]) -> None:
        self.model, self.kv_cache, self.backend = model, kv_cache, backend
        self.sizes = list(sizes)
        a, dev, dtype = model.args, kv_cache.device, kv_cache.dtype
        n = self.sizes[-1]
        self.num_layers = a.num_layers
        self.scale = a.head_dim**-0.5
        self.input_ids = torch.zeros(n, dtype=torch.long, device=dev)
        self.positions = torch.zeros(n, dtype=torch.long, device=dev)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.long, device=dev)
        # Between pieces, outside the graphs' pool: each piece copies its queries and residual
        # stream here; the eager attention reads the queries and writes its output here
        self.queries = torch.zeros((n, a.num_heads, a.head_dim), dtype=dtype, device=dev)
        self.attn_out = torch.zeros_like(self.queries)
        self.residual = torch.zeros((n, a.hidden_size), dtype=dtype, device=dev)
        self.graphs: dict[int, list[torch.cuda.CUDAGraph]] = {}
        self.hidden: dict[int, torch.Tensor] = {}  # each bucket's last piece's output
        self.layer_caches = [(kv_cache[i][0], kv_cache[i][1]) for i in range(a.num_layers)]

    def _piece(self, i: int, t: int) -> torch.Tensor | None:
        """Piece i on the first t rows of the static buffers (the capture meta stores K/V by
        `slot_mapping` only); copies its outputs to the buffers; the last returns the hidden
        states."""
        meta = AttentionMetadata(
            slot_mapping=self.slot_mapping[:t], query_start_loc=self.slot_mapping[:0],
            seq_lens=self.slot_mapping[:0], block_tables=self.slot_mapping[:0],
            max_query_len=t, max_seq_len=t, is_decode_only=False,
        )  # fmt: skip
        x = self.input_ids[:t] if i == 0 else self.attn_out[:t]
        residual = None if i == 0 else self.residual[:t]
        out, residual = self.model.piece(i, x, residual, self.positions[:t], self.kv_cache, meta,
                                         self.backend)  # fmt: skip
        if i == self.num_layers:
            return out
        self.queries[:t].copy_(out)
        self.residual[:t].copy_(residual)
        return None

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every bucket's pieces, largest first, all in one memory pool: a piece's
        temporaries are freed when it ends, so the pool holds one piece of the largest bucket
        (and each bucket's hidden states)."""
        pool = None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for t in reversed(self.sizes):
                for i in range(self.num_layers + 1):  # warm-up: cuBLAS picks, allocator settles
                    self._piece(i, t)
                graphs = []
                for i in range(self.num_layers + 1):
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool, stream=stream):
                        out = self._piece(i, t)
                    pool = graph.pool()
                    graphs.append(graph)
                self.hidden[t] = out
                self.graphs[t] = graphs
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()

    def bucket(self, num_tokens: int) -> int | None:
        for t in self.sizes:
            if t >= num_tokens:
                return t
        return None

    def run(self, batch, staged: dict[str, torch.Tensor], meta: AttentionMetadata) -> torch.Tensor:
        """The pieces of the batch's bucket with each layer's attention (over `meta`, the
        batch's own) between them; returns the hidden states of its num_tokens real tokens."""
        n = batch.num_tokens
        t = self.bucket(n)
        for name, pad in (("input_ids", 0), ("positions", 0), ("slot_mapping", -1)):
            buf = getattr(self, name)
            buf[:n].copy_(staged[name])
            if t > n:
                buf[n:t].fill_(pad)
        graphs, layers = self.graphs[t], self.layer_caches
        # The step's attention is planned once (checks, slices, scratch, grids) and launched
        # per layer on that layer's caches: the host's per-layer work is a replay and a launch
        attend = self.backend.plan(self.queries[:n], *layers[0], meta, self.scale,
                                   self.attn_out[:n])  # fmt: skip
        for i in range(self.num_layers):
            graphs[i].replay()
            attend(*layers[i])
        graphs[-1].replay()
        return self.hidden[t][:n]
