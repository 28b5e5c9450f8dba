"""A workload as columns: numpy arrays of arrival times and lengths, one entry per request.

Readers stream chunks of this shape; transformations take one and return one; only the final
selection becomes `RequestSpec` objects, so a large trace never costs a Python object per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RequestTable:
    """Requests as parallel arrays; `arrival_s` is None for a length-only trace."""

    arrival_s: np.ndarray | None  # [n] float64 seconds (absolute in a chunk, from 0 once built)
    prompt_tokens: np.ndarray  # [n] int32 (CSV readers) or int64
    output_tokens: np.ndarray  # [n] same dtype as prompt_tokens
    hash_ids: list[np.ndarray] | None = None  # Mooncake: per request, one id per prefix block
    tenants: np.ndarray | None = None  # [n] str (BurstGPT: the model), else "default"
    priorities: np.ndarray | None = None  # [n] int64, larger is more important, else 0
    slo_classes: np.ndarray | None = None  # [n] object: str or None, else None

    # The optional per-request attributes: column name -> the value of a request without one.
    ATTRIBUTES = {"tenants": "default", "priorities": 0, "slo_classes": None}

    def __len__(self) -> int:
        return len(self.prompt_tokens)

    def take(self, index: np.ndarray) -> RequestTable:
        """The rows at `index` (a boolean mask or integer positions), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return RequestTable(
            arrival_s=None if self.arrival_s is None else self.arrival_s[index],
            prompt_tokens=self.prompt_tokens[index],
            output_tokens=self.output_tokens[index],
            hash_ids=None if self.hash_ids is None else [self.hash_ids[i] for i in index],
            **{
                name: None if getattr(self, name) is None else getattr(self, name)[index]
                for name in self.ATTRIBUTES
            },
        )

    def head(self, n: int) -> RequestTable:
        return self.take(np.arange(min(n, len(self))))

    @staticmethod
    def concat(tables: list[RequestTable]) -> RequestTable:
        if not tables:
            return RequestTable.empty()
        first = tables[0]
        return RequestTable(
            arrival_s=None
            if first.arrival_s is None
            else np.concatenate([t.arrival_s for t in tables]),
            prompt_tokens=np.concatenate([t.prompt_tokens for t in tables]),
            output_tokens=np.concatenate([t.output_tokens for t in tables]),
            hash_ids=None if first.hash_ids is None else [h for t in tables for h in t.hash_ids],
            **{name: _concat_attribute(tables, name) for name in RequestTable.ATTRIBUTES},
        )

    def attribute(self, name: str) -> np.ndarray:
        """The attribute column `name` of `ATTRIBUTES`, filled with its default when absent."""
        column = getattr(self, name)
        return column if column is not None else _filled(name, len(self))

    @staticmethod
    def empty(timed: bool = True) -> RequestTable:
        z = np.zeros(0, dtype=np.int64)
        return RequestTable(np.zeros(0) if timed else None, z, z.copy())


def _filled(name: str, n: int) -> np.ndarray:
    default = RequestTable.ATTRIBUTES[name]
    if isinstance(default, int):
        return np.full(n, default, dtype=np.int64)
    return np.full(n, default, dtype=object if default is None else None)


def _concat_attribute(tables: list[RequestTable], name: str) -> np.ndarray | None:
    """The attribute over all `tables`; a table without it contributes its default."""
    if all(getattr(t, name) is None for t in tables):
        return None
    return np.concatenate([t.attribute(name) for t in tables])
