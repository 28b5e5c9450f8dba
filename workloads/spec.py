"""What a workload produces: one immutable request spec per request. It lives in `workloads`
(which imports nothing from `harness`); the engine imports it from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload: what arrives, when, and how long its answer must be.

    A turn of a multi-turn session (workloads/sessions.py) also names its session, its position
    and its parent (the session's previous turn). The serving loop releases it only once the
    parent has finished, at the parent's finish + `think_time_s`, and when `history_tokens` > 0
    its prompt is then the parent's prompt + the parent's output ids + `prompt_ids` (this turn's
    new tokens only). The defaults describe an independent request: every other workload is
    unchanged."""

    request_id: str
    arrival_s: float  # seconds from the start of the run (a turn: its earliest possible arrival)
    prompt_ids: tuple[int, ...]
    max_output_tokens: int  # output length is forced to this (EOS is ignored)
    tenant: str = "default"
    priority: int = 0  # larger is more important
    slo_class: str | None = None  # a named latency class (e.g. "interactive"); policies map it
    session_id: str | None = None  # the conversation this request is a turn of
    turn: int = 0  # its position in the session, from 0
    parent_id: str | None = None  # released only after this request has finished
    think_time_s: float = 0.0  # from the parent's finish to this turn's arrival
    history_tokens: int = 0  # > 0: prompt_ids are the new tokens, after this many of history

    def __post_init__(self) -> None:
        if self.history_tokens < 0 or self.think_time_s < 0:
            raise ValueError(f"{self.request_id}: history_tokens and think_time_s must be >= 0")
        if self.history_tokens and self.parent_id is None:
            raise ValueError(f"{self.request_id}: history_tokens > 0 needs a parent_id")

    @property
    def extends_parent(self) -> bool:
        """Whether `prompt_ids` holds only the new tokens (the history comes at release)."""
        return self.history_tokens > 0

    @property
    def num_prompt_tokens(self) -> int:
        """The prompt's length as served (a follow-up turn's: history included)."""
        return self.history_tokens + len(self.prompt_ids)
