"""What `harness.capacity` varies, and what it judges: the workload's load knob, and which
rejected requests count against the SLO.

The load knob: each workload class declares, from its config node, the key that sets its mean
arrival rate (`Workload.load_knob`): a synthetic workload's `arrival.rate`, a trace's
`target_rate`, a multi-tenant workload's `target_rate` (every tenant scaled by one factor). The
search probes that key; `--load-key` names another one (any number under `workload.`, e.g.
`tenants.0.arrival.rate` to load one tenant only). A workload that declares none, or whose
arrival process has no single rate, fails before any probe with one line.

Rejections: a request rejected because it can never be served (longer than `max_model_len`, more
KV blocks than the cache has, an empty prompt: `harness.decisions.rejection_reason`, which
depends on the model and the cache only) is rejected at every rate and by every policy. Counting
it as a miss would make every probe miss, so the SLO is judged over the servable requests and
the unservable ones are reported (per probe, and in the first line). A request shed by admission
control (reason `shed: ...`) was refused because of the load: it stays a miss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from workloads.base import LoadKnob
from workloads.errors import WorkloadError
from workloads.transforms import mean_rate

# The kinds of `rejection_reason` (the text before the first colon): never servable, whatever
# the rate or the policy. Any other rejection (admission control's `shed`) is a miss.
UNSERVABLE_KINDS = ("empty", "max_model_len", "kv_capacity")


@dataclass(frozen=True)
class Knob:
    """The resolved knob: the full key a probe sets, and the other keys it nulls."""

    key: str  # e.g. workload.target_rate
    unit: str
    what: str
    unset: tuple[str, ...] = ()

    def overrides(self, value: float) -> list[str]:
        """The Hydra overrides of a probe at `value`."""
        return [f"{self.key}={value}", *(f"{k}=null" for k in self.unset)]


def resolve_knob(workload: DictConfig, load_key: str | None = None) -> Knob:
    """The knob of the composed `workload` node; `load_key` (relative to `workload.`, or with
    it) replaces the workload's own. WorkloadError (one line) when there is none."""
    target = workload.get("_target_") if isinstance(workload, DictConfig) else None
    if not target:
        raise WorkloadError("workload has no _target_: no load knob to search")
    if load_key is not None:
        key = load_key.removeprefix("workload.")
        knob = LoadKnob(key, f"workload.{key} as given by --load-key", unit="workload units")
    else:
        from hydra.utils import get_class

        cls = get_class(target)
        if not hasattr(cls, "load_knob"):
            raise WorkloadError(f"{target} is not a Workload: no load knob to search")
        plain = OmegaConf.to_container(workload, resolve=False)
        knob = cls.load_knob(plain)
    if not isinstance(knob, LoadKnob):
        raise WorkloadError(f"{target}.load_knob() returned {knob!r}, not a LoadKnob")
    _check_key(workload, knob.key)
    return Knob(
        f"workload.{knob.key}", knob.unit, knob.what, tuple(f"workload.{k}" for k in knob.unset)
    )


def _check_key(workload: DictConfig, key: str) -> None:
    """The knob's key exists in the config (its value may be null) and does not hold a node."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(workload, parent) if parent else workload
    if not isinstance(node, (DictConfig, Mapping)) or name not in node:
        raise WorkloadError(
            f"workload.{key}: no such key in this workload's config, so its load cannot be "
            "scaled through it"
        )
    value = node[name]
    if OmegaConf.is_config(value):
        raise WorkloadError(f"workload.{key} is a node, not a number: it cannot be the load knob")


def unservable(rejection_reasons: Mapping[str, int]) -> int:
    """How many rejected requests could never be served (`UNSERVABLE_KINDS`)."""
    return sum(n for kind, n in rejection_reasons.items() if kind in UNSERVABLE_KINDS)


def mean_rate_req_s(requests) -> float | None:
    """The run's realised mean request rate, first to last arrival (None: unknown)."""
    try:
        arrivals = sorted(float(t) for t in requests["arrival_s"])
    except (KeyError, TypeError):
        return None
    return mean_rate(np.asarray(arrivals))
