"""`python -m harness.capacity [knobs] key=value ...`: the capacity of each policy.

Capacity is the highest arrival rate (req/s) at which P99 TTFT and P99 TPOT meet `slo.ttft_s`
and `slo.tpot_s` (the figure Sarathi-Serve and Vidur report). The rate is the workload's load
knob (`harness.load_knob`): `workload.arrival.rate` for a synthetic workload, `target_rate` for a
trace or a multi-tenant one. It is found by bisection over the rate; every probe is a real run
whose folder the report can read. Requests that could never be served (too long for the model
or the KV cache) are reported and left out of the verdict; shed requests are misses.

A probe whose run is cut short (Ctrl-C, SIGTERM) or ends incomplete (a stall, a device fault)
is neither a pass nor a miss: the search stops, marks its output incomplete and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from harness.load_knob import Knob, mean_rate_req_s, resolve_knob, unservable
from workloads.errors import WorkloadError

EXIT_PROBE_INCOMPLETE = 1  # a probe's run ended incomplete for a reason other than a signal


@dataclass
class Probe:
    rate: float  # req/s
    meets_slo: bool
    p99_ttft_s: float | None
    p99_tpot_s: float | None
    output_throughput_tok_s: float
    run_dir: str
    peak_in_system: int | None = None  # most requests in the system at once (None: unknown)
    # every request of the run was in the system at once: the engine served one batch, and a
    # pass then says nothing about a sustained rate
    burst: bool = False
    mean_rate_req_s: float | None = None  # the run's realised rate, first to last arrival
    num_unservable: int = 0  # rejected as never servable: left out of the verdict
    num_rejected: int = 0  # every rejection, the shed ones (misses) included


@dataclass
class Capacity:
    policy: str
    # highest probed rate meeting the SLO; None: not even `low`, or the search was stopped
    capacity_req_s: float | None
    bracket: tuple[float, float]  # capacity lies in [lo, hi) (hi = inf when `high` met it)
    status: str  # ok | below_low | at_least_high | incomplete (the search was stopped)
    probes: list[Probe] = field(default_factory=list)


class SearchStopped(Exception):
    """A probe was cut short: the search has no answer for its policy and goes no further."""

    def __init__(self, reason: str, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # interrupted | probe_incomplete | error
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal (130 for Ctrl-C), as a shell reports a process a signal ended."""
        return 128 + self.signum if self.signum else EXIT_PROBE_INCOMPLETE


def meets_slo(summary: dict, ttft_s: float | None, tpot_s: float | None) -> bool:
    """P99 TTFT and P99 TPOT within the SLO and every servable request finished: a request
    rejected as never servable (`harness.load_knob.UNSERVABLE_KINDS`) is left out, any other
    rejection (`shed`) is a miss. ValueError when no request at all is servable."""
    if not summary["complete"]:
        raise ValueError("a run cut short is neither a pass nor a miss")
    num_servable = summary["num_requests"] - unservable(summary.get("rejection_reasons") or {})
    if num_servable < 1:
        raise ValueError(
            f"none of the {summary['num_requests']} requests can be served (rejection reasons "
            f"{summary.get('rejection_reasons')}): nothing to judge the SLO on"
        )
    if summary["num_finished"] < num_servable:
        return False
    for key, bound in (("ttft_s", ttft_s), ("tpot_s", tpot_s)):
        p99 = summary[key]["p99"]
        if bound is not None and p99 is not None and p99 > bound:
            return False
    return True


