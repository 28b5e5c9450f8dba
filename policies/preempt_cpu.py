"""Preemption to CPU memory (vLLM v0's `preemption_mode="swap"` over PagedAttention).

Rule: batching is chunked prefill (`ChunkedPrefillPolicy`, its victim rule included: prefills in
progress before decodes, then lowest priority, then latest arrival; `chunked: false` admits
whole prompts instead). A victim's KV blocks are copied to the CPU swap pool
(`budget.num_cpu_blocks`) instead of being dropped, so it resumes without recomputation.
Swapped requests come back in arrival order, before any new admission, each only in a step
whose seats, blocks (keeping the watermark) and token budget let it compute in the step it
returns. When the CPU pool cannot take a victim it falls back to recompute; that shows in the
records as a preemption without a swap (`num_preemptions - num_swaps` per request).
"""

from __future__ import annotations

from policies.chunked_prefill import ChunkedPrefillPolicy


class PreemptCpuPolicy(ChunkedPrefillPolicy):
    """Chunked prefill whose preemptions swap KV blocks to the CPU pool."""

    steady_decodes = True  # steady: every running request decodes, in importance order

    def __init__(
        self,
        chunked: bool = True,
        max_num_partial_prefills: int = 1,
        long_prefill_token_threshold: int = 0,
        preemption: str = "swap",
    ) -> None:
        super().__init__(max_num_partial_prefills, long_prefill_token_threshold, preemption)
        self.chunks_prefills = chunked
