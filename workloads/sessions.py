"""Multi-turn sessions: conversations whose every turn sends the whole history again.

Sessions start by an arrival process; each has a number of turns; each turn adds new user
tokens and asks for an output of a given length; the next turn arrives a think time after the
previous one finished. A turn's prompt is the previous turn's prompt + its output + the new
tokens, so its ids are known only when the previous turn has finished: the specs carry the new
tokens only (`RequestSpec.history_tokens` > 0) and the serving loop builds the whole prompt when
it releases the turn (harness/serve.py). Output lengths are forced, so every length is known
here: the history of a turn is exact, only its ids come at run time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from workloads.arrivals import sample_arrivals
from workloads.base import ARRIVALS, LENGTHS, TOKENS, LoadKnob, Workload
from workloads.errors import WorkloadError
from workloads.lengths import sample_lengths
from workloads.spec import RequestSpec
from workloads.synthetic import check_attributes
from workloads.table import RequestTable
from workloads.tokens import random_prompt
from workloads.transforms import check_clip_mode

THINK = 4  # the think times' random stream (base.py holds streams 0-3)
SECONDS_KINDS = ("fixed", "uniform", "exponential", "lognormal")


def sample_seconds(dist: Mapping, n: int, rng: np.random.Generator, key: str) -> np.ndarray:
    """`n` durations >= 0 in seconds from `dist`: {kind: fixed, value} | {kind: uniform, min,
    max} | {kind: exponential, mean} | {kind: lognormal, mean, sigma, max: null}."""
    if not isinstance(dist, Mapping):
        raise WorkloadError(f"{key} must be a mapping such as {{kind: exponential, mean: 2.0}}")
    kind = dist.get("kind")
    allowed = {"fixed": {"value"}, "uniform": {"min", "max"}, "exponential": {"mean"},
               "lognormal": {"mean", "sigma", "max"}}.get(kind)  # fmt: skip
    if allowed is None:
        raise WorkloadError(f"{key}.kind={kind!r}: use one of {', '.join(SECONDS_KINDS)}")
    unknown = sorted(set(dist) - allowed - {"kind"})
    if unknown:
        raise WorkloadError(f"{key}.{unknown[0]}: not a parameter of {kind} ({sorted(allowed)})")
    try:
        p = {k: None if v is None else float(v) for k, v in dist.items() if k != "kind"}
        if kind == "fixed":
            out = np.full(n, p["value"])
        elif kind == "uniform":
            if p["min"] > p["max"]:
                raise WorkloadError(f"{key}.min={p['min']} is above {key}.max={p['max']}")
            out = rng.uniform(p["min"], p["max"], size=n)
        elif kind == "exponential":
            out = rng.exponential(p["mean"], size=n)
        else:
            mu = np.log(p["mean"]) - p["sigma"] ** 2 / 2  # so that the mean is `mean`
            out = rng.lognormal(mu, p["sigma"], size=n)
            if p.get("max") is not None:
                out = np.minimum(out, p["max"])
    except KeyError as exc:
        raise WorkloadError(f"{key}.{exc.args[0]} is required for kind={kind}") from None
    except (TypeError, ValueError) as exc:
        raise WorkloadError(f"{key}: {exc}") from None
    if n and (not np.isfinite(out).all() or out.min() < 0):
        raise WorkloadError(f"{key}: durations must be finite and >= 0")
    return out


@dataclass
class SessionLayout:
    """Per row of the workload's table: which session and turn it is, its parent row (-1 for a
    first turn), its think time, its new tokens (a first turn: all of them, the shared system
    prompt's included) and how many of those are the system prompt."""

    session: np.ndarray
    turn: np.ndarray
    parent: np.ndarray
    think_s: np.ndarray
    new_tokens: np.ndarray
    system_tokens: np.ndarray


class SessionWorkload(Workload):
    """`num_sessions` conversations. `arrival`: the sessions' start times (as in
    `workloads.arrivals`); `turns`: turns per session, `prompt_len`: new user tokens per turn,
    `output_len`: output tokens per turn (length distributions of `workloads.lengths`);
    `think_time`: seconds from a turn's last token to the next turn's arrival
    (`sample_seconds`); `system_prompt_len`: a prefix every session's first turn shares.

    `clip` applies to first turns as to any request (truncate, drop the session, or none);
    a later turn whose history + output would exceed max_model_len ends its session there
    (with `clip=none` it is kept, and the engine rejects it). Table rows, and the request ids
    r000000, r000001, ..., follow the turns' earliest possible arrivals (session start + the
    think times before it, as if serving took no time)."""

    def __init__(
        self,
        num_sessions: int,
        arrival: Mapping,
        turns: Mapping,
        prompt_len: Mapping,
        output_len: Mapping,
        think_time: Mapping,
        system_prompt_len: int = 0,
        clip: str = "truncate",
        seed_offset: int = 0,
        tenant: str = "default",
        priority: int = 0,
        slo_class: str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_sessions", num_sessions),
            ("system_prompt_len", system_prompt_len),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise WorkloadError(f"workload.{name} must be an integer, got {value!r}")
        if num_sessions < 1:
            raise WorkloadError(f"workload.num_sessions must be >= 1, got {num_sessions}")
        if system_prompt_len < 0:
            raise WorkloadError(f"workload.system_prompt_len must be >= 0, got {system_prompt_len}")
        for name, value in (("arrival", arrival), ("turns", turns), ("prompt_len", prompt_len),
                            ("output_len", output_len)):  # fmt: skip
            if not isinstance(value, Mapping):
                raise WorkloadError(f"workload.{name} must be a mapping, got {value!r}")
        check_attributes(tenant, priority, slo_class)
        check_clip_mode(clip)
        self.num_sessions, self.arrival, self.turns = num_sessions, arrival, turns
        self.prompt_len, self.output_len, self.think_time = prompt_len, output_len, think_time
        self.system_prompt_len, self.clip, self.seed_offset = system_prompt_len, clip, seed_offset
        self.tenant, self.priority, self.slo_class = tenant, priority, slo_class
        self.layout: SessionLayout | None = None

    @classmethod
    def load_knob(cls, cfg: Mapping) -> LoadKnob:
        """`arrival.rate`: sessions per second (Poisson and gamma session arrivals); each session
        brings its turns, so the request rate is a multiple of it."""
        arrival = cfg.get("arrival") or {}
        process = arrival.get("process", "gamma") if isinstance(arrival, Mapping) else None
        if process not in ("poisson", "gamma"):
            raise WorkloadError(
                f"workload.arrival.process={process}: no single rate for the capacity search to "
                "scale (poisson and gamma session arrivals have workload.arrival.rate)"
            )
        return LoadKnob("arrival.rate", f"the {process} session arrival rate", unit="sessions/s")

    def _rng(self, seed: int, *stream: int) -> np.random.Generator:
        return np.random.default_rng([seed + self.seed_offset, *stream])

    def load(self, seed: int, max_model_len: int) -> RequestTable:
        n = self.num_sessions
        starts = sample_arrivals(self.arrival, n, self._rng(seed, ARRIVALS), "workload.arrival")
        num_turns = sample_lengths(self.turns, n, self._rng(seed, LENGTHS, 0), "workload.turns")
        total = int(num_turns.sum())
        user = sample_lengths(self.prompt_len, total, self._rng(seed, LENGTHS, 1),
                              "workload.prompt_len")  # fmt: skip
        output = sample_lengths(self.output_len, total, self._rng(seed, LENGTHS, 2),
                                "workload.output_len")  # fmt: skip
        think = sample_seconds(
            self.think_time, total, self._rng(seed, THINK), "workload.think_time"
        )
        stats = {"source": "synthetic sessions", "num_sessions": n, "num_turns_planned": total}
        stats.update(num_too_long=0, num_clipped=0, num_dropped=0, num_dropped_empty_prompt=0)
        stats.update(num_sessions_cut=0, num_turns_cut=0)
        rows: list[tuple] = []  # (arrival, session, turn, prompt, output, think, new, system)
        first = 0  # the session's first turn in the flat arrays
        for s in range(n):
            history, t = 0, float(starts[s])
            for k in range(int(num_turns[s])):
                j = first + k
                new, out = int(user[j]) + (self.system_prompt_len if k == 0 else 0), int(output[j])
                system = self.system_prompt_len if k == 0 else 0
                if k:
                    t += float(think[j])
                prompt = history + new
                if prompt + out > max_model_len:
                    stats["num_too_long"] += 1
                    if k and self.clip != "none":  # the history no longer fits: the session ends
                        stats["num_sessions_cut"] += 1
                        stats["num_turns_cut"] += int(num_turns[s]) - k
                        break
                    if self.clip == "drop":
                        stats["num_dropped"] += int(num_turns[s])
                        break
                    if self.clip == "truncate":
                        out = max(min(out, max_model_len - 1), 1)
                        prompt = new = min(prompt, max_model_len - out)
                        system = min(system, new)
                        stats["num_clipped"] += 1
                rows.append((t, s, k, prompt, out, float(think[j]) if k else 0.0, new, system))
                history = prompt + out
            first += int(num_turns[s])
        if not rows:
            raise WorkloadError(f"workload: no turn fits max_model_len={max_model_len}")
        cols = [np.array(c) for c in zip(*rows, strict=True)]
        order = np.lexsort((cols[2], cols[1], cols[0]))  # arrival, then session, then turn
        t, session, turn, prompt, out, think_s, new, system = (c[order] for c in cols)
        row_of = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(session, turn, strict=True))}
        parent = np.array(
            [row_of.get((int(a), int(b) - 1), -1) for a, b in zip(session, turn, strict=True)]
        )
        m = len(order)
        self.layout = SessionLayout(session, turn, parent, think_s, new, system)
        table = RequestTable(
            arrival_s=t.astype(np.float64),
            prompt_tokens=prompt.astype(np.int64),
            output_tokens=out.astype(np.int64),
            tenants=np.full(m, self.tenant),
            priorities=np.full(m, self.priority, dtype=np.int64),
            slo_classes=np.full(m, self.slo_class, dtype=object),
        )
        stats["num_turns"] = m
        stats["mean_turns_per_session"] = round(m / len(np.unique(session)), 3)
        self.stats = stats
        self._record_totals(table)
        return table

    def build(self, seed: int, vocab_size: int, max_model_len: int) -> list[RequestSpec]:
        """A spec per turn: a first turn's whole prompt; a later turn's new tokens only."""
        table = self.load(seed, max_model_len)
        lay = self.layout
        rng = self._rng(seed, TOKENS)
        system = random_prompt(self.system_prompt_len, vocab_size, self._rng(seed, TOKENS, 1))
        specs = []
        for i in range(len(table)):
            k, new, shared = int(lay.turn[i]), int(lay.new_tokens[i]), int(lay.system_tokens[i])
            ids = system[:shared] + random_prompt(new - shared, vocab_size, rng)
            parent = int(lay.parent[i])
            specs.append(RequestSpec(
                request_id=f"r{i:06d}", arrival_s=float(table.arrival_s[i]), prompt_ids=ids,
                max_output_tokens=int(table.output_tokens[i]), tenant=self.tenant,
                priority=self.priority, slo_class=self.slo_class,
                session_id=f"s{int(lay.session[i]):06d}", turn=k,
                parent_id=f"r{parent:06d}" if parent >= 0 else None,
                think_time_s=float(lay.think_s[i]),
                history_tokens=int(table.prompt_tokens[i]) - new if k else 0,
            ))  # fmt: skip
        return specs

    def reuse_segments(self, table: RequestTable):
        """For `workloads.describe.prefix_reuse`: per row, its prompt as segments (key, length)
        and what it adds to the history (its output), outputs counted as part of the history."""
        lay = self.layout
        history: dict[int, list] = {}
        for i in range(len(table)):
            s, k = int(lay.session[i]), int(lay.turn[i])
            new, shared = int(lay.new_tokens[i]), int(lay.system_tokens[i])
            if k == 0:
                prompt = [(("system",), shared)] if shared else []
            else:
                prompt = list(history[s])
            prompt.append((("user", s, k), new - shared))
            out = (("output", s, k), int(table.output_tokens[i]))
            history[s] = [*prompt, out]
            yield prompt, [out]
