"""cache_aware: waiting requests longest cached prefix first (SGLang's lpm), FCFS when the queue
is longer than `fcfs_above`, optional aging."""

from __future__ import annotations

import dataclasses

import pytest

from policies.cache_aware import CacheAwarePolicy
from tests.policies.conftest import make_request_view, make_view


def cached(request_id: str, arrival_s: float, cached_tokens: int, prompt: int = 64):
    r = make_request_view(request_id, arrival_s, prompt)
    return dataclasses.replace(
        r, num_computed_tokens=cached_tokens, num_cached_tokens=cached_tokens
    )


def test_most_cached_tokens_first_ties_in_arrival_order():
    waiting = [cached("cold", 0.0, 0), cached("warm", 1.0, 16), cached("hot", 2.0, 48),
               cached("warm2", 3.0, 16)]  # fmt: skip
    view = make_view(waiting=waiting, max_num_seqs=3)
    # the cached tokens are computed already: each computes only the rest of its prompt
    assert CacheAwarePolicy().schedule(view).num_scheduled_tokens == {
        "hot": 16, "warm": 48, "warm2": 48,
    }  # fmt: skip


def test_fcfs_when_more_than_fcfs_above_wait():
    waiting = [cached("cold", 0.0, 0), cached("hot", 1.0, 48), cached("warm", 2.0, 16)]
    view = make_view(waiting=waiting, max_num_seqs=1)
    assert CacheAwarePolicy(fcfs_above=3).schedule(view).num_scheduled_tokens == {"hot": 16}
    assert CacheAwarePolicy(fcfs_above=2).schedule(view).num_scheduled_tokens == {"cold": 64}


def test_aging_puts_a_starved_request_first():
    waiting = [cached("cold", 0.0, 0), cached("hot", 2.5, 48)]
    view = dataclasses.replace(make_view(waiting=waiting, max_num_seqs=1), now_s=3.0)
    assert CacheAwarePolicy().schedule(view).num_scheduled_tokens == {"hot": 16}
    assert CacheAwarePolicy(max_wait_s=2.0).schedule(view).num_scheduled_tokens == {"cold": 64}


def test_bad_knobs():
    with pytest.raises(ValueError, match="fcfs_above"):
        CacheAwarePolicy(fcfs_above=-1)
    with pytest.raises(ValueError, match="max_wait_s"):
        CacheAwarePolicy(max_wait_s=0)


def test_on_a_small_cache_it_serves_prefix_sharers_before_the_cache_forgets(compose_cfg):
    """One seat, a KV cache of 14 blocks. Requests sharing a 128-token prefix with the first
    one alternate with unrelated ones. FCFS runs an unrelated request between two sharers, whose
    blocks evict part of the prefix; cache_aware runs the sharers while it is cached."""
    import numpy as np

    from harness.request import RequestSpec
    from harness.run import run

    rng = np.random.default_rng(0)
    prefix = tuple(rng.integers(0, 256, 128).tolist())

    def spec(i: int, prompt) -> RequestSpec:
        return RequestSpec(f"r{i}", i * 1e-3, tuple(prompt), max_output_tokens=8)

    specs = [spec(0, prefix)]
    for i in range(1, 9):
        own = rng.integers(0, 256, 48 if i % 2 == 0 else 160).tolist()
        specs.append(spec(i, prefix + tuple(own) if i % 2 == 0 else own))
    base = ("engine=cpu", "model=tiny", "logger=none", "engine.progress=false",
            "engine.clock=virtual", "budget.max_num_seqs=1", "budget.num_gpu_blocks=14",
            "budget.watermark=0")  # fmt: skip
    hit = {}
    for name in ("fcfs", "cache_aware"):
        result = run(compose_cfg(*base, f"policy={name}"), None, specs=specs)
        assert result.summary["num_finished"] == len(specs)
        hit[name] = result.summary["prefix_cache_hit_rate"]
        order = list(result.requests.sort_values("first_scheduled_s").request_id)
        if name == "cache_aware":  # the sharers (even ids) first, then the others
            assert order[:5] == ["r0", "r2", "r4", "r6", "r8"]
    assert hit["cache_aware"] > hit["fcfs"] + 0.1
