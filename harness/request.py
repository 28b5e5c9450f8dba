"""Requests as the engine tracks them: the immutable spec from a workload and its mutable state."""

from __future__ import annotations

import enum
import hashlib
from array import array
from dataclasses import dataclass, field

from workloads.spec import RequestSpec

__all__ = ["Request", "RequestSpec", "RequestStatus", "workload_fingerprint"]


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # arrived, not yet (or no longer, after a recompute preemption) on the GPU
    RUNNING = "running"  # holds GPU KV blocks
    SWAPPED = "swapped"  # KV blocks live in the CPU swap pool
    FINISHED = "finished"
    REJECTED = "rejected"  # refused at arrival (can never fit); `reason` says why
    ABORTED = "aborted"  # ended by the run stopping early (interrupt, fault)

    @property
    def is_done(self) -> bool:
        return self in (RequestStatus.FINISHED, RequestStatus.REJECTED, RequestStatus.ABORTED)


@dataclass
class Request:
    """A request's state inside the engine. Only the engine mutates it."""

    spec: RequestSpec
    status: RequestStatus = RequestStatus.WAITING
    output_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache (GPU or swapped)
    token_times_s: list[float] = field(default_factory=list)  # one per output token
    first_scheduled_s: float | None = None
    finish_s: float | None = None
    num_preemptions: int = 0
    num_swaps: int = 0
    swap_time_s: float = 0.0  # its share of the swap copies' time (out and in)
    reason: str = ""
    num_cached_tokens: int = 0  # prompt tokens taken from the prefix cache at first admission
    # prefix caching: keys of its full blocks, computed once (harness/prefix_cache.py)
    block_keys: list = field(default_factory=list, repr=False)

    @property
    def request_id(self) -> str:
        return self.spec.request_id

    @property
    def arrival_s(self) -> float:
        return self.spec.arrival_s

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.spec.prompt_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens: what a full recompute would have to process."""
        return len(self.spec.prompt_ids) + len(self.output_ids)

    @property
    def max_num_tokens(self) -> int:
        """The longest this request can grow (prompt + every output token but the last)."""
        return len(self.spec.prompt_ids) + self.spec.max_output_tokens - 1

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    def token_id_at(self, index: int) -> int:
        n = len(self.spec.prompt_ids)
        return self.spec.prompt_ids[index] if index < n else self.output_ids[index - n]

    def token_ids(self, start: int, stop: int) -> list[int]:
        """Token ids of positions [start, stop) over prompt + output."""
        n = len(self.spec.prompt_ids)
        if stop <= n:
            return list(self.spec.prompt_ids[start:stop])
        if start >= n:
            return self.output_ids[start - n : stop - n]
        return list(self.spec.prompt_ids[start:]) + self.output_ids[: stop - n]


def workload_fingerprint(specs) -> str:
    """A short hash of the request specs (ids, arrival times, prompt ids, output lengths, tenant,
    priority, SLO class), order-independent: two runs with the same fingerprint served the same requests."""
    digest = hashlib.sha256()
    for s in sorted(specs, key=lambda s: s.request_id):
        digest.update(
            repr(
                (
                    s.request_id,
                    float(s.arrival_s),
                    s.max_output_tokens,
                    s.tenant,
                    s.priority,
                    s.slo_class,
                )
            ).encode()
        )
        digest.update(array("q", s.prompt_ids).tobytes())
    return digest.hexdigest()[:16]
