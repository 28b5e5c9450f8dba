"""The cuda executor: CUDA-graph decode equals eager, and scheduling does not change tokens."""

from __future__ import annotations

import numpy as np
import pytest

from harness.engine import Engine, Limits
from harness.executors.model_runner import ModelRunner
from harness.kv_cache import KVCacheManager
from harness.metrics import Recorder
from harness.models.attention import TritonAttention
from harness.run import run
from policies.fcfs import FcfsPolicy
from tests.conftest import ManualClock, make_model, make_specs, requires_cuda, run_to_completion

pytestmark = [pytest.mark.gpu, requires_cuda]


def _serve(model, graphs: bool, specs, pipelined: bool = False, pieces: int = 0):
    runner = ModelRunner(model, 256, 0, 16, backend=TritonAttention(), cuda_graphs=graphs,
                         max_num_seqs=16, max_model_len=1024,
                         piecewise_max_tokens=pieces)  # fmt: skip
    kv = KVCacheManager(256, 16)
    engine = Engine(FcfsPolicy(), runner, kv, Limits(1024, 16, 1024), ManualClock(1e-3), Recorder(),
                    pipelined=pipelined)  # fmt: skip
    run_to_completion(engine, specs)
    return {rid: r.output_ids for rid, r in engine.requests.items()}, engine.recorder.steps_frame()


def test_cuda_graph_decode_matches_eager():
    model = make_model(std=0.15, device="cuda")  # fp32: split-KV order differences stay ~1e-6
    specs = make_specs([5, 40, 17, 100, 3, 64, 9], [30, 12, 25, 8, 40, 20, 33])
    eager, _ = _serve(model, False, specs)
    graphed, steps = _serve(model, True, specs)
    assert graphed == eager
    assert steps["device_time_s"].notna().all() and (steps["device_time_s"] > 0).all()
    # pipelined: each step is queued before the last one's tokens reach the host (fed on device)
    pipelined, _ = _serve(model, True, specs, pipelined=True)
    assert pipelined == eager
    pipelined_eager, _ = _serve(model, False, specs, pipelined=True)
    assert pipelined_eager == eager
    # prefill and mixed steps of up to 256 tokens through the piecewise graphs (larger eager)
    for pipe in (False, True):
        piecewise, _ = _serve(model, True, specs, pipelined=pipe, pieces=256)
        assert piecewise == eager


