"""Static (request-level) batching: the baseline continuous batching is measured against, as a
static engine runs it (Hugging Face `generate` on a padded batch, FasterTransformer).

Rule: a batch of up to `batch_size` requests (default and cap: `max_num_seqs`) forms, in arrival
order, only when the previous batch has completely finished. Its limit is memory, not a per-step
token budget: it takes requests while KV for every slot at the batch's maximum length (longest
prompt + longest output) fits the free blocks, as a static engine reserves its [batch, max_len]
cache up front; so it never preempts (and never recomputes). The prefill is one pass over every
prompt plus a `Padding` row for its gap to the longest, however many tokens that is
(`max_num_batched_tokens` does not apply; the executor splits the pass into several device calls
only if its activation memory demands, the batch still starting and ending together). Then every
step each live request decodes one token and each finished slot runs a one-token `Padding` row at
the batch's current length, until the batch's longest output ends. The engine executes the
padding for real. Not modelled: a live row's attention reads its own context, not the padded one.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.base import Decision, Padding, Policy, RequestView, SchedulerView


@dataclass(frozen=True)
class _Batch:
    """The shape of the batch in flight: finished slots no longer show in the view."""

    num_slots: int
    padded_prompt_len: int


class StaticPolicy(Policy):
    """One padded batch at a time; no request joins or leaves it early."""

    bounded_by_token_budget = False  # one padded pass per batch, bounded by memory
    supports_prefix_caching = False  # a request-level engine (HF generate) caches no prefix

    def __init__(self, batch_size: int | None = None) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or null, got {batch_size}")
        self.batch_size = batch_size
        self._batch: _Batch | None = None

    def schedule(self, view: SchedulerView) -> Decision:
        if view.running:
            return self._decode_batch(view)
        members = self._admit_waiting(view)
        if not members:
            self._batch = None
            return Decision()
        return self._prefill_batch(members)

    def _admit_waiting(self, view: SchedulerView) -> list[RequestView]:
        """The next batch: waiting requests in arrival order while KV for every slot at the
        batch's maximum length fits the free blocks."""
        limit = min(self.batch_size or view.max_num_seqs, view.max_num_seqs)
        max_len = view.max_model_len or float("inf")
        members: list[RequestView] = []
        prompt_len = output_len = 0
        for r in view.waiting[:limit]:
            p, o = max(prompt_len, r.num_tokens), max(output_len, r.max_output_tokens)
            n, seq_len = len(members) + 1, p + o - 1  # the last output token is never stored
            blocks_per_slot = -(-seq_len // view.block_size)
            if seq_len > max_len:
                break
            if n * blocks_per_slot > view.num_free_blocks:
                break
            members.append(r)
            prompt_len, output_len = p, o
        return members

    def _prefill_batch(self, members: list[RequestView]) -> Decision:
        padded = max(r.num_tokens for r in members)
        self._batch = _Batch(num_slots=len(members), padded_prompt_len=padded)
        padding = tuple(Padding(padded - r.num_tokens, padded) for r in members)
        return Decision(
            num_scheduled_tokens={r.request_id: r.num_tokens for r in members},
            padding=tuple(p for p in padding if p.num_tokens > 0),
        )

    def _decode_batch(self, view: SchedulerView) -> Decision:
        """One token for every live slot; a one-token padding row for every finished slot."""
        if self._batch is None or not all(r.is_decode for r in view.running):
            raise RuntimeError("static batching: running requests outside a batch in flight")
        num_outputs = view.running[0].num_output_tokens  # the batch decodes in lockstep
        num_idle = self._batch.num_slots - len(view.running)
        idle = Padding(1, self._batch.padded_prompt_len + num_outputs)
        return Decision(
            num_scheduled_tokens={r.request_id: 1 for r in view.running},
            padding=(idle,) * num_idle,
        )
