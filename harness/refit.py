"""Refit profiles from their measured points: after the model's features change, or to merge
calibrations of one model on one device (`python -m harness.calibrate --refit A.json [B.json
...] --out FILE`). No executor runs: the points are those the calibrations measured.

The calibrations merged must have been measured alike: the same device, dtype, model shape,
block size, pipelining and CUDA graphs, and all with the host's times or none.

A feature a point does not hold (it was measured before the feature existed) is derived from
the ones it holds where the calibration grid makes that exact, else the refit refuses:
- `decode_max_ctx` (the longest decode row's context) = `decode_ctx` over the decode rows (a
  mixed step's `mixed_decode`, else `decode_rows`): the rows of a grid cell's decode steps share
  one context, and the grid's batch sizes are CUDA-graph buckets, so no padded row counts (a
  swap cell's two rows do not share one; those few points get their mean);
- the host's `host_mixed` = a step with prefill rows and decode rows (`mixed_decode > 0`);
- the host's `host_piecewise` = 0 (measured before piecewise graphs existed: none replayed);
- the host's `host_piece_mixed` = `host_mixed` x `host_piecewise`, and that much leaves
  `host_mixed` (which then covered every mixed step, now the eager ones);
- `prefill_excess` = `prefill_tokens` beyond sim_model.PREFILL_KNEE;
- `prefill_roof` = `prefill_tokens` beyond sim_model.PREFILL_ROOF;
- `decode_roof` = `decode_rows` (a decode-only step's graph bucket, a mixed step's rows) plus
  `prefill_tokens` beyond sim_model.DECODE_ROOF, less `prefill_tokens` beyond it;
- `decode_tail_ctx` (sim_model) from `decode_max_ctx`, `decode_ctx` and the rows the kernel saw
  (a decode-only step's graph bucket, `decode_rows`; a mixed step's `mixed_decode`), with the
  split rule (`settings.decode_split`) of a calibration in the merge (they share the device
  and the model); 0 on a cpu profile.
Calibrations measured with piecewise CUDA graphs (`settings.piecewise_buckets`) merge with ones
measured without only where the two engines run a step alike: of the latter, the points the
former would replay as pieces (eager steps of at most the largest bucket's tokens) are dropped
and counted (`refit.dropped_points`); decode-graph steps and larger eager steps are kept.
Calibrations of two piecewise engines (`settings.piecewise_version`, cuda_graphs.py: how the
host runs a step between the pieces) merge likewise: the profile is the first one's engine, and
the other's piece-replayed points are dropped and counted.
Points measured before `settings.host_after_excludes_swaps` held the next step's swap in
`host_after_s`; the refit takes it out (the next point is the next step).
The load model (sim_model.LoadState) is fitted only when every point merged holds its `load`:
each is recomputed from its calibration's timeline (every step it ran, `timeline`) with this
version's load constants. A calibration from before has neither, and the merged profile then
has no load model.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import numpy as np

from harness.config import ConfigError
from harness.sim_model import (
    FEATURES,
    HOST_FEATURES,
    LOAD_CONSTANTS,
    PREFILL_KNEE,
    PREFILL_ROOF,
    DecodeSplit,
    decode_roof,
    loads,
)


def _decode_max_ctx(p: dict) -> float:
    rows = p["mixed_decode"] or p["decode_rows"]
    return p["decode_ctx"] / rows if rows else 0.0


def _piece_mixed(p: dict) -> float:
    """A point recorded before `piece_mixed`: its `host_mixed` covered every mixed step, so a
    piecewise one's moves here (and its `host_mixed` becomes 0)."""
    moved = float(p["host_mixed"] * p["host_piecewise"])
    p["host_mixed"] -= moved
    return moved


DERIVED = {
    "decode_max_ctx": _decode_max_ctx,
    "host_mixed": lambda p: float(p["prefill_rows"] > 0 and p["mixed_decode"] > 0),
    "host_piecewise": lambda p: 0.0,
    "host_piece_mixed": _piece_mixed,
    "prefill_excess": lambda p: max(0.0, p["prefill_tokens"] - PREFILL_KNEE),
    "prefill_roof": lambda p: max(0.0, p["prefill_tokens"] - PREFILL_ROOF),
    "decode_roof": lambda p: decode_roof(p["decode_rows"], p["prefill_tokens"]),
}


def _tail_ctx(split: DecodeSplit | None, buckets: list[int] | None):
    """decode_tail_ctx of an older point (see the module docstring)."""

    def derive(p: dict) -> float:
        if split is None or not p["decode_max_ctx"]:
            return 0.0
        graph = bool(buckets) and not p["prefill"] and p["decode_rows"] <= buckets[-1]
        rows = int(p["mixed_decode"] or p["decode_rows"])
        bound = split.graph_bound if graph else int(p["decode_max_ctx"])
        return split.tail(p["decode_max_ctx"], p["decode_ctx"], rows, bound)

    return derive


