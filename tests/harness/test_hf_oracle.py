"""The engine's greedy tokens equal Hugging Face transformers' on the same weights.

A random tiny checkpoint is saved with `save_pretrained`, loaded through `model.path`, and
served by the continuous-batching engine with prompts split into odd-sized chunks mixed with
decodes in one flat batch. Each request must produce exactly the tokens HF's greedy `generate`
produces for that prompt alone: the paged cache, the slot mapping and the varlen batching
compute the same function as a dense single-sequence forward pass.
"""

from __future__ import annotations

import pytest
import torch

from harness.models.attention import TritonAttention
from harness.models.loader import ModelLoadError, build_model
from policies.base import Decision, Policy, SchedulerView
from tests.conftest import make_engine, make_specs, requires_cuda, run_to_completion

transformers = pytest.importorskip("transformers")


class OddChunks(Policy):
    """Decodes first, then prefill chunks of at most `chunk` tokens (off block edges)."""

    chunks_prefills = True

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk

    def schedule(self, view: SchedulerView) -> Decision:
        budget, free = view.max_num_batched_tokens, view.num_free_blocks
        out: dict[str, int] = {}
        seats = view.max_num_seqs - len(view.running)
        for r in sorted(view.running, key=lambda r: not r.is_decode) + list(view.waiting):
            is_new = r in view.waiting
            if is_new and seats < 1:
                break
            n = min(r.num_uncomputed_tokens, self.chunk, budget)
            need = view.num_new_blocks(r, n)
            if n < 1 or need > free:
                continue
            out[r.request_id], budget, free = n, budget - n, free - need
            seats -= is_new
        return Decision(num_scheduled_tokens=out)


def _hf_config(kind: str):
    common = dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.15, tie_word_embeddings=False,
    )  # fmt: skip
    if kind == "llama":
        scaling = {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
        }  # fmt: skip
        return transformers.LlamaConfig(**common, rope_theta=10000.0, rope_scaling=scaling)
    return transformers.Qwen2Config(**common, rope_theta=10000.0)


def _save_random_checkpoint(kind: str, path) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = transformers.LlamaForCausalLM if kind == "llama" else transformers.Qwen2ForCausalLM
    hf = cls(_hf_config(kind)).float().eval()
    if kind == "qwen2":  # make the q/k/v biases matter
        with torch.no_grad():
            for layer in hf.model.layers:
                for proj in (
                    layer.self_attn.q_proj,
                    layer.self_attn.k_proj,
                    layer.self_attn.v_proj,
                ):
                    proj.bias.normal_(0, 0.1)
    hf.save_pretrained(path)
    return hf


def _hf_greedy(hf, prompt: tuple[int, ...], n: int) -> list[int]:
    ids = torch.tensor([prompt], device=hf.device)
    out = hf.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
        do_sample=False, pad_token_id=0, eos_token_id=None,
    )  # fmt: skip
    return out[0, len(prompt) :].tolist()


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, requires_cuda])]


@pytest.mark.parametrize("pipelined", [False, True], ids=["sync", "pipelined"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_engine_matches_hf_generate(kind, device, pipelined, tmp_path):
    """fp32 on both devices; on cuda through the Triton kernels (and HF on the GPU too)."""
    hf = _save_random_checkpoint(kind, tmp_path).to(device)
    model = build_model("tiny", str(tmp_path), torch.device(device), torch.float32)
    backend = TritonAttention() if device == "cuda" else None
    prompt_lens = [1, 5, 16, 17, 33, 70, 129]
    output_lens = [9, 12, 7, 20, 5, 16, 11]
    specs = make_specs(prompt_lens, output_lens, vocab_size=256, seed=1)
    engine = make_engine(
        OddChunks(chunk=7), model=model, num_gpu_blocks=64, block_size=16,
        max_num_batched_tokens=24, max_num_seqs=8, backend=backend, pipelined=pipelined,
    )  # fmt: skip
    run_to_completion(engine, specs)
    steps = engine.recorder.steps_frame()
    mixed = steps[(steps.num_prefill_tokens > 0) & (steps.num_decode_tokens > 0)]
    assert len(mixed) > 0, "no step mixed prefill chunks with decodes"
    for spec in specs:
        got = engine.requests[spec.request_id].output_ids
        assert got == _hf_greedy(hf, spec.prompt_ids, spec.max_output_tokens), spec.request_id


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("pipelined", [False, True], ids=["sync", "pipelined"])
def test_cuda_graphs_and_piecewise_graphs_match_hf_generate(pipelined, tmp_path):
    """Decode steps through the decode graphs, every prefill and mixed step through the
    piecewise graphs (buckets up to 64 tokens, a 24-token budget): HF's greedy tokens."""
    hf = _save_random_checkpoint("llama", tmp_path).to("cuda")
    model = build_model("tiny", str(tmp_path), torch.device("cuda"), torch.float32)
    specs = make_specs([1, 5, 16, 17, 33, 70, 129], [9, 12, 7, 20, 5, 16, 11], vocab_size=256,
                       seed=1)  # fmt: skip
    engine = make_engine(
        OddChunks(chunk=7), model=model, num_gpu_blocks=64, block_size=16,
        max_num_batched_tokens=24, max_num_seqs=8, backend=TritonAttention(),
        pipelined=pipelined, cuda_graphs=True, piecewise_max_tokens=64,
    )  # fmt: skip
    runner = engine.executor
    assert runner.pieces is not None and runner.pieces.sizes == [8, 16, 32, 48, 64]
    calls = {"pieces": 0, "graphs": 0}
    for name, obj in (("pieces", runner.pieces), ("graphs", runner.graphs)):
        real = obj.run

        def counted(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)

        obj.run = counted
    run_to_completion(engine, specs)
    steps = engine.recorder.steps_frame()
    assert calls["pieces"] == int((steps.num_prefill_tokens > 0).sum()) > 0
    assert calls["graphs"] > 0
    for spec in specs:
        got = engine.requests[spec.request_id].output_ids
        assert got == _hf_greedy(hf, spec.prompt_ids, spec.max_output_tokens), spec.request_id


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel.*not supported"):
        build_model("tiny", str(tmp_path), torch.device("cpu"), torch.float32)
