"""Length distributions for synthetic prompts and outputs: fixed, uniform, lognormal, empirical
(drawn from a trace file's lengths) and mixtures of these."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from workloads.errors import WorkloadError

KINDS = ("fixed", "uniform", "lognormal", "empirical", "mixture")


def sample_lengths(dist: Mapping, n: int, rng: np.random.Generator, key: str) -> np.ndarray:
    """`n` integer lengths >= 1 from `dist`:
    {kind: fixed, value} | {kind: uniform, min, max} | {kind: lognormal, mean, sigma, max} |
    {kind: empirical, path, column: prompt|output, format: auto} |
    {kind: mixture, components: [{weight, kind, ...}, ...]}."""
    kind = dist.get("kind")
    try:
        if kind == "fixed":
            out = np.full(n, int(dist["value"]))
        elif kind == "uniform":
            if int(dist["min"]) > int(dist["max"]):
                raise WorkloadError(f"{key}.min={dist['min']} is above {key}.max={dist['max']}")
            out = rng.integers(int(dist["min"]), int(dist["max"]) + 1, size=n)
        elif kind == "lognormal":
            sigma = float(dist["sigma"])
            mu = np.log(float(dist["mean"])) - sigma**2 / 2  # so that the mean is `mean`
            out = np.rint(rng.lognormal(mu, sigma, size=n))
            if dist.get("max") is not None:
                out = np.minimum(out, int(dist["max"]))
        elif kind == "empirical":
            out = rng.choice(empirical_lengths(dist, key), size=n, replace=True)
        elif kind == "mixture":
            out = _mixture(dist, n, rng, key)
        else:
            raise WorkloadError(f"{key}.kind={kind!r}: use one of {', '.join(KINDS)}")
    except KeyError as exc:
        raise WorkloadError(f"{key}.{exc.args[0]} is required for kind={kind}") from None
    return np.maximum(out, 1).astype(np.int64)


def empirical_lengths(dist: Mapping, key: str) -> np.ndarray:
    """Every prompt (or output) length of the trace at `dist['path']`."""
    from workloads.readers import read_trace, resolve_path

    column = dist.get("column", "prompt")
    if column not in ("prompt", "output"):
        raise WorkloadError(f"{key}.column={column!r}: use prompt or output")
    path = resolve_path(dist["path"])
    chunks = read_trace(path, dist.get("format", "auto"), allow_unsorted=True)
    lengths = np.concatenate(
        [c.prompt_tokens if column == "prompt" else c.output_tokens for c in chunks]
    )
    if len(lengths) == 0:
        raise WorkloadError("empty trace", path)
    return lengths


def _mixture(dist: Mapping, n: int, rng: np.random.Generator, key: str) -> np.ndarray:
    components = list(dist["components"])
    weights = np.array([float(c.get("weight", 1.0)) for c in components])
    if not components or (weights < 0).any() or weights.sum() <= 0:
        raise WorkloadError(f"{key}.components: need at least one, with weights >= 0")
    which = rng.choice(len(components), size=n, p=weights / weights.sum())
    out = np.empty(n, dtype=np.int64)
    for i, comp in enumerate(components):
        sub = {k: v for k, v in comp.items() if k != "weight"}
        idx = np.flatnonzero(which == i)
        out[idx] = sample_lengths(sub, len(idx), rng, f"{key}.components[{i}]")
    return out
