"""Refit profiles from their measured points: after the model's features change, or to merge
calibrations of one model on one device (`python -m harness.calibrate --refit A.json [B.json
...] --out FILE`). No executor runs: the points are those the calibrations measured.

A feature a point does not hold (it was measured before the feature existed) is derived from
the ones it holds where the calibration grid makes that exact, else the refit refuses:
- `decode_max_ctx` (the longest decode row's context) = `decode_ctx / decode_rows`: the rows of
  a grid cell's decode steps share one context (a swap cell's two rows do not; those few
  points get their mean);
- the host's `host_mixed` = a step with prefill rows and decode rows (`mixed_decode > 0`).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from harness.config import ConfigError
from harness.sim_model import FEATURES, HOST_FEATURES

DERIVED = {
    "decode_max_ctx": lambda p: p["decode_ctx"] / p["decode_rows"] if p["decode_rows"] else 0.0,
    "host_mixed": lambda p: float(p["prefill_rows"] > 0 and p["mixed_decode"] > 0),
}


def points_of(profile: dict) -> list[dict]:
    cols = profile["points"]["columns"]
    return [dict(zip(cols, row, strict=True)) for row in profile["points"]["rows"]]


def refit(paths: list[str], name: str | None = None) -> dict:
    """One profile from the points of `paths` (the first one's device, model, KV capacity and
    settings; the others must have the same device, model shape and dtype)."""
    from harness.calibrate import fit_profile

    profiles = [json.loads(Path(p).read_text()) for p in paths]
    first = profiles[0]
    points, derived, offset = [], set(), 0
    for path, prof in zip(paths, profiles, strict=True):
        for key in ("device", "dtype"):
            if prof[key] != first[key]:
                raise ConfigError(f"--refit: {path} was measured with {key} {prof[key]!r}, "
                                  f"{paths[0]} with {first[key]!r}")  # fmt: skip
        if prof["model"]["args"] != first["model"]["args"]:
            raise ConfigError(f"--refit: {path} is a profile of another model than {paths[0]}")
        pts = points_of(prof)
        for p in pts:
            host = (f"host_{h}" for h in HOST_FEATURES) if "host_before_s" in p else ()
            for f in (*FEATURES, *host):
                if f not in p:
                    if f not in DERIVED:
                        raise ConfigError(f"--refit: the points of {path} lack {f!r}, which "
                                          "cannot be derived: calibrate again")  # fmt: skip
                    p[f] = DERIVED[f](p)
                    derived.add(f)
            p["cell"] += offset  # cells stay distinct (held-out cells are every fourth)
        offset = max(p["cell"] for p in pts) + 1 if pts else offset
        points += pts
    pipelined = bool(first["settings"].get("async_scheduling"))
    out = {k: v for k, v in first.items() if k not in ("points",)}
    out.update(fit_profile(points, pipelined))
    out["name"] = name
    out["refit"] = {
        "from": [{"file": Path(p).name, "commit": prof.get("commit"), "date": prof.get("date"),
                  "command": prof.get("command"), "num_points": len(prof["points"]["rows"])}
                 for p, prof in zip(paths, profiles, strict=True)],
        "derived_features": sorted(derived),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    cols = ["cell", *FEATURES, "duration_s", "device_time_s", "swap_time_s", "swap_out_blocks",
            "swap_in_blocks", *(f"host_{h}" for h in HOST_FEATURES), "host_before_s",
            "host_after_s"]  # fmt: skip
    cols = [c for c in cols if all(c in p for p in points)]
    out["points"] = {"columns": cols, "rows": [[p[c] for c in cols] for p in points]}
    return out
