"""A step larger than the executor's forward limit runs as several passes with the same result."""

from __future__ import annotations

import numpy as np

from harness.batch import build_batch, split_batch
from policies.fcfs import FcfsPolicy
from policies.static import StaticPolicy
from tests.conftest import make_engine, make_model, make_specs, run_to_completion


def _outputs(policy, max_forward_tokens, specs):
    engine = make_engine(policy, model=make_model(), num_gpu_blocks=128, max_num_batched_tokens=64)
    engine.executor.max_forward_tokens = max_forward_tokens
    run_to_completion(engine, specs)
    return {rid: r.output_ids for rid, r in engine.requests.items()}, engine


def test_a_padded_static_batch_split_into_passes_gives_the_same_tokens():
    specs = make_specs([37, 90, 61, 5], [4, 6, 3, 5])  # 4 x 90 padded tokens > 64
    whole, _ = _outputs(StaticPolicy(), None, specs)
    split, engine = _outputs(StaticPolicy(), 50, specs)
    assert split == whole
    assert engine.recorder.steps_frame()["num_prefill_tokens"].iloc[0] == 193


def test_a_whole_prompt_longer_than_the_budget_split_into_passes_gives_the_same_tokens():
    specs = make_specs([150, 20], [5, 5], arrivals=[0.0, 0.0])
    assert _outputs(FcfsPolicy(), None, specs)[0] == _outputs(FcfsPolicy(), 64, specs)[0]


def test_pieces_cover_the_batch_in_order():
    engine = make_engine(StaticPolicy(), num_gpu_blocks=64, max_num_batched_tokens=64)
    for s in make_specs([30, 45, 12], [2, 2, 2]):
        engine.add_request(s)
    decision = engine.policy.schedule(engine._view(0.0))
    applied = engine._apply(decision)
    batch = build_batch(applied.scheduled, decision.padding, 0, engine.kv.block_tables, 16)
    pieces = split_batch(batch, 40)
    assert [p.num_tokens for p in pieces] == [40, 40, 40, 15]
    assert np.array_equal(np.concatenate([p.positions for p in pieces]), batch.positions)
    assert sum(len(p.logits_indices) for p in pieces) == len(batch.logits_indices)
    for p in pieces:
        assert p.query_start_loc[0] == 0 and p.query_start_loc[-1] == p.num_tokens
        # a piece's last token of each sequence sits at position seq_len - 1
        ends = p.query_start_loc[1:] - 1
        assert np.array_equal(p.positions[ends] + 1, p.seq_lens)
