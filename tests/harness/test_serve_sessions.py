"""Multi-turn sessions served by a real tiny engine on the CPU (virtual clock): a turn arrives
exactly its think time after its parent finished, its prompt extends the parent's prompt and
output ids, and the run ends with every turn accounted for, whatever happens to a parent."""

from __future__ import annotations

import pytest

import harness.run
from harness.request import RequestSpec, RequestStatus
from harness.run import run
from harness.serve import Releases, VirtualClock

SESSIONS = (
    "engine=cpu", "model=tiny", "logger=none", "engine.clock=virtual", "engine.progress=false",
    "workload=multi_turn", "workload.num_sessions=4", "workload.arrival.rate=4",
    "workload.turns.min=3", "workload.turns.max=3", "workload.prompt_len.mean=24",
    "workload.prompt_len.sigma=0.3", "workload.prompt_len.max=40", "workload.output_len.min=2",
    "workload.output_len.max=6", "workload.think_time.mean=0.3",
)  # fmt: skip


@pytest.fixture
def served(monkeypatch):
    """Runs `run()` and keeps the engine it served with."""
    engines = []
    real = harness.run.serve

    def spy(engine, specs, clock, progress=True):
        engines.append(engine)
        return real(engine, specs, clock, progress)

    monkeypatch.setattr(harness.run, "serve", spy)
    return engines


def test_every_turn_arrives_think_time_after_its_parent_with_its_history(compose_cfg, served):
    result = run(compose_cfg(*SESSIONS), None)
    engine = served[0]
    requests = engine.requests
    assert result.summary["complete"] and result.summary["num_finished"] == 12 == len(requests)
    follow_ups = [r for r in requests.values() if r.spec.parent_id is not None]
    assert len(follow_ups) == 8
    for r in follow_ups:
        parent = requests[r.spec.parent_id]
        assert parent.spec.session_id == r.spec.session_id and parent.spec.turn == r.spec.turn - 1
        assert r.arrival_s == parent.finish_s + r.spec.think_time_s  # exact on a virtual clock
        assert r.spec.think_time_s > 0
        history = parent.spec.prompt_ids + tuple(parent.output_ids)
        assert len(history) > len(parent.spec.prompt_ids)  # the output is part of it
        assert r.spec.prompt_ids[: len(history)] == history
        assert r.num_prompt_tokens > len(history)  # + this turn's new tokens
        assert r.token_times_s[0] > r.arrival_s  # TTFT counts from the released arrival
    df = result.requests.set_index("request_id")
    assert (df.loc[[r.request_id for r in follow_ups], "ttft_s"] > 0).all()


def test_a_rejected_turn_ends_its_session_and_the_run_ends(compose_cfg, served):
    # Turn 0 (30 + 4 tokens) fits the 4 KV blocks of 16; turn 1 (30 + 4 + 30, + 4) never can:
    # it is rejected, and turn 2 is never sent, recorded as aborted with the reason.
    cfg = compose_cfg(*SESSIONS, "budget.num_gpu_blocks=4", "budget.max_num_seqs=4",
                      "workload.prompt_len.mean=30",
                      "workload.prompt_len.sigma=0", "workload.output_len.min=4",
                      "workload.output_len.max=4")  # fmt: skip
    result = run(cfg, None)
    s = result.summary
    assert s["complete"] and s["num_requests"] == 12
    assert s["num_finished"] + s["num_rejected"] + s["num_aborted"] == 12
    assert (s["num_finished"], s["num_rejected"], s["num_aborted"]) == (4, 4, 4)
    requests = served[0].requests
    for r in requests.values():
        if r.spec.turn == 1:
            assert r.status is RequestStatus.REJECTED and r.reason.startswith("kv_capacity")
        if r.spec.turn == 2:
            assert r.status is RequestStatus.ABORTED
            assert r.reason == f"session ended: parent {r.spec.parent_id} rejected"


class StopAfter(VirtualClock):
    """A virtual clock that interrupts the run (as Ctrl-C) the `n`-th time it moves (a step's
    modelled time or a wait for an arrival)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def _moved(self) -> None:
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        self._moved()

    def wait_until(self, t: float) -> None:
        if t > self.t:
            super().wait_until(t)
            self._moved()


def test_an_interrupted_run_accounts_for_turns_not_yet_released(compose_cfg, served):
    result = run(compose_cfg(*SESSIONS), None, clock=StopAfter(12))
    s = result.summary
    assert not s["complete"] and s["num_requests"] == 12
    assert s["num_finished"] + s["num_rejected"] + s["num_aborted"] == 12
    assert s["num_aborted"] >= 4  # at least every third turn was still to come


def spec(rid, parent=None, arrival=0.0):
    return RequestSpec(rid, arrival, (1, 2, 3), 2, session_id="s", parent_id=parent)


def test_releases_refuse_a_missing_parent_and_a_cycle():
    with pytest.raises(ValueError, match="parent 'x' is not a request"):
        Releases([spec("a"), spec("b", "x")])
    with pytest.raises(ValueError, match="2 requests have a cycle"):
        Releases([spec("a"), spec("b", "c"), spec("c", "b")])
    releases = Releases([spec("b", "a"), spec("a", arrival=1.0)])
    assert releases.next_arrival_s() == 1.0 and not releases.empty
    assert [s.request_id for s in releases.due(1.0)] == ["a"]
    assert not releases.empty  # b waits for a
