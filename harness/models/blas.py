"""Which BLAS library runs each linear layer, by weight shape and row count, measured on the GPU.

torch sends a bf16 GEMM to cuBLAS or to cuBLASLt (`torch.backends.cuda.preferred_blas_library`),
and the two pick different kernels for the same shape. On an H100 neither wins everywhere: the
MLP's down projection at 128-384 rows took 54-89 µs through cuBLAS and 45-68 µs through
cuBLASLt, while cuBLAS was 8% faster on the gate/up projection at 8192 rows (`python -m
harness.bench gemm`). `BlasChoice.tune` times both for every linear shape of the model at a
ladder of row counts, each over several layers' weights so that they are read from HBM as in a
forward pass; `library` then answers for any row count with the choice of the next tuned count up.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
import torch.nn.functional as F

LIBRARIES = ("cublas", "cublaslt")


def row_ladder(max_rows: int) -> list[int]:
    """Tuned row counts: every 32 up to 512 (decode batches), then powers of two, then max."""
    ladder = [1, 8, 16] + list(range(32, 513, 32))
    r = 1024
    while r < max_rows:
        ladder.append(r)
        r *= 2
    return sorted({m for m in ladder if m < max_rows} | {max_rows})


class BlasChoice:
    """Per (out_features, in_features): tuned row counts and the faster library at each."""

    def __init__(self) -> None:
        self.table: dict[tuple[int, int], tuple[list[int], list[str]]] = {}
        self.timings: list[dict] = []  # what `tune` measured, for reports
        self._current: str | None = None

    def library(self, n: int, k: int, m: int) -> str | None:
        entry = self.table.get((n, k))
        if entry is None:
            return None
        rows, libs = entry
        return libs[min(bisect.bisect_left(rows, m), len(rows) - 1)]

    def linear(self, x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
        lib = self.library(layer.out_features, layer.in_features, x.shape[0])
        if lib is not None and lib != self._current:
            torch.backends.cuda.preferred_blas_library(lib)
            self._current = lib
        return F.linear(x, layer.weight, layer.bias)

    @torch.inference_mode()
    def tune(self, groups: dict[str, Sequence[torch.nn.Linear]], max_rows: dict[str, int],
             copies: int = 8, reps: int = 3) -> None:  # fmt: skip
        """`groups`: name -> the layers that share one shape (up to `copies` of them are timed
        in turn); `max_rows`: name -> the most rows that layer sees in one step."""
        for name, layers in groups.items():
            layers = list(layers)[:copies]
            n, k = layers[0].out_features, layers[0].in_features
            w = layers[0].weight
            rows, libs = row_ladder(max_rows[name]), []
            for m in rows:
                x = torch.randn(m, k, device=w.device, dtype=w.dtype)
                times = {lib: self._time(lib, x, layers, reps) for lib in LIBRARIES}
                best = min(times, key=times.get)
                libs.append(best)
                self.timings.append({"linear": name, "n": n, "k": k, "m": m,
                                     **{f"{lib}_us": t * 1e6 for lib, t in times.items()}})  # fmt: skip
            self.table[(n, k)] = (rows, libs)
        torch.backends.cuda.preferred_blas_library("cublas")
        self._current = "cublas"

    @staticmethod
    def _time(lib: str, x: torch.Tensor, layers: list, reps: int) -> float:
        """Best-of-`reps` seconds per layer of one pass over `layers`."""
        torch.backends.cuda.preferred_blas_library(lib)
        for layer in layers:  # first use: library handles, kernel loading
            F.linear(x, layer.weight, layer.bias)
        best = float("inf")
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for layer in layers:
                F.linear(x, layer.weight, layer.bias)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3 / len(layers))
        return best


def model_groups(model) -> dict[str, list[torch.nn.Linear]]:
    """The model's linear layers by shape: each layer's four, and the LM head."""
    return {
        "qkv": [layer.self_attn.qkv_proj for layer in model.layers],
        "o": [layer.self_attn.o_proj for layer in model.layers],
        "gate_up": [layer.mlp.gate_up_proj for layer in model.layers],
        "down": [layer.mlp.down_proj for layer in model.layers],
        "lm_head": [model.lm_head],
    }
