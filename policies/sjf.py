"""Shortest job first by output length, with aging (SJF under a length predictor).

The job length is the request's output length: `oracle` reads the true one
(`RequestView.max_output_tokens`: outputs are forced to it, so this is the best any predictor
can do, an upper bound); `noisy` multiplies it by a lognormal error, `exp(noise * N(0, 1))`,
drawn once per request from (`noise_seed`, request id), so a request keeps its prediction across
steps and runs. SJF on predicted lengths is the idea of Qiu et al., "Efficient Interactive LLM
Serving with Proxy Model-based Sequence Length Prediction" (SSJF, AIOps 2024) and Fu et al.,
"Efficient LLM Scheduling by Learning to Rank" (NeurIPS 2024); both report lower mean latency
than FCFS, the more so the better the predictor ranks lengths.

Rule, with whole prompts (no chunking): running requests first, oldest first, preempting the
lowest-priority, latest-arrived one when the KV cache runs out (`preemption: recompute |
swap`); swapped requests come back before admissions, each only in a step where it computes.
Waiting requests are then admitted shortest predicted remaining output first (a request resumed
after a recompute counts only what it has left), while the budgets and the KV cache (keeping the
watermark) allow; the first that does not fit blocks those behind it; none in a step that
preempts. Aging: a request that has waited more than `max_wait_s` since its arrival goes ahead
of every one that has not, oldest first, so a long job cannot starve behind a stream of short
ones (its wait is bounded by `max_wait_s` plus the queue of older starved ones).
"""

from __future__ import annotations

import math
import random

from policies.base import RequestView, SchedulerView
from policies.fcfs import FcfsPolicy

PREDICTORS = ("oracle", "noisy")


class SjfPolicy(FcfsPolicy):
    """Whole prompts, shortest predicted output first; starved requests first past `max_wait_s`."""

    def __init__(
        self,
        predictor: str = "oracle",
        noise: float = 0.5,
        noise_seed: int = 0,
        max_wait_s: float = 5.0,
        preemption: str = "recompute",
    ) -> None:
        super().__init__(preemption)  # no victim protection: sjf's aging is in its admission
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {', '.join(PREDICTORS)}, not {predictor!r}")
        if noise < 0 or max_wait_s <= 0:
            raise ValueError("noise must be >= 0 and max_wait_s > 0")
        self.predictor, self.noise, self.noise_seed = predictor, noise, noise_seed
        self.admit_first_after_s = max_wait_s  # aging: waited this long, admitted first
        self._predicted: dict[str, float] = {}  # memo: a prediction is drawn once per request

    def _admission_order(self, view: SchedulerView) -> list[RequestView]:
        return sorted(view.waiting, key=lambda r: self._rank(view.now_s, r))

    def predicted_output_tokens(self, request: RequestView) -> float:
        """The predictor's output length for `request` (the true one for `oracle`)."""
        if self.predictor == "oracle" or self.noise == 0:
            return float(request.max_output_tokens)
        if request.request_id not in self._predicted:
            error = random.Random(f"{self.noise_seed}/{request.request_id}").gauss(0.0, 1.0)
            self._predicted[request.request_id] = request.max_output_tokens * math.exp(
                self.noise * error
            )
        return self._predicted[request.request_id]

    def _rank(self, now_s: float, request: RequestView) -> tuple:
        if now_s - request.arrival_s > self.admit_first_after_s:
            return (0, request.arrival_s, request.request_id)  # starved: oldest first
        remaining = self.predicted_output_tokens(request) - request.num_output_tokens
        return (1, max(remaining, 1.0), request.arrival_s, request.request_id)
