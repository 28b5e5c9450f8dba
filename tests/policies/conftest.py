"""Factories for policy tests: request views and scheduler views for unit tests, and a real
tiny-model engine on a manual clock for scripted scenarios."""

from __future__ import annotations

import functools

import pandas as pd
import pytest

from harness.models.config import preset_args
from policies.base import RequestView, SchedulerView
from tests.conftest import (
    ManualClock,
    make_engine,
    make_model,
    make_specs,
    serve_checking_invariants,
)

BLOCK_SIZE = 16


def make_request_view(
    request_id: str,
    arrival_s: float = 0.0,
    num_prompt_tokens: int = 32,
    num_output_tokens: int = 0,
    num_computed_tokens: int | None = None,
    max_output_tokens: int = 16,
    priority: int = 0,
    num_blocks: int | None = None,
    num_preemptions: int = 0,
) -> RequestView:
    """A request view. By default a waiting request (nothing computed); with outputs, a decode
    (everything but the last sampled token computed). Blocks default to what is computed."""
    num_tokens = num_prompt_tokens + num_output_tokens
    if num_computed_tokens is None:
        num_computed_tokens = num_tokens - 1 if num_output_tokens else 0
    if num_blocks is None:
        num_blocks = -(-num_computed_tokens // BLOCK_SIZE)
    return RequestView(
        request_id, arrival_s, priority, num_prompt_tokens, num_tokens, num_computed_tokens,
        num_output_tokens, max_output_tokens, num_blocks, num_preemptions,
    )  # fmt: skip


def make_decode(request_id: str, arrival_s: float = 0.0, **kw) -> RequestView:
    """A running request about to decode its next token."""
    return make_request_view(request_id, arrival_s, num_output_tokens=kw.pop("outputs", 4), **kw)


def make_view(
    waiting=(),
    running=(),
    swapped=(),
    num_free_blocks: int = 1000,
    num_total_blocks: int = 1000,
    num_free_cpu_blocks: int = 1000,
    watermark_blocks: int = 0,
    max_num_batched_tokens: int = 512,
    max_num_seqs: int = 16,
    max_model_len: int | None = 4096,
    starvation_threshold: int | None = None,
) -> SchedulerView:
    return SchedulerView(
        now_s=0.0, waiting=tuple(waiting), running=tuple(running), swapped=tuple(swapped),
        num_free_blocks=num_free_blocks, num_total_blocks=num_total_blocks,
        num_free_cpu_blocks=num_free_cpu_blocks, watermark_blocks=watermark_blocks,
        block_size=BLOCK_SIZE, max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs, max_model_len=max_model_len,
        starvation_threshold=starvation_threshold,
    )  # fmt: skip


def recording(policy):
    """Wrap `policy.schedule` so that every (view, decision) it sees is kept in `policy.log`,
    for scenario tests that check a rule on each step's decision."""
    schedule = policy.schedule
    policy.log = []

    def logged(view: SchedulerView):
        decision = schedule(view)
        policy.log.append((view, decision))
        return decision

    policy.schedule = logged
    return policy


@functools.cache
def tiny_model():
    """The `model=tiny` preset in fp32; std 0.1 spreads the logits so greedy ties cannot occur."""
    return make_model(preset_args("tiny"), seed=0, std=0.1)


def tiny_specs(prompt_lens, output_lens, arrivals=None, seed=0):
    return make_specs(prompt_lens, output_lens, vocab_size=2048, seed=seed, arrivals=arrivals)


def serve_scenario(policy, specs, block_size: int = BLOCK_SIZE, **engine_kw):
    """Replay `specs` through a real tiny-model engine on a manual clock (1 ms per clock read),
    checking the KV invariants after every step. Returns (engine, requests, steps) frames."""
    from harness.metrics import requests_frame

    engine = make_engine(
        policy, model=tiny_model(), block_size=block_size, clock=ManualClock(1e-3), **engine_kw
    )
    serve_checking_invariants(engine, specs)
    requests = requests_frame(engine.requests.values()).set_index("request_id")
    return engine, requests, pd.DataFrame(engine.recorder.steps)


@pytest.fixture
def scenario():
    return serve_scenario
