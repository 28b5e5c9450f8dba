"""What a workload produces: one immutable request spec per request. It lives in `workloads`
(which imports nothing from `harness`); the engine imports it from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload: what arrives, when, and how long its answer must be."""

    request_id: str
    arrival_s: float  # seconds from the start of the run
    prompt_ids: tuple[int, ...]
    max_output_tokens: int  # output length is forced to this (EOS is ignored)
    tenant: str = "default"
    priority: int = 0  # larger is more important
    slo_class: str | None = None  # a named latency class (e.g. "interactive"); policies map it

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)
