"""Engine-level admission control (`admission.*`, off by default): refuse at arrival the work
that cannot be finished in time, instead of queueing it. A refused request is rejected with
reason `shed: ...`, counted as rejected everywhere and as a goodput miss.

Two rules, either or both:
- `max_waiting`: at most this many requests waiting; one arriving to a full queue is shed.
- `max_predicted_wait_s`: shed a request whose predicted queueing delay exceeds this (set it to
  the TTFT SLO, `admission.max_predicted_wait_s=${slo.ttft_s}`). The prediction is the prompt
  tokens waiting ahead of it, its own included, over the prefill rate the engine measured (an
  exponential moving average of prefill tokens per second of the steps so far); before any
  prefill step has been measured it admits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.records import StepRecord
    from harness.request import Request


class Admission:
    """Decides at arrival; the engine feeds it each step's prefill tokens and duration."""

    def __init__(
        self,
        max_waiting: int | None = None,
        max_predicted_wait_s: float | None = None,
        smoothing: float = 0.2,
    ) -> None:
        if max_waiting is not None and max_waiting < 1:
            raise ValueError(f"admission.max_waiting={max_waiting} must be >= 1 or null")
        if max_predicted_wait_s is not None and max_predicted_wait_s <= 0:
            raise ValueError(f"admission.max_predicted_wait_s={max_predicted_wait_s} must be > 0")
        self.max_waiting, self.max_predicted_wait_s = max_waiting, max_predicted_wait_s
        self.smoothing = smoothing
        self.prefill_tok_s: float | None = None  # measured prefill rate

    @property
    def enabled(self) -> bool:
        return self.max_waiting is not None or self.max_predicted_wait_s is not None

    def on_step(self, record: StepRecord) -> None:
        """Update the measured prefill rate with a recorded step."""
        if record.num_prefill_tokens <= 0 or record.duration_s <= 0:
            return
        rate = record.num_prefill_tokens / record.duration_s
        old = self.prefill_tok_s
        self.prefill_tok_s = rate if old is None else old + self.smoothing * (rate - old)

    def shed_reason(self, waiting: Iterable[Request], prompt_tokens: int) -> str:
        """Why a request of `prompt_tokens` arriving now, behind `waiting`, is shed, or ""."""
        if not self.enabled:
            return ""
        waiting = list(waiting)
        num_waiting = len(waiting)
        waiting_prompt_tokens = sum(r.num_uncomputed_tokens for r in waiting)
        if self.max_waiting is not None and num_waiting >= self.max_waiting:
            return f"shed: {num_waiting} waiting >= admission.max_waiting={self.max_waiting}"
        if self.max_predicted_wait_s is not None and self.prefill_tok_s:
            wait_s = (waiting_prompt_tokens + prompt_tokens) / self.prefill_tok_s
            if wait_s > self.max_predicted_wait_s:
                return (
                    f"shed: predicted queueing delay {wait_s:.3f} s > "
                    f"admission.max_predicted_wait_s={self.max_predicted_wait_s}"
                )
        return ""