def derivations(split: DecodeSplit | None, buckets: list[int] | None) -> dict:
    """How each derivable feature is derived (the module docstring), given the calibrations'
    split rule and CUDA-graph buckets; apply them in FEATURES order (`fill_missing`)."""
    return {**DERIVED, "decode_tail_ctx": _tail_ctx(split, buckets)}


def fill_missing(point: dict, names, derive: dict, source: str = "a profile") -> set[str]:
    """Derive the features of `names` that `point` lacks, in order (one may use another);
    returns those derived. A feature that cannot be derived is an error."""
    done = set()
    for f in names:
        if f not in point:
            if f not in derive:
                raise ConfigError(f"--refit: the points of {source} lack {f!r}, which cannot be "
                                  "derived: calibrate again")  # fmt: skip
            point[f] = derive[f](point)
            done.add(f)
    return done


def _agreed(known: dict, describe, setting: str):
    """The one value that the calibrations of `known` (path: value, those that have one) all
    hold, or None when none has one; two different values are an error, each `describe`d."""
    if not known:
        return None
    first_path, first = next(iter(known.items()))
    for path, value in known.items():
        if value != first:
            raise ConfigError(f"--refit: {path} was measured with {describe(value)}, "
                              f"{first_path} with {describe(first)}: merge calibrations "
                              f"measured alike ({setting})")  # fmt: skip
    return first


def _split_of(paths: list[str], profiles: list[dict]) -> DecodeSplit | None:
    """The split rule of the calibrations merged (one for all: the same GPU, model and bound);
    a cuda one without any cannot be refitted."""
    rules = {path: DecodeSplit.of(prof["settings"]) for path, prof in zip(paths, profiles,
                                                                        strict=True)}  # fmt: skip
    known = {path: rule for path, rule in rules.items() if rule is not None}
    if known:
        return _agreed(known, lambda rule: f"decode_split {rule}", "settings.decode_split")
    if profiles[0]["settings"].get("kind") == "cuda":
        raise ConfigError(f"--refit: {', '.join(paths)} record no decode_split (measured before "
                          "decode_tail_ctx existed): merge them with a calibration of this "
                          "version on the same device")  # fmt: skip
    return None


# what calibrations merged must share: (where in the profile, the key)
ALIKE = (("", "device"), ("", "dtype"), ("kv_capacity", "block_size"),
         ("settings", "async_scheduling"), ("settings", "cuda_graphs"),
         ("settings", "decode_buckets"))  # fmt: skip
MODELS = ("step_model", "reference_model", "swap_model", "host_model", "load_model")


def points_of(profile: dict) -> list[dict]:
    cols = profile["points"]["columns"]
    return [dict(zip(cols, row, strict=True)) for row in profile["points"]["rows"]]


def reload_points(path: str, profile: dict, pts: list[dict]) -> bool:
    """Each point's load recomputed from its calibration's timeline with this version's load
    constants (sim_model.LOAD_CONSTANTS); False for a calibration without one."""
    timeline = profile.get("timeline")
    if not timeline or not pts or "device_start_s" not in pts[0]:
        return False
    t = np.array(timeline["rows"], dtype=np.float64)
    u = loads(t[:, 0], t[:, 1], t[:, 2], **LOAD_CONSTANTS)
    starts = np.array([p["device_start_s"] for p in pts])
    idx = np.minimum(np.searchsorted(t[:, 0], starts), len(t) - 1)
    if not np.allclose(t[idx, 0], starts, rtol=0, atol=1e-6):
        raise ConfigError(f"--refit: {path}: its points' device_start_s are not on its timeline")
    for p, j in zip(pts, idx, strict=True):
        p["load"] = round(float(u[j]), 5)
    return True


def _check_alike(paths: list[str], profiles: list[dict]) -> None:
    first = profiles[0]
    for path, prof in zip(paths[1:], profiles[1:], strict=True):
        for where, key in ALIKE:
            a, b = (
                (first.get(where, {}) if where else first),
                (prof.get(where, {}) if where else prof),
            )
            if a.get(key) != b.get(key):
                name = f"{where}.{key}" if where else key
                raise ConfigError(f"--refit: {path} was measured with {name} {b.get(key)!r}, "
                                  f"{paths[0]} with {a.get(key)!r}")  # fmt: skip
        if prof["model"]["args"] != first["model"]["args"]:
            raise ConfigError(f"--refit: {path} is a profile of another model than {paths[0]}")
    hosts = ["host_before_s" in prof["points"]["columns"] for prof in profiles]
    if any(hosts) and not all(hosts):
        without = [p for p, h in zip(paths, hosts, strict=True) if not h]
        raise ConfigError(
            f"--refit: {', '.join(without)} hold no host times, "
            f"{paths[hosts.index(True)]} does: merge calibrations measured alike"
        )