def test_piecewise_graphs_compute_what_the_eager_pass_computes():
    """bf16 8B-shaped layers cut short (2 layers): one mixed batch through the piecewise graphs
    of a padded bucket gives the eager pass's logits."""
    import dataclasses

    import torch

    from harness.executors.base import Batch
    from harness.models.config import preset_args
    from harness.models.llama import LlamaModel, RotaryEmbedding, TritonOps, init_random_weights

    args = dataclasses.replace(preset_args("llama3_8b"), num_layers=2, vocab_size=4096)
    model = LlamaModel(args).to("cuda", torch.bfloat16)
    model.rope = RotaryEmbedding(args).to("cuda")  # float32 tables, as build_model keeps them
    model.ops = TritonOps()
    init_random_weights(model, 0)
    runners = [ModelRunner(model, 64, 0, 16, backend=TritonAttention(), cuda_graphs=True,
                           max_num_seqs=8, max_model_len=512, piecewise_max_tokens=p)
               for p in (0, 128)]  # fmt: skip
    assert runners[0].pieces is None and runners[1].pieces.bucket(53) == 64
    # two decode rows (contexts 20, 35) then a 51-token chunk after a 16-token prefix: 53 tokens
    lens, q = np.array([20, 35, 67], np.int32), np.array([1, 1, 51])
    qsl = np.concatenate([[0], np.cumsum(q)]).astype(np.int32)
    tables = np.arange(15, dtype=np.int32).reshape(3, 5)
    pos = np.concatenate([[19], [34], np.arange(16, 67)]).astype(np.int64)
    row = np.repeat(np.arange(3), q)
    slots = (tables[row, pos // 16] * 16 + pos % 16).astype(np.int64)
    rng = np.random.default_rng(0)
    batch = Batch(
        input_ids=rng.integers(0, 4096, 53).astype(np.int64), positions=pos, slot_mapping=slots,
        query_start_loc=qsl, seq_lens=lens, block_tables=tables,
        logits_indices=np.array([0, 1, 52]), max_query_len=51, max_seq_len=67,
        num_decode_seqs=2, max_decode_seq_len=35,
    )  # fmt: skip
    logits = []
    for r in runners:
        with torch.inference_mode():  # as the runner's own launches
            r.kv_cache.normal_(0, 1, generator=torch.Generator("cuda").manual_seed(1))
            t = r.staging.stage(batch)
            out = r._logits(batch, t, r.pieces.run(batch, t, r._meta(batch, t))) if (
                r.pieces) else r._eager_logits(batch, t)  # fmt: skip
            logits.append(out.float())
            logits.append(r.kv_cache.float())  # the K/V stored by the pass, padding nowhere
    eager, eager_cache, piecewise, piecewise_cache = logits
    torch.testing.assert_close(piecewise, eager, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(piecewise_cache, eager_cache, atol=2e-2, rtol=2e-2)
    assert (piecewise_cache[:, :, 15:] == eager_cache[:, :, 15:]).all()  # no block of the batch


@pytest.mark.parametrize("policy", ["chunked_prefill", "preempt_cpu", "static"])
def test_policies_compute_the_same_tokens_on_gpu(compose_cfg, policy):
    """fp32 tiny model on cuda (Triton kernels, CUDA graphs): tokens equal fcfs's."""
    common = ("engine=cuda", "model=tiny", "engine.dtype=float32", "logger=none",
              "engine.progress=false", "workload.num_requests=24", "workload.arrival.rate=500",
              "workload.prompt_len.max=300", "budget.num_gpu_blocks=96", "budget.max_num_seqs=8",
              "budget.max_num_batched_tokens=512", "budget.num_cpu_blocks=200")  # fmt: skip
    base = run(compose_cfg(*common, "policy=fcfs"), None)
    other = run(compose_cfg(*common, f"policy={policy}"), None)
    assert (base.requests["status"] == "finished").all()
    a = dict(zip(base.requests.request_id, base.requests.output_ids.map(list), strict=True))
    b = dict(zip(other.requests.request_id, other.requests.output_ids.map(list), strict=True))
    assert a == b


def _compiled_variants() -> dict[str, int]:
    """Compiled variants of every Triton kernel in `kernels/`, by name."""
    import triton

    import kernels.fused_ops
    import kernels.kv_store
    import kernels.paged_decode
    import kernels.paged_extend

    modules = (kernels.fused_ops, kernels.kv_store, kernels.paged_decode, kernels.paged_extend)
    return {
        f"{m.__name__}.{name}": sum(len(c[0]) for c in fn.device_caches.values())
        for m in modules
        for name, fn in vars(m).items()
        if isinstance(fn, triton.runtime.JITFunction)
    }


@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_no_kernel_compiles_after_warmup(graphs):
    """The runner compiles every kernel variant up front: a run whose batches vary in size,
    width, split count and chunk length compiles nothing more (a compile stalls a step for
    seconds, which would land in the measured latencies)."""
    import torch

    from harness.models.loader import build_model
    from policies.chunked_prefill import ChunkedPrefillPolicy

    model = build_model("tiny", None, torch.device("cuda"), torch.bfloat16, seed=0)
    runner = ModelRunner(model, 512, 0, 16, backend=TritonAttention(), cuda_graphs=graphs,
                         max_num_seqs=48, max_model_len=1024)  # fmt: skip
    before = _compiled_variants()
    assert before["kernels.paged_extend._paged_extend_attention_kernel"] > 0
    rng = np.random.default_rng(0)
    specs = make_specs(rng.integers(1, 400, 60).tolist(), rng.integers(1, 60, 60).tolist())
    for policy, budget in ((FcfsPolicy(), 2048), (ChunkedPrefillPolicy(), 96)):
        kv = KVCacheManager(512, 16)
        engine = Engine(policy, runner, kv, Limits(budget, 48, 1024), ManualClock(1e-3),
                        Recorder(), pipelined=True)  # fmt: skip
        run_to_completion(engine, specs)
    assert _compiled_variants() == before


def test_activation_peak_is_measured_not_guessed():
    # The KV cache is sized after a profiled step: its peak must hold at least the largest
    # intermediate (the gate/up projection of every token) and the sampled rows' logits, and
    # grow with the token budget.
    import torch

    from harness.executors.model_runner import peak_step_bytes

    model = make_model(device="cuda")
    a = model.args
    held = torch.cuda.memory_allocated()
    small = peak_step_bytes(model, TritonAttention(), 64, 8, 16, 256)
    big = peak_step_bytes(model, TritonAttention(), 1024, 64, 16, 256)
    itemsize = next(model.parameters()).element_size()
    assert big >= 1024 * 2 * a.intermediate_size * itemsize + 64 * a.vocab_size * itemsize
    assert big > small > 0
    assert torch.cuda.memory_allocated() == held  # the profile step keeps nothing
