"""Engine-level admission control (`admission.*`, off by default): refuse at arrival the work
that cannot be finished in time, instead of queueing it. A refused request is rejected with
reason `shed: ...`, counted as rejected everywhere and as a goodput miss.

Two rules, either or both:
- `max_waiting`: at most this many requests waiting; one arriving to a full queue is shed.
- `max_predicted_wait_s`: shed a request whose predicted queueing delay exceeds this (set it to
  the TTFT SLO, `admission.max_predicted_wait_s=${slo.ttft_s}`). The prediction is the number
  of requests that must start before it (those waiting, and itself) times the mean gap between
  the engine's last `window` admissions (first schedulings): whatever limits admissions (seats,
  KV blocks, compute), the recent admission rate shows it. Until two admissions are seen it
  admits. It predicts a typical wait, not a tail: to hold the P99 TTFT under the SLO set the
  bound below it (0.7 x the SLO held it in tests/harness/test_admission.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.request import Request


class Admission:
    """Decides at arrival; the engine feeds it each step's prefill tokens and duration."""

    def __init__(
        self,
        max_waiting: int | None = None,
        max_predicted_wait_s: float | None = None,
        window: int = 32,
    ) -> None:
        if max_waiting is not None and max_waiting < 1:
            raise ValueError(f"admission.max_waiting={max_waiting} must be >= 1 or null")
        if max_predicted_wait_s is not None and max_predicted_wait_s <= 0:
            raise ValueError(f"admission.max_predicted_wait_s={max_predicted_wait_s} must be > 0")
        self.max_waiting, self.max_predicted_wait_s = max_waiting, max_predicted_wait_s
        self.admitted_s: deque[float] = deque(maxlen=window)  # times of the last admissions

    @property
    def enabled(self) -> bool:
        return self.max_waiting is not None or self.max_predicted_wait_s is not None

    def on_admit(self, now_s: float) -> None:
        """A request was scheduled for the first time."""
        self.admitted_s.append(now_s)

    @property
    def admission_gap_s(self) -> float | None:
        """Mean seconds between the recent admissions (None before two)."""
        if len(self.admitted_s) < 2:
            return None
        return (self.admitted_s[-1] - self.admitted_s[0]) / (len(self.admitted_s) - 1)

    def shed_reason(self, waiting: Iterable[Request]) -> str:
        """Why a request arriving now, behind `waiting`, is shed, or "" to admit it."""
        if not self.enabled:
            return ""
        num_waiting = sum(1 for _ in waiting)
        if self.max_waiting is not None and num_waiting >= self.max_waiting:
            return f"shed: {num_waiting} waiting >= admission.max_waiting={self.max_waiting}"
        gap_s = self.admission_gap_s
        if self.max_predicted_wait_s is not None and gap_s is not None:
            wait_s = (num_waiting + 1) * gap_s
            if wait_s > self.max_predicted_wait_s:
                return (
                    f"shed: predicted queueing delay {wait_s:.3f} s > "
                    f"admission.max_predicted_wait_s={self.max_predicted_wait_s}"
                )
        return ""
