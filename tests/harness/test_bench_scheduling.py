"""Benchmark: host time of one engine step (view + policy + validate/apply + batch + update)
with 256 running requests, the forward pass excluded.

Run with `python -m pytest tests/harness/test_bench_scheduling.py --benchmark-enable`; in the
default (benchmark-disabled) test run it executes once as a smoke test.
"""

from __future__ import annotations

import numpy as np

from harness.engine import Engine, Limits
from harness.kv_cache import KVCacheManager
from harness.metrics import Recorder
from policies.fcfs import FcfsPolicy
from tests.conftest import ManualClock, make_specs


class TimingOnlyExecutor:
    """Returns token 0 for every sampled row: isolates the engine's host-side cost."""

    def launch(self, batch, feed_from=None):
        self._n = len(batch.logits_indices)
        return self

    def result(self) -> np.ndarray:
        return np.zeros(self._n, dtype=np.int64)

    def execute(self, batch) -> np.ndarray:
        return self.launch(batch).result()

    def swap_out(self, pairs) -> None: ...

    def swap_in(self, pairs) -> None: ...


def _engine_with_running(num_running: int = 256, prompt_len: int = 512) -> Engine:
    kv = KVCacheManager(num_running * 256, 16)  # room for 3500 tokens each
    limits = Limits(max_num_batched_tokens=8192, max_num_seqs=num_running, max_model_len=4096)
    engine = Engine(FcfsPolicy(), TimingOnlyExecutor(), kv, limits, ManualClock(), Recorder())
    for spec in make_specs([prompt_len] * num_running, [3000] * num_running, vocab_size=1000):
        engine.add_request(spec)
    while engine.waiting:
        engine.step()
    assert len(engine.running) == num_running
    return engine


def test_bench_decode_step_256_running(benchmark):
    engine = _engine_with_running()
    before = engine.num_steps
    benchmark(engine.step)
    assert engine.num_steps > before
    last = engine.recorder.steps[-1]
    assert last.num_decode_tokens == 256 and last.num_prefill_tokens == 0
