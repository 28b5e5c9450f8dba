"""Experiment: does a decode step overlap attention (memory-bound) with GEMMs (compute-bound) if
its batch is split in two halves that run as independent chains on two streams?

Times, in CUDA graphs, the llama3_8b forward of one decode batch against the same batch as two
halves on two streams (the hardware scheduler interleaves their kernels; no SM partitioning).

    python benchmarks/experiments/two_stream_decode.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch

from benchmarks.bench_kernels import build_model, capture_graph, decode_batch, timed, triton_backend
from harness.executors.model_runner import ModelRunner
from harness.models.attention import AttentionMetadata


def _meta(t, lo, hi, max_len):
    return AttentionMetadata(
        slot_mapping=t["slot_mapping"][lo:hi], query_start_loc=t["qsl"][: hi - lo + 1],
        seq_lens=t["seq_lens"][lo:hi], block_tables=t["block_tables"][lo:hi], max_query_len=1,
        max_seq_len=max_len, is_decode_only=True,
    )  # fmt: skip


@torch.inference_mode()
def main() -> None:
    model = build_model("llama3_8b")
    for bs, ctx in ((256, 1024), (512, 768), (768, 512), (1024, 384)):
        run_case(model, bs, ctx)


def run_case(model, bs: int, ctx: int, block: int = 16, max_len: int = 2048) -> None:
    runner = ModelRunner(model, bs * -(-ctx // block) + 8, 0, block, backend=triton_backend())
    runner.kv_cache.normal_()
    b = decode_batch(bs, ctx, block, model.args.vocab_size)
    dev = torch.device("cuda")
    t = {
        "ids": torch.from_numpy(b.input_ids).to(dev),
        "pos": torch.from_numpy(b.positions).to(dev),
        "slot_mapping": torch.from_numpy(b.slot_mapping).to(dev),
        "seq_lens": torch.from_numpy(b.seq_lens).to(dev),
        "block_tables": torch.from_numpy(b.block_tables).to(dev),
        "qsl": torch.arange(bs + 1, dtype=torch.int32, device=dev),
    }
    cache, backend = runner.kv_cache, runner.backend
    h = bs // 2
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()

    def one():
        return model(t["ids"], t["pos"], cache, _meta(t, 0, bs, max_len), backend)

    def two():
        main_stream = torch.cuda.current_stream()
        s1.wait_stream(main_stream)
        s2.wait_stream(main_stream)
        with torch.cuda.stream(s1):
            a = model(t["ids"][:h], t["pos"][:h], cache, _meta(t, 0, h, max_len), backend)
        with torch.cuda.stream(s2):
            c = model(t["ids"][h:], t["pos"][h:], cache, _meta(t, h, bs, max_len), backend)
        main_stream.wait_stream(s1)
        main_stream.wait_stream(s2)
        return a, c

    res = {}
    outs = {}
    for name, fn in (("one_stream", one), ("two_streams", two)):
        g, outs[name] = capture_graph(fn)
        res[name] = timed(g.replay, warmup=3, iters=10) * 1e3
    full = outs["one_stream"].float()
    halves = torch.cat(outs["two_streams"]).float()
    err = (full - halves).abs().max().item()
    print(f"bs {bs} ctx {ctx}: one stream {res['one_stream']:.2f} ms, two streams "
          f"{res['two_streams']:.2f} ms ({res['two_streams'] / res['one_stream']:.3f}x), "
          f"max |diff| {err:.3g}", flush=True)  # fmt: skip
    del runner, outs
    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
