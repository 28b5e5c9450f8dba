"""The multi-turn session generator (workloads/sessions.py) and the prefix reuse statistic of
`describe` (workloads/describe.py), against hand-computed and brute-force token-level counts."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hydra.utils import instantiate

from tests.workloads.conftest import trace_path
from workloads.describe import prefix_reuse, reuse_segments, summarize
from workloads.errors import WorkloadError
from workloads.sessions import SessionWorkload
from workloads.spec import RequestSpec
from workloads.table import RequestTable
from workloads.trace import TraceWorkload

VOCAB = 32000


def sessions(**over) -> SessionWorkload:
    args = dict(
        num_sessions=300,
        arrival={"process": "poisson", "rate": 5.0},
        turns={"kind": "uniform", "min": 1, "max": 5},
        prompt_len={"kind": "uniform", "min": 10, "max": 90},
        output_len={"kind": "uniform", "min": 5, "max": 25},
        think_time={"kind": "exponential", "mean": 2.0},
    )
    return SessionWorkload(**{**args, **over})


def by_session(specs: list[RequestSpec]) -> dict[str, list[RequestSpec]]:
    out = defaultdict(list)
    for s in specs:
        out[s.session_id].append(s)
    return out


def test_seeded_and_deterministic():
    a, b = sessions().build(0, VOCAB, 4096), sessions().build(0, VOCAB, 4096)
    assert a == b
    c = sessions().build(1, VOCAB, 4096)
    assert [s.prompt_ids for s in c] != [s.prompt_ids for s in a]


def test_distributions_are_honoured():
    w = sessions()
    specs = w.build(0, VOCAB, 4096)
    turns = [len(v) for v in by_session(specs).values()]
    assert len(turns) == 300 and set(turns) == {1, 2, 3, 4, 5}
    assert abs(np.mean(turns) - 3) < 0.25
    assert w.stats["num_sessions"] == 300 and w.stats["num_turns"] == len(specs) == sum(turns)
    new = np.array([len(s.prompt_ids) for s in specs])
    assert new.min() >= 10 and new.max() <= 90 and abs(new.mean() - 50) < 3
    out = np.array([s.max_output_tokens for s in specs])
    assert out.min() >= 5 and out.max() <= 25
    think = np.array([s.think_time_s for s in specs if s.turn > 0])
    assert abs(think.mean() - 2.0) < 0.2 and (think > 0).all()
    assert all(s.think_time_s == 0 for s in specs if s.turn == 0)
    starts = sorted(s.arrival_s for s in specs if s.turn == 0)
    assert starts[0] == 0 and abs((len(starts) - 1) / starts[-1] - 5.0) < 0.75  # sessions/s


def test_turns_are_chained_in_order():
    specs = sessions().build(0, VOCAB, 4096)
    index = {s.request_id: i for i, s in enumerate(specs)}
    assert [s.request_id for s in specs] == [f"r{i:06d}" for i in range(len(specs))]
    assert [s.arrival_s for s in specs] == sorted(s.arrival_s for s in specs)
    for turns in by_session(specs).values():
        assert [s.turn for s in turns] == list(range(len(turns)))
        first = turns[0]
        assert first.parent_id is None and first.history_tokens == 0
        for parent, s in zip(turns, turns[1:], strict=False):
            assert (
                s.parent_id == parent.request_id and index[s.request_id] > index[parent.request_id]
            )
            assert s.arrival_s == pytest.approx(parent.arrival_s + s.think_time_s)  # earliest
            assert s.history_tokens == parent.num_prompt_tokens + parent.max_output_tokens
            assert s.num_prompt_tokens == s.history_tokens + len(s.prompt_ids)


def test_a_session_ends_when_its_history_passes_max_model_len():
    long = dict(turns={"kind": "fixed", "value": 8}, prompt_len={"kind": "fixed", "value": 100},
                output_len={"kind": "fixed", "value": 50}, num_sessions=5)  # fmt: skip
    w = sessions(**long)
    specs = w.build(0, VOCAB, 500)  # turns need 150, 300, 450, 600: three fit
    assert all(len(t) == 3 for t in by_session(specs).values())
    assert all(s.num_prompt_tokens + s.max_output_tokens <= 500 for s in specs)
    assert w.stats["num_sessions_cut"] == 5 and w.stats["num_turns_cut"] == 25
    assert w.stats["num_turns"] == 15 and w.stats["num_too_long"] == 5
    w = sessions(**long, clip="none")
    assert len(w.build(0, VOCAB, 500)) == 40 and w.stats["num_too_long"] == 25


def test_a_first_turn_too_long_is_truncated_or_its_session_dropped():
    one = dict(turns={"kind": "fixed", "value": 2}, prompt_len={"kind": "fixed", "value": 300},
               output_len={"kind": "fixed", "value": 50}, num_sessions=3)  # fmt: skip
    w = sessions(**one)
    specs = w.build(0, VOCAB, 200)
    assert [s.num_prompt_tokens for s in specs] == [150] * 3 and w.stats["num_clipped"] == 3
    assert w.stats["num_turns_cut"] == 3
    with pytest.raises(WorkloadError, match="no turn fits"):
        sessions(**one, clip="drop").build(0, VOCAB, 200)


def test_a_system_prompt_is_shared_by_every_first_turn():
    specs = sessions(system_prompt_len=32).build(0, VOCAB, 4096)
    firsts = [s.prompt_ids for s in specs if s.turn == 0]
    assert len({p[:32] for p in firsts}) == 1 and len({p[32:] for p in firsts}) == len(firsts)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"think_time": {"kind": "gauss", "mean": 1}}, "workload.think_time.kind='gauss'"),
        ({"think_time": {"kind": "exponential"}}, "workload.think_time.mean is required"),
        ({"think_time": {"kind": "fixed", "value": -1}}, "workload.think_time: .* >= 0"),
        ({"think_time": {"kind": "fixed", "mean": 1}}, "workload.think_time.mean: not a param"),
        ({"num_sessions": 0}, "workload.num_sessions must be >= 1"),
        ({"system_prompt_len": -1}, "workload.system_prompt_len must be >= 0"),
        ({"turns": {"kind": "zipf"}}, "workload.turns.kind='zipf'"),
        ({"turns": 3}, "workload.turns must be a mapping"),
        ({"clip": "cut"}, "workload.clip='cut'"),
    ],
)
def test_bad_config_names_the_key(over, match):
    with pytest.raises(WorkloadError, match=match):
        sessions(**over).build(0, VOCAB, 4096)


def test_spec_defaults_leave_a_plain_request_as_it_was():
    s = RequestSpec("r0", 1.0, (5, 6, 7), 4)
    assert (s.session_id, s.turn, s.parent_id, s.think_time_s, s.history_tokens) == (
        None, 0, None, 0.0, 0,
    )  # fmt: skip
    assert s.num_prompt_tokens == 3 and not s.extends_parent
    with pytest.raises(ValueError, match="needs a parent_id"):
        RequestSpec("r1", 0.0, (1,), 1, history_tokens=5)


# -- prefix reuse --------------------------------------------------------------------------


def test_reuse_of_hash_blocks_by_hand():
    # 8-token hash blocks. r0: blocks 1, 2 (12 tokens); r1: 1, 2, 3 (20); r2: 1, 4 (10);
    # r3: 5 and 6 random ids past its one listed block (14).
    table = RequestTable(
        arrival_s=np.arange(4.0), prompt_tokens=np.array([12, 20, 10, 14]),
        output_tokens=np.ones(4, dtype=np.int64),
        hash_ids=[np.array([1, 2]), np.array([1, 2, 3]), np.array([1, 4]), np.array([5])],
    )  # fmt: skip

    class Trace:
        prefix_block_tokens = 8

    # r1 finds blocks 1 and the 4 tokens of 2 that r0 held: 12 tokens; r2 finds block 1: 8.
    # In blocks of 4: 0 + 12 + 8 + 0 = 20 of 56; of 8: 0 + 8 + 8 + 0 = 16; of 16: 0.
    got = prefix_reuse(reuse_segments(table, Trace()), block_sizes=(4, 8, 16))
    assert got == {4: 20 / 56, 8: 16 / 56, 16: 0.0}
    assert summarize(table, Trace())["prefix_reuse"] == {16: 0.0, 512: 0.0}


def test_reuse_of_sessions_by_hand():
    fixed = dict(num_sessions=2, turns={"kind": "fixed", "value": 2}, output_len={"kind": "fixed", "value": 12},
                 prompt_len={"kind": "fixed", "value": 20}, system_prompt_len=8)  # fmt: skip
    w = sessions(**fixed)
    table = w.load(0, 4096)
    # Each session: turn 0 = 8 system + 20 = 28 tokens; turn 1 = 28 + 12 + 20 = 60 tokens.
    # The second session's first turn finds the 8 system tokens, every turn 1 finds 40.
    # In blocks of 4: 8 + 40 + 40 = 88 of 176; of 16: 32 + 32 = 64; of 512: 0.
    assert sorted(table.prompt_tokens.tolist()) == [28, 28, 60, 60]
    got = prefix_reuse(w.reuse_segments(table), block_sizes=(4, 16, 512))
    assert got == {4: 88 / 176, 16: 64 / 176, 512: 0.0}


def block_keys(ids, block: int) -> list[int]:
    """A hash per whole block of `ids`, chained over the blocks before it."""
    h, out = None, []
    for i in range(len(ids) // block):
        h = hash((h, tuple(ids[i * block : (i + 1) * block])))
        out.append(h)
    return out


def brute_force_reuse(histories, block: int) -> float:
    """Token-level: a block of a prompt counts when its chained hash was among the blocks of an
    earlier request's history (its prompt, and for sessions its output), and so were all
    before it."""
    seen, reused, total = set(), 0, 0
    for prompt, history in histories:
        k = 0
        for key in block_keys(prompt, block):
            if key not in seen:
                break
            k += 1
        reused, total = reused + k * block, total + len(prompt)
        seen.update(block_keys(history, block))
    return reused / total


def test_session_reuse_equals_the_token_level_count():
    w = sessions(num_sessions=30, system_prompt_len=40)
    specs = w.build(0, VOCAB, 4096)
    rng = np.random.default_rng(7)
    full, histories = {}, []
    for s in specs:  # as the serving loop releases them, outputs standing in as random ids
        prompt = s.prompt_ids
        if s.extends_parent:
            prompt = full[s.parent_id] + prompt
        output = tuple(rng.integers(0, VOCAB, s.max_output_tokens).tolist())
        full[s.request_id] = prompt + output
        histories.append((prompt, prompt + output))
    got = prefix_reuse(w.reuse_segments(w.load(0, 4096)), block_sizes=(16, 64))
    assert got[16] > 0.3
    assert got == {b: pytest.approx(brute_force_reuse(histories, b)) for b in (16, 64)}


def test_mooncake_reuse_equals_the_token_level_count():
    path = trace_path("mooncake_conversation_trace.jsonl")
    w = TraceWorkload(path=str(path), max_requests=300, clip="none")
    table = w.load(0, 10**6)
    got = summarize(table, w)["prefix_reuse"]
    prompts = [s.prompt_ids for s in w.build(0, VOCAB, 10**6)]
    assert got[512] > 0.05
    assert got == {
        b: pytest.approx(brute_force_reuse([(p, p) for p in prompts], b)) for b in (16, 512)
    }


def test_random_prompts_reuse_nothing(compose_cfg):
    w = instantiate(compose_cfg("workload=bursty").workload, _convert_="all")
    summary = summarize(w.load(0, 4096), w)
    assert summary["prefix_reuse"] == {16: 0.0, 512: 0.0}


def test_the_load_knob_is_the_session_rate():
    knob = SessionWorkload.load_knob({"arrival": {"process": "poisson", "rate": 2.0}})
    assert (knob.key, knob.unit) == ("arrival.rate", "sessions/s")
    with pytest.raises(WorkloadError, match="workload.arrival.process=onoff"):
        SessionWorkload.load_knob({"arrival": {"process": "onoff"}})