def bisect_capacity(
    probe: Callable[[float], bool], low: float, high: float, iters: int, rel_tol: float
) -> tuple[float | None, tuple[float, float], str]:
    """(capacity, bracket, status) by geometric bisection: rates span orders of magnitude, and
    the midpoint of [1, 64] in log space (8) is a better guess than the arithmetic one.

    `high` is probed first and `low` last, only when no rate above it met the SLO: a probe's
    arrivals take num_requests / rate seconds, so `low` is the slowest probe by far, and a pass
    above it already implies one at it (the bisection assumes that the SLO is met below any
    rate that meets it)."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    if probe(high):
        return high, (high, math.inf), "at_least_high"
    lo, hi, met_above_low = low, high, False
    for _ in range(iters):
        if hi / lo - 1 <= rel_tol:
            break
        mid = math.sqrt(lo * hi)
        if probe(mid):
            lo, met_above_low = mid, True
        else:
            hi = mid
    if not met_above_low and not probe(low):
        return None, (0.0, low), "below_low"
    return lo, (lo, hi), "ok"


def max_probes(low: float, high: float, iters: int, rel_tol: float) -> int:
    """The most probes `bisect_capacity` makes: both bounds, and halvings of the log-width of
    the bracket until `rel_tol` or `iters` stops them."""
    num, log_width = 2, math.log(high / low)
    for _ in range(iters):
        if math.expm1(log_width) <= rel_tol:
            break
        num, log_width = num + 1, log_width / 2
    return num


def peak_in_system(requests) -> int | None:
    """The most requests arrived and not yet finished at one time (a request that never
    finished never leaves; a rejected one never entered); None when `requests` lacks
    `arrival_s` and `finish_s`."""
    try:
        if "status" in requests:
            requests = requests[requests["status"] != "rejected"]
        arrivals, finishes = list(requests["arrival_s"]), list(requests["finish_s"])
    except (KeyError, TypeError):
        return None
    # at one instant a finish counts before an arrival: (t, -1) sorts before (t, 1)
    events = sorted([(t, 1) for t in arrivals] + [(t, -1) for t in finishes if t == t])
    peak = num = 0
    for _, step in events:
        num += step
        peak = max(peak, num)
    return peak


def compose(overrides: Sequence[str]):
    """The run config for `overrides` and the chosen group names (as `python -m harness`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from harness.__main__ import CONF_DIR
    from harness.config import register

    register()  # the schema every key is checked against
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    names = {f"{g}_name": choices.get(g, "") for g in ("policy", "workload")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, names


def probe_defaults(cfg, overrides: Sequence[str]) -> list[str]:
    """Overrides the search adds to every probe where the user set none: no per-probe table,
    and no progress bar off a terminal (the search prints a line per probe instead).

    The workload is never shrunk behind the user's back, not even on the cpu engine where the
    search is slow: a probe of fewer requests gives a backlog less time to grow past
    slo.ttft_s, and reports a capacity that queueing limits too high (docs/sweeps.md)."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    extra = []
    if "logger.print_table" not in given and "print_table" in cfg.logger:
        extra.append("logger.print_table=false")
    if "engine.progress" not in given and not sys.stderr.isatty():
        extra.append("engine.progress=false")  # tqdm's carriage returns garble a log file
    return extra


class _SignalWatch:
    """SIGTERM raises KeyboardInterrupt as Ctrl-C does, and every SIGINT/SIGTERM received is
    recorded. `run()` turns a signal during serving into a partial result rather than an
    exception (and swaps in its own SIGTERM handler), so the signal is read from Python's
    wakeup fd, which sees it whoever's handler runs."""

    def __enter__(self) -> _SignalWatch:
        self.received: list[int] = []
        self._old_fd = self._old_term = None
        try:
            self._old_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        except ValueError:  # not the main thread: nothing to watch
            return self
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        return self

    def drain(self) -> list[int]:
        """The signals received so far (SIGINT, SIGTERM), oldest first."""
        if self._old_fd is not None:
            try:
                while data := self._r.recv(64):
                    self.received += [s for s in data if s in (signal.SIGINT, signal.SIGTERM)]
            except BlockingIOError:
                pass
        return self.received

    def __exit__(self, *exc) -> bool:
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
        if self._old_fd is not None:
            self.drain()
            signal.set_wakeup_fd(self._old_fd)
            self._r.close()
            self._w.close()
        return False


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


class Search:
    """The probes of one search, in order: the progress line per probe, and where the search
    stands when it is stopped (the probe under way, the policy being bisected)."""

    def __init__(
        self, overrides: Sequence[str], args, out_dir: Path, policies, signals,
        probe_defaults: Sequence[str] = (), knob: Knob | None = None,
    ) -> None:  # fmt: skip
        self.knob = knob or Knob("workload.arrival.rate", "req/s", "the arrival rate")
        self.overrides = [*overrides, *probe_defaults]  # a probe's: the user's, then the search's
        self.probe_defaults = list(probe_defaults)
        self.args, self.out_dir, self.signals = args, out_dir, signals
        self.policies = list(policies)
        bound = max_probes(args.low, args.high, args.iters, args.rel_tol)
        self.max_num_probes = len(self.policies) * bound
        self.num_probes = 0
        self.results: list[Capacity] = []  # finished policies, then the one being bisected
        self.under_way: dict | None = None  # the probe running now

    def run_all(self) -> None:
        for policy in self.policies:
            self.search_policy(policy)

    def search_policy(self, policy: str) -> Capacity:
        """Bisect one policy's capacity; each probe's run folder is `out_dir/<policy>/rate_<r>`."""
        r = Capacity(policy, None, (0.0, math.inf), "incomplete")
        self.results.append(r)  # listed, as incomplete, from its first probe on
        r.capacity_req_s, r.bracket, r.status = bisect_capacity(
            lambda rate: self.probe(r, rate),
            self.args.low, self.args.high, self.args.iters, self.args.rel_tol,
        )  # fmt: skip
        return r

    def head(self) -> str:
        """The progress line's start for the probe under way."""
        u = self.under_way
        return (
            f"probe {self.num_probes} of at most {self.max_num_probes}: policy {u['policy']}, "
            f"rate {u['rate']:.4g} {self.knob.unit} ->"
        )

    def probe(self, r: Capacity, rate: float) -> bool:
        """One run at `rate`; pass or miss, or SearchStopped when the run was cut short."""
        from harness.run import run

        self.num_probes += 1
        folder = self.out_dir / r.policy / f"rate_{rate:.4g}"
        self.under_way = {"policy": r.policy, "rate": rate, "run_dir": str(folder)}
        head = self.head()
        t0 = time.monotonic()
        knobs = [f"policy={r.policy}", *self.knob.overrides(rate)]
        cfg, names = compose([*self.overrides, *knobs])
        names["sweep_name"] = self.out_dir.name
        result = run(cfg, folder, names)
        s = result.summary
        if not s["complete"]:
            if sigs := self.signals.drain():
                raise SearchStopped("interrupted", signal.Signals(sigs[0]).name, sigs[0])
            raise SearchStopped("probe_incomplete", f"the run ended incomplete: {s['error']}")
        ok = meets_slo(s, cfg.slo.ttft_s, cfg.slo.tpot_s)
        ttft, tpot = s["ttft_s"]["p99"], s["tpot_s"]["p99"]
        requests = getattr(result, "requests", None)
        peak = peak_in_system(requests)
        num_unservable = unservable(s.get("rejection_reasons") or {})
        num_admitted = s["num_requests"] - s.get("num_rejected", 0)
        burst = peak is not None and peak >= num_admitted > 1
        probe = Probe(
            rate, ok, ttft, tpot, s["output_throughput_tok_s"], str(folder), peak, burst,
            mean_rate_req_s(requests), num_unservable, s.get("num_rejected", 0),
        )  # fmt: skip
        r.probes.append(probe)
        self.under_way = None
        lo = max([p.rate for p in r.probes if p.meets_slo], default=0.0)
        hi = min([p.rate for p in r.probes if not p.meets_slo], default=math.inf)
        _log(
            f"{head} {'pass' if ok else 'miss'} (P99 TTFT {_s(ttft)}, P99 TPOT {_s(tpot)}), "
            f"bracket [{lo:.4g}, {hi:.4g}) {self.knob.unit}, {time.monotonic() - t0:.0f} s"
        )
        if num_unservable:
            _log(
                f"  {num_unservable} of {s['num_requests']} requests can never be served "
                f"({_kinds(s)}): left out of the verdict"
            )
        if probe.num_rejected > num_unservable:
            _log(f"  {probe.num_rejected - num_unservable} requests shed: a miss")
        if ok and burst:
            _log(
                f"  burst: all {peak} requests were in the system at once, so this pass does "
                "not show a sustained rate; raise workload.num_requests"
            )
        return ok


def _kinds(summary: dict) -> str:
    from harness.load_knob import UNSERVABLE_KINDS

    reasons = summary.get("rejection_reasons") or {}
    return ", ".join(f"{k}: {n}" for k, n in reasons.items() if k in UNSERVABLE_KINDS)


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def _log(line: str) -> None:
    print(line, flush=True)  # a whole line each time: no carriage returns, readable in a log


def write_outputs(
    results: list[Capacity], slo: dict, out_dir: Path, stopped: dict | None = None,
    not_searched: Sequence[str] = (), probe_defaults: Sequence[str] = (),
    knob: Knob | None = None,
) -> None:  # fmt: skip
    """capacity.json (per policy, with probes), capacity.csv (a row per probe), capacity.png.

    `stopped` (the search was cut short: why, and the probe under way) marks all three
    incomplete; the plot is left out when no probe finished. `probe_defaults`: the overrides
    the search added to every probe (`probe_defaults()`), so the file says what was run;
    `knob`: the key the rate was probed through (`load`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "complete": stopped is None,
        "stopped": stopped,
        "slo": slo,
        "probe_defaults": list(probe_defaults),
        "load": asdict(knob) if knob is not None else None,
        "policies": [asdict(r) for r in results],
        "not_searched": list(not_searched),
    }
    tmp = out_dir / ".capacity.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, out_dir / "capacity.json")
    rows = [
        {"policy": r.policy, "capacity_req_s": r.capacity_req_s, "status": r.status, **asdict(p)}
        for r in results
        for p in r.probes
    ]
    pd.DataFrame(rows).to_csv(out_dir / "capacity.csv", index=False)
    plot = out_dir / "capacity.png"
    plot.unlink(missing_ok=True)  # never leave an earlier search's plot beside these results
    if rows:
        title = "Capacity search: P99 latency per probe (dotted: capacity)"
        if stopped is not None:
            stop = textwrap.fill(f"INCOMPLETE, search stopped: {stopped['message']}", 100)
            title = f"{stop}\n{title}"  # wrapped: a clipped title could lose INCOMPLETE
        plot_capacity(results, slo, plot, title, knob.unit if knob else "req/s")


def plot_capacity(
    results: list[Capacity], slo: dict, path: Path, title: str, unit: str = "req/s"
) -> None:
    """P99 TTFT and TPOT of every probe against its rate, per policy, with SLO and capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report_plots import plain_log_ticks

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    cmap = plt.get_cmap("tab10")
    for i, r in enumerate(results):
        probes = sorted(r.probes, key=lambda p: p.rate)
        rates = [p.rate for p in probes]
        if r.status == "incomplete":
            cap = "unknown: search cut short"
        elif r.capacity_req_s is not None:
            cap = f"{r.capacity_req_s:.3g} {unit}"
        else:
            cap = f"< {r.bracket[1]:g}"
        for ax, attr in ((axes[0], "p99_ttft_s"), (axes[1], "p99_tpot_s")):
            ys = [
                getattr(p, attr) * 1e3 if getattr(p, attr) is not None else math.nan for p in probes
            ]
            ax.plot(rates, ys, "o-", color=cmap(i % 10), label=f"{r.policy} (capacity {cap})")
            if r.capacity_req_s is not None:
                ax.axvline(r.capacity_req_s, color=cmap(i % 10), ls=":", lw=1)
    for ax, key, label in (
        (axes[0], "ttft_s", "P99 TTFT (ms)"),
        (axes[1], "tpot_s", "P99 TPOT (ms)"),
    ):
        if slo.get(key) is not None:
            ax.axhline(
                slo[key] * 1e3, color="grey", ls="--", lw=1, label=f"SLO {slo[key] * 1e3:g} ms"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
        ax.set_xlabel(f"arrival rate ({unit})")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, color="red" if title.startswith("INCOMPLETE") else "black")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def split_policies(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(`policy=a,b` as [a, b], the other overrides); the default policy when none is given."""
    policies, rest = [], []
    for o in overrides:
        if o.startswith("policy="):
            policies += [p.strip() for p in o.removeprefix("policy=").split(",") if p.strip()]
        else:
            rest.append(o)
    return policies, rest


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every knob's default in --help, but no "(default: None)" where the help says it."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from harness.config import SloConfig

    slo = SloConfig()
    parser = argparse.ArgumentParser(
        prog="python -m harness.capacity",
        description=__doc__,
        formatter_class=_HelpFormatter,
        epilog=(
            "The SLOs are the run config's slo.ttft_s and slo.tpot_s (default "
            f"{slo.ttft_s} s and {slo.tpot_s} s).\n"
            "Each probe serves the whole workload (workload.num_requests; fewer requests finish\n"
            "sooner but overstate a capacity that queueing limits).\n"
            "Probes go from --high down; --low is probed only when no rate above it passed.\n"
            "Exit status: 0 done; 130 (SIGINT) or 143 (SIGTERM) interrupted; 1 a probe's run\n"
            "ended incomplete (stall, device fault). capacity.json says complete: false then."
        ),
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; policy=a,b searches each")
    parser.add_argument("--low", type=float, default=1.0, help="lowest rate probed (req/s)")
    parser.add_argument("--high", type=float, default=64.0, help="highest rate probed (req/s)")
    parser.add_argument("--iters", type=int, default=6, help="bisection steps after the bounds")
    parser.add_argument("--rel-tol", type=float, default=0.05, help="stop when hi/lo - 1 <= this")
    parser.add_argument("--out", type=Path, help="default: <results_dir>/capacity_<time>")
    parser.add_argument(
        "--load-key",
        help="the workload key to probe instead of the workload's own load knob (e.g. "
        "tenants.0.arrival.rate: one tenant's rate only); default: the workload's knob, "
        "arrival.rate (synthetic) or target_rate (trace, multi-tenant)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> list[Capacity]:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # knobs and overrides in any order
    policies, overrides = split_policies(args.overrides)
    cfg, names = compose(overrides)
    policies = policies or [names["policy_name"]]
    for policy in policies:  # a typo fails now, not after the policies before it were searched
        try:
            compose([*overrides, f"policy={policy}"])
        except Exception as exc:
            parser.error(f"policy={policy}: {exc}")
    out = args.out or Path(cfg.results_dir) / f"capacity_{datetime.now():%Y-%m-%d_%H-%M-%S}"
    if cfg.slo.ttft_s is None and cfg.slo.tpot_s is None:
        parser.error("slo.ttft_s and slo.tpot_s are both null: nothing to search against")
    if not 0 < args.low < args.high:
        parser.error(f"need 0 < --low < --high, got {args.low} and {args.high}")
    try:
        knob = resolve_knob(cfg.workload, args.load_key)
    except WorkloadError as exc:  # one line, as the harness prints a workload error
        parser.exit(2, f"{parser.prog}: error: workload={names['workload_name']}: {exc}\n")
    extra = probe_defaults(cfg, overrides)
    slo = {"ttft_s": cfg.slo.ttft_s, "tpot_s": cfg.slo.tpot_s}
    stopped = None
    with _SignalWatch() as signals:
        search = Search(overrides, args, out, policies, signals, extra, knob)
        _announce(search, slo, cfg.workload.get("num_requests"))
        try:
            search.run_all()
        except SearchStopped as exc:
            stopped = exc
        except KeyboardInterrupt:  # outside a run, or from a run that re-raises it
            sig = (signals.drain() or [signal.SIGINT])[0]
            stopped = SearchStopped("interrupted", signal.Signals(sig).name, sig)
        except Exception as exc:  # a probe that raised: keep what finished, then fail loudly
            _write_stopped(search, slo, out, SearchStopped("error", f"{type(exc).__name__}: {exc}"))
            raise
    if stopped is not None:
        _write_stopped(search, slo, out, stopped)
        sys.exit(stopped.exit_code)
    write_outputs(search.results, slo, out, probe_defaults=extra, knob=knob)
    _print_results(search)
    return search.results


def _announce(search: Search, slo: dict, num_requests: int | None) -> None:
    """What the search will do, and the defaults it chose for the probes."""
    a, size, k = search.args, num_requests or "the workload's", search.knob
    _log(
        f"capacity search: {', '.join(search.policies)} over [{a.low:g}, {a.high:g}] {k.unit} "
        f"of {k.key} ({k.what}); at "
        f"most {search.max_num_probes} probes of {size} requests "
        f"(a probe at rate r: num_requests / r s of arrivals); SLO P99 TTFT <= "
        f"{slo['ttft_s']} s, P99 TPOT <= {slo['tpot_s']} s; -> {search.out_dir}"
    )
    if search.probe_defaults:
        _log(f"added to every probe (set the key to change it): {' '.join(search.probe_defaults)}")


def _print_results(search: Search) -> None:
    for r in search.results:
        unit = search.knob.unit
        at = [p for p in r.probes if p.rate == r.capacity_req_s]
        measured = ""
        if unit != "req/s" and at and at[0].mean_rate_req_s is not None:
            measured = f" = {at[0].mean_rate_req_s:.4g} req/s measured"
        print(
            f"{r.policy}: capacity {r.capacity_req_s} {unit}{measured} "
            f"({r.status}, bracket {r.bracket})"
        )
        if any(p.burst for p in at):
            print(
                f"{r.policy}: capacity {r.capacity_req_s} {unit} rests on a burst (every request "
                "of that probe was in the system at once); raise workload.num_requests"
            )
        if at and at[0].num_unservable:
            print(
                f"{r.policy}: {at[0].num_unservable} requests can never be served (too long "
                "for the model or the KV cache) and were left out of the verdict"
            )
    print(f"results: {search.out_dir}")


def _write_stopped(search: Search, slo: dict, out: Path, stopped: SearchStopped) -> None:
    """The finished policies, the probes of the one cut short, and why the search stopped."""
    under_way = search.under_way
    where = ""
    if under_way is not None:
        where = f" during probe {search.num_probes} (policy {under_way['policy']}, "
        where += f"rate {under_way['rate']:.4g} req/s)"
    message = f"{stopped.reason.replace('_', ' ')}: {stopped}{where}"
    if under_way is not None:
        _log(f"{search.head()} cut short ({stopped.reason.replace('_', ' ')})")
    record = {
        "reason": stopped.reason,
        "signal": signal.Signals(stopped.signum).name if stopped.signum else None,
        "message": message,
        "cut_short_probe": under_way,
    }
    searched = {r.policy for r in search.results}
    not_searched = [p for p in search.policies if p not in searched]
    write_outputs(
        search.results, slo, out, record, not_searched, search.probe_defaults, search.knob
    )
    print(f"capacity search stopped, {message}; exit {stopped.exit_code}", file=sys.stderr)
    print(f"partial results (capacity.json: complete false): {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