def _pieces_of(paths: list[str], profiles: list[dict]) -> list[int] | None:
    """The piecewise graphs' token buckets of the calibrations merged that had them (one list
    for all), or None."""
    known = {path: prof["settings"]["piecewise_buckets"] for path, prof in zip(paths, profiles,
             strict=True) if prof["settings"].get("piecewise_buckets")}  # fmt: skip
    return _agreed(known, lambda pieces: f"piecewise buckets up to {pieces[-1]} tokens",
                   "engine.piecewise_max_tokens")  # fmt: skip


def _piecewise_version(prof: dict) -> int | None:
    """The piecewise engine a calibration measured (cuda_graphs.PIECEWISE_VERSION; 1 for one
    with piecewise graphs from before the version was recorded), None without them."""
    s = prof["settings"]
    return s.get("piecewise_version") or (1 if s.get("piecewise_buckets") else None)


def _same_path(p: dict, pieces: list[int] | None) -> bool:
    """Whether a point measured without piecewise graphs ran as it would with `pieces`: a
    CUDA-graph decode, or an eager step larger than the largest bucket."""
    return not pieces or not p["host_eager"] or p["host_tokens"] > pieces[-1]


def refit(paths: list[str], name: str | None = None) -> dict:
    """One profile from the points of `paths` (the first one's KV capacity and settings)."""
    from harness.calibrate import fit_profile, unused_features

    profiles = [json.loads(Path(p).read_text()) for p in paths]
    _check_alike(paths, profiles)
    first = profiles[0]
    split = _split_of(paths, profiles)
    derive = derivations(split, first["settings"].get("decode_buckets"))
    pieces = _pieces_of(paths, profiles)
    # the piecewise engine of the profile: the first calibration's that had one
    version = next((v for v in map(_piecewise_version, profiles) if v is not None), None)
    points, derived, offset, dropped = [], set(), 0, {}
    reloaded = False
    for path, prof in zip(paths, profiles, strict=True):
        pts = points_of(prof)
        reloaded |= reload_points(path, prof, pts)
        host = "host_before_s" in prof["points"]["columns"]
        names = (*FEATURES, *(f"host_{h}" for h in HOST_FEATURES if host))
        for p in pts:
            derived |= fill_missing(p, names, derive, prof.get("name"))
            p["cell"] += offset  # cells stay distinct (held-out cells are every fourth)
        # the next point is the next step only before any is dropped
        if host and not prof["settings"].get("host_after_excludes_swaps"):
            for p, nxt in zip(pts, pts[1:], strict=False):
                if p["host_after_s"] is not None:
                    p["host_after_s"] -= nxt["swap_time_s"]
            derived.add("host_after_s")
        keep = None  # which points ran as the profile's engine runs them
        if pieces and not prof["settings"].get("piecewise_buckets"):
            if not host:
                raise ConfigError(
                    f"--refit: {path} holds no host times, so not which of its "
                    "steps ran eagerly: it cannot merge with piecewise graphs'"
                )
            keep = lambda p: _same_path(p, pieces)  # noqa: E731
        elif pieces and _piecewise_version(prof) != version:  # another piecewise engine
            keep = lambda p: not p["host_piecewise"]  # noqa: E731
        if keep is not None:
            kept = [p for p in pts if keep(p)]
            dropped[Path(path).name] = len(pts) - len(kept)
            pts = kept
        offset = max(p["cell"] for p in pts) + 1 if pts else offset
        points += pts
    pipelined = bool(first["settings"].get("async_scheduling"))
    # a point's load is recomputed from its own calibration's timeline; one calibration keeps
    # its timeline, a merge does not (its points keep their loads)
    drop = ("points", *MODELS, *(("timeline",) if len(paths) > 1 else ()))
    out = {k: v for k, v in first.items() if k not in drop}
    settings = {**first["settings"], "decode_split": dataclasses.asdict(split) if split else None,
                "piecewise_buckets": pieces, "piecewise_version": version}  # fmt: skip
    if reloaded:  # the loads the points now hold
        settings.update({f"load_{k}": v for k, v in LOAD_CONSTANTS.items()})
    out.update(fit_profile(points, pipelined, unused_features(settings)))
    out["settings"] = {**settings, "host_after_excludes_swaps": True}
    out["name"] = name
    out["refit"] = {
        "from": [{"file": Path(p).name, "commit": prof.get("commit"), "date": prof.get("date"),
                  "command": prof.get("command"), "num_points": len(prof["points"]["rows"])}
                 for p, prof in zip(paths, profiles, strict=True)],
        "derived_features": sorted(derived),
        "dropped_points": dropped,  # measured without piecewise graphs, on a path they change
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    cols = ["cell", *FEATURES, "duration_s", "device_time_s", "swap_time_s", "swap_out_blocks",
            "swap_in_blocks", *(f"host_{h}" for h in HOST_FEATURES), "host_before_s",
            "host_after_s", "device_start_s", "load"]  # fmt: skip
    cols = [c for c in cols if all(c in p for p in points)]
    out["points"] = {"columns": cols, "rows": [[p[c] for c in cols] for p in points]}
    return out
