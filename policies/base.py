"""The policy interface: a read-only view of the engine in, a pure-data decision out."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


class Preemption(enum.Enum):
    SWAP = "swap"  # KV blocks copied to the CPU pool; resumes where it stopped
    RECOMPUTE = "recompute"  # KV blocks dropped; prompt + outputs recomputed on resumption


@dataclass(frozen=True, slots=True)
class RequestView:
    """A snapshot of one request, as a policy may see it."""

    request_id: str
    arrival_s: float
    priority: int  # larger is more important
    num_prompt_tokens: int
    num_tokens: int  # prompt + outputs so far
    num_computed_tokens: int  # tokens whose K/V are cached
    num_output_tokens: int
    max_output_tokens: int
    num_blocks: int  # KV blocks held (on the GPU, or on the CPU when swapped)
    num_preemptions: int
    tenant: str = "default"  # who sent it (fairness policies serve tenants, not requests)
    # prefix caching, a waiting request only: its tokens found in the cache now (block-aligned,
    # never its last token). They are already counted in num_computed_tokens, not in
    # num_blocks: admitting it takes ceil((computed + n) / block_size) blocks, as for any
    # other request (docs/prefix_caching.md). 0 for running and swapped requests.
    num_cached_tokens: int = 0
    slo_class: str | None = None  # its latency class (RequestSpec.slo_class), e.g. "interactive"

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_decode(self) -> bool:
        """Next step computes exactly the last sampled token."""
        return self.num_output_tokens > 0 and self.num_uncomputed_tokens == 1

    @property
    def num_remaining_output_tokens(self) -> int:
        return self.max_output_tokens - self.num_output_tokens


@dataclass(frozen=True)
class SchedulerView:
    """Everything a policy may read at a step boundary. Queues are in engine order:
    `waiting` in arrival order with recompute-preempted requests at the front,
    `running` in admission order, `swapped` in swap-out order."""

    now_s: float
    waiting: tuple[RequestView, ...]
    running: tuple[RequestView, ...]
    swapped: tuple[RequestView, ...]
    num_free_blocks: int  # GPU KV blocks
    num_total_blocks: int
    num_free_cpu_blocks: int  # CPU swap pool
    watermark_blocks: int  # admissions of new requests should leave this many blocks free
    block_size: int
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int | None = None  # longest sequence (prompt + outputs) a row may reach
    # requests preempted this many times are starving: victims only when nothing else is left
    starvation_threshold: int | None = None
    # prefill tokens (anything but a decode) per step, within max_num_batched_tokens; None: no cap
    max_num_prefill_tokens: int | None = None
    # prefix caching: free blocks that still hold a cached prefix (within num_free_blocks,
    # which counts a block shared by k running requests k times as used)
    num_evictable_blocks: int = 0

    def num_new_blocks(self, request: RequestView, num_new_tokens: int) -> int:
        """GPU blocks `request` must gain to compute `num_new_tokens` more tokens."""
        total = request.num_computed_tokens + num_new_tokens
        return max(0, -(-total // self.block_size) - request.num_blocks)


@dataclass(frozen=True)
class Padding:
    """A dummy sequence executed and discarded: `num_tokens` query tokens attending to
    `context_len` positions (static batching's padded prompt rows and idle decode slots).
    Its K/V are not stored and it holds no blocks; it costs what such a row really costs."""

    num_tokens: int
    context_len: int


@dataclass(frozen=True)
class Decision:
    """A policy's output for one step. Pure data; the engine validates and applies it."""

    # request id -> tokens to compute this step (a prefill chunk, a whole prompt, or 1 decode)
    num_scheduled_tokens: dict[str, int] = field(default_factory=dict)
    # running request id -> how it is preempted before the step runs
    preempt: dict[str, Preemption] = field(default_factory=dict)
    # swapped request ids whose blocks come back to the GPU this step (before the batch runs)
    swap_in: tuple[str, ...] = ()
    # dummy rows executed and discarded (static batching's pad rows and idle slots)
    padding: tuple[Padding, ...] = ()

    @property
    def num_padding_tokens(self) -> int:
        return sum(p.num_tokens for p in self.padding)


class Policy(ABC):
    """An iteration-level scheduling policy. `schedule` must not mutate anything it is given."""

    #: Whether the policy may split a prompt over several steps. One that does not computes a
    #: prompt (or a recompute) whole: if that is longer than `max_num_batched_tokens`, the engine
    #: lets it run alone in a step of its own (counted as an oversized step), never rejects it.
    chunks_prefills: bool = False
    #: Whether steps are bound by `max_num_batched_tokens`. Static batching is not: a static
    #: engine runs its whole padded batch in one pass, bounded by memory (the KV blocks).
    bounded_by_token_budget: bool = True
    #: Whether the engine may serve a waiting request's cached prefix from the prefix cache
    #: (`engine.enable_prefix_caching`): its `num_computed_tokens` may then start above 0.
    #: Static batching models a request-level engine that caches nothing.
    supports_prefix_caching: bool = True
    #: Whether the policy's decision in a steady decode state (nothing waiting or swapped, every
    #: running request a decode, the blocks of their next tokens within the free ones) is always
    #: the same: every running request computes its one token, nothing is preempted, in an order
    #: that depends only on which requests run (not on the time, their lengths or the blocks),
    #: and `schedule` keeps no state that its calls update. On a modelled clock the engine then
    #: applies the policy's last such decision again while the running requests stay the same,
    #: without asking it (`engine.replay_steady_decodes`; the same result, faster). A class
    #: declares it for itself: a subclass does not inherit it (it may change the rule).
    steady_decodes: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def schedule(self, view: SchedulerView) -> Decision:
        """Decide which requests compute how many tokens this step, and who is preempted."""
