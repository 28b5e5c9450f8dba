"""Decision validation: a pure function of the policy's view and its decision.

The engine calls it on the view it gave the policy, before applying anything; the hypothesis
tests call it on random views with no engine at all. A broken bound raises `DecisionError`
naming the policy, the bound and the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from policies.base import Decision, Preemption, SchedulerView

if TYPE_CHECKING:
    from harness.request import Request


class DecisionError(RuntimeError):
    """A policy's decision broke a bound (token budget, max_num_seqs, KV blocks, a state rule)."""


class StallError(RuntimeError):
    """The policy scheduled nothing while work remains and nothing else can change the state."""


@dataclass(frozen=True)
class Limits:
    """The engine's bounds, the same for every policy of a run."""

    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    starvation_threshold: int | None = None  # preemptions after which a request is protected
    max_num_prefill_tokens: int | None = None  # prefill tokens per step (None: no separate cap)


def check_decision(
    view: SchedulerView,
    d: Decision,
    policy: str = "policy",
    bounded_by_token_budget: bool = True,
    step: int = 0,
) -> None:
    """Raise DecisionError unless `d` can be applied to the state `view` shows, as a whole."""

    def fail(bound: str, detail: str) -> DecisionError:
        return DecisionError(f"policy {policy} broke {bound} at step {step}: {detail}")

    running = {r.request_id: r for r in view.running}
    waiting = {r.request_id: r for r in view.waiting} if view.waiting else {}
    swapped = {r.request_id: r for r in view.swapped} if view.swapped else {}
    for rid in d.preempt:
        if rid not in running or rid in d.num_scheduled_tokens:
            raise fail("preemption", f"{rid!r} is not an unscheduled running request")
    for rid in d.swap_in:
        if rid not in swapped:
            raise fail("swap_in", f"{rid!r} is not swapped")
    if d.padding and any(p.num_tokens < 1 or p.context_len < p.num_tokens for p in d.padding):
        raise fail("padding", "each row needs 1 <= num_tokens <= context_len")
    if view.max_model_len and any(p.context_len > view.max_model_len for p in d.padding):
        raise fail("padding", f"context_len > max_model_len={view.max_model_len}")
    over = _over_token_budget(view, d, running, waiting, swapped, bounded_by_token_budget)
    if over:
        raise fail("budget.max_num_batched_tokens", over)
    over = _over_prefill_budget(view, d, running, waiting, swapped, bounded_by_token_budget)
    if over:
        raise fail("budget.max_num_prefill_tokens", over)
    need = sum(swapped[rid].num_blocks for rid in d.swap_in) if d.swap_in else 0
    admitted, bs = 0, view.block_size
    for rid, n in d.num_scheduled_tokens.items():
        r = running.get(rid)
        if r is None:
            r = waiting.get(rid) or (swapped.get(rid) if rid in d.swap_in else None)
            if r is None:
                raise fail("request state", f"{rid!r} cannot be scheduled (not live)")
            admitted += rid in waiting  # (a running request is in no other queue)
        computed = r.num_computed_tokens
        if not 1 <= n <= r.num_tokens - computed:
            raise fail("token count", f"{rid!r} given {n} tokens, has {r.num_uncomputed_tokens}"
                       " to compute")  # fmt: skip
        extra = -(-(computed + n) // bs) - r.num_blocks  # view.num_new_blocks(r, n)
        if extra > 0:
            need += extra
    num_seqs = len(running) - len(d.preempt) + len(d.swap_in) + admitted
    if num_seqs > view.max_num_seqs:
        raise fail("budget.max_num_seqs", f"{num_seqs} running > {view.max_num_seqs}")
    freed = sum(running[rid].num_blocks for rid in d.preempt) if d.preempt else 0
    if need > view.num_free_blocks + freed:
        raise fail("KV blocks", f"needs {need} GPU blocks, {view.num_free_blocks} free + "
                   f"{freed} freed")  # fmt: skip
    swap = (sum(running[rid].num_blocks for rid, k in d.preempt.items() if k is Preemption.SWAP)
            if d.preempt else 0)  # fmt: skip
    if swap > view.num_free_cpu_blocks:
        raise fail("CPU swap blocks", f"needs {swap}, {view.num_free_cpu_blocks} free")


def _over_token_budget(view, d, running, waiting, swapped, bounded: bool) -> str:
    """Why the step breaks `max_num_batched_tokens`, or "". Two exceptions keep every request
    servable by every policy: a policy not bound by the budget (static batching: one padded
    pass, bounded by memory), and one request's whole remaining computation run alone (a prompt
    longer than the budget under a policy that does not split prompts)."""
    total = sum(d.num_scheduled_tokens.values()) + (d.num_padding_tokens if d.padding else 0)
    if total <= view.max_num_batched_tokens or not bounded:
        return ""
    if len(d.num_scheduled_tokens) == 1 and not d.padding:
        ((rid, n),) = d.num_scheduled_tokens.items()
        r = running.get(rid) or waiting.get(rid) or swapped.get(rid)
        if r is not None and n == r.num_uncomputed_tokens:
            return ""
    return f"{total} tokens > {view.max_num_batched_tokens}"


def _over_prefill_budget(view, d, running, waiting, swapped, bounded: bool) -> str:
    """Why the step's prefill tokens (every row but a decode) break `max_num_prefill_tokens`, or
    "", with the same exceptions as the step budget (a lone whole computation, static)."""
    cap = view.max_num_prefill_tokens
    if cap is None or not bounded:
        return ""
    rows = [(running.get(rid) or waiting.get(rid) or swapped.get(rid), n)
            for rid, n in d.num_scheduled_tokens.items()]  # fmt: skip
    prefill = [(r, n) for r, n in rows if r is not None and not (n == 1 and r.is_decode)]
    total = sum(n for _, n in prefill)
    if total <= cap:
        return ""
    if len(prefill) == 1 and not d.padding and prefill[0][1] == prefill[0][0].num_uncomputed_tokens:
        return ""  # one whole prompt longer than the cap, as the step's only prefill
    return f"{total} prefill tokens > {cap}"


def rejection_reason(r: Request, max_model_len: int, num_gpu_blocks: int, block_size: int) -> str:
    """Why `r` can never be served, or "". Every reason depends on the model and the KV cache
    only, never on the policy: every policy of a comparison serves the same requests. A reason
    starts with its kind (`max_model_len: ...`) so that reasons can be counted."""
    total = r.num_prompt_tokens + r.spec.max_output_tokens
    if r.num_prompt_tokens < 1 or r.spec.max_output_tokens < 1:
        return "empty: empty prompt or max_output_tokens < 1"
    if total > max_model_len:
        return f"max_model_len: prompt + max output = {total} tokens > {max_model_len=}"
    need = -(-r.max_num_tokens // block_size)
    if need > num_gpu_blocks:
        return f"kv_capacity: needs {need} KV blocks, the cache has {num_gpu_blocks}"
    return ""
