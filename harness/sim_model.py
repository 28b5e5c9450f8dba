"""The simulator's step-time model: features of a batch, a non-negative linear fit, profiles.

A profile (`python -m harness.calibrate`, docs/simulator.md) holds the points measured on a real
executor and the coefficients fitted to them. `ProfileStepCost` is the fitted model as the
engine uses it (harness/step_cost.py's interface): `step_time(batch)` and `swap_time(n, in)`.

Step time = c . x(batch), x =
  step             1: the fixed cost of a step (kernel launches, the engine's own host work)
  prefill          1 if the step has a prefill row: an eager pass, the mixed attention path
  prefill_tokens   query tokens of the non-decode rows (prefill chunks, recomputes, padding)
  prefill_attn     (query, key) pairs those rows attend causally: sum q * (context - (q - 1) / 2)
  prefill_qk       the dense score matrices: sum q * context (a kernel that computes masked
                   scores too, as the torch reference does on the cpu, costs this)
  decode_rows      single-token decode rows; on cuda a decode-only step runs the CUDA graph of
                   the smallest captured batch size >= rows, so that bucket is what it costs
  decode_ctx       context tokens the decode rows read (KV bytes)
  prefill_rows     non-decode rows (per-row host and kernel work)
  prefill_sampled  non-decode rows whose next token is sampled (LM head + sampling)
  mixed_decode     decode rows of a step that also has prefill rows (they take the eager,
                   mixed attention path, not the decode-only one)
  decode_max_ctx   the longest decode row's context: the split-KV decode kernel's programs of
                   one row read its context in turn, so a long row sets the kernel's time when
                   the total does not (measured on the H200: 8 rows over 91k tokens, one of them
                   long, 17 ms against 7 ms for 8 rows of 11k each)
  decode_tail_ctx  the tokens the longest decode row's programs read beyond an even share of
                   the step's decode work. The split-KV kernel cuts each row into splits
                   (kernels/decode_splits.py), fewer as rows rise; one program reads one split
                   of one KV head, and the GPU runs about 2 programs per SM at once. So the
                   longest row's split (its context over its split count) takes longer than the
                   even share (all decode rows' context x KV heads / (2 x SMs)) when one row is
                   long among a few: in a CUDA-graph bucket of 8, a 67k row is read in 5 splits
                   of 13.5k while an even share of 91k tokens is 2.8k. 0 without the split kernel
                   (`DecodeSplit`: cuda profiles only)
  prefill_excess   prefill tokens beyond PREFILL_KNEE (1,024): a longer step holds the GPU at its
                   power cap for more of its time (an H200 drops from 1,980 to ~1,600 MHz), so
                   each further token costs more (measured: 8k-token chunks back to back 229 ms
                   against 219 ms after small steps; benchmarks/sustained_prefill.py). Without
                   it, the fit under-predicted 4-9k-token steps of real runs by 4% and
                   over-predicted 1-2k-token ones by 5%
  prefill_roof     prefill tokens beyond PREFILL_ROOF (192): up to there a step's time is
                   mostly its weight reads and a token adds little; beyond, each token adds its
                   FLOPs (the roofline's knee). Without it, the linear fit put real runs'
                   128-400-token mixed steps 10-18% above their measured time
  decode_roof      the decode rows among the rows the linear layers multiply (decode rows, a
                   decode-only step's graph bucket, plus prefill tokens) beyond DECODE_ROOF
                   (128): the same knee for decode rows. On the H200 a decode-only step of 256
                   rows took 7.4 ms against 5.8 ms for 128 (at 17 tokens of context), twice
                   the per-row cost below 128
A pipelined profile (measured with `engine.async_scheduling`, as on cuda) also models the host:
the engine's work before a launch (scheduling, building the batch) and after it (launching the
kernels, booking the step, reading back and stamping the previous step's tokens), each
c . h(batch) over HOST_FEATURES:
  step   1
  eager  1 if the step replays no CUDA graph (an eager pass launches every kernel itself)
  mixed  1 if an eager step has decode rows and prefill rows (both attention paths launched
         per layer, each call planned anew)
  rows   the step's sequences (per-row host work: the batch, the view, the tokens)
  tokens the step's query tokens (arrays staged per token)
  piecewise  1 if the step replays piecewise graphs (one replay and one attention launch per
         layer; `engine.piecewise_max_tokens`): a profile measured without them has 0 here
  piece_mixed  1 if a piecewise step has decode rows and prefill rows (both paths from one
         plan a step: 2.2 ms more after the launch in the shipped H200 profile, where an eager
         mixed step costs 6.5 ms more). A profile fitted before this feature gave `mixed` to every
         mixed step: its `mixed` coefficient serves both
A profile with a `load_model` (calibrated with a timeline) scales each step by the device's recent
load: (c . x)(1 + k u), u the exponentially weighted share of recent device time spent on prefill
work (`LoadState`: a GPU at its power cap runs the same batch at a lower clock).
On the simulator's timeline (harness/step_cost.py `Timeline`) the device runs a step once the
previous one is done and the host has prepared it; the host launches step n+1 before it waits
for step n's tokens. So a step whose host work outlasts the device's sets the pace, as on the
GPU, and a request that arrives while a step runs joins the step after the next.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.config import ConfigError
from kernels.decode_splits import decode_num_splits

FEATURES = ("step", "prefill", "prefill_tokens", "prefill_attn", "prefill_qk", "decode_rows",
            "decode_ctx", "prefill_rows", "prefill_sampled", "mixed_decode",
            "decode_max_ctx", "decode_tail_ctx", "prefill_excess", "prefill_roof",
            "decode_roof")  # fmt: skip
# prefill_excess's knee: chosen on the merged H200 calibrations' held-out cells among 1k-6k
# (held-out error 7.9% without the feature; 6.9% at 1,024, 7.2% at 2,048 to 6,144)
PREFILL_KNEE = 1024
# prefill_roof's knee: below it a step reads the weights more than it computes (the roofline's
# flat part), above it each token costs its FLOPs. Chosen on the merged H200 calibrations'
# held-out cells (2.92% without; 2.89% at 64, 2.86% at 128, 2.85% at 192, 2.87% at 256-320,
# 2.90% at 512); on real runs' small mixed steps it moved measured/predicted from 0.87-0.91 to
# 0.95-0.97 (benchmarks/sim_accuracy_h200_2026-12-02_round5.md)
PREFILL_ROOF = 192
# decode_roof's knee: the rows a step's linear layers multiply (its decode rows, a CUDA graph's
# bucket, plus its prefill tokens) beyond which a decode row costs compute, not only its share of
# the weight reads. Chosen on the H200 calibration's held-out cells (3.38% without; 3.33% at 96,
# 3.32% at 128, 3.31% at 160, 3.34% at 192), 128 for the real runs' mixed steps
# (benchmarks/sim_accuracy_h200_2026-12-02_round6.md)
DECODE_ROOF = 128
# the load model's history (LoadState): its time constant, the prefill tokens of a step that
# runs the device at full heat, and those up to which a step does not heat it (LOAD_HEAT_KNEE:
# on the H200's real runs, 256-520-token mixed steps ran at their cool time while 1-4k-token
# ones ran ~4% long; chosen among 0-768 on rounds 5 and 6's real runs, then held to round 7's,
# benchmarks/sim_accuracy_h200_2026-12-02_round7.md)
LOAD_TAU_S = 0.05
LOAD_HEAT_TOKENS = 1024
LOAD_HEAT_KNEE = 512
# as `loads` takes them and a profile records them (`load_model`; `settings` as load_<name>)
LOAD_CONSTANTS = {"tau_s": LOAD_TAU_S, "heat_tokens": LOAD_HEAT_TOKENS,
                  "heat_knee": LOAD_HEAT_KNEE}  # fmt: skip
HOST_FEATURES = ("step", "eager", "mixed", "rows", "tokens", "piecewise", "piece_mixed")
# the sizes whose measured range a simulated run is checked against (ProfileStepCost.range_report)
RANGE_FEATURES = ("prefill_tokens", "prefill_qk", "decode_rows", "decode_max_ctx",
                  "decode_tail_ctx")  # fmt: skip
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
PROFILE_FORMAT = 1


def bucket_of(buckets: list[int] | None, n: int) -> int:
    """The smallest captured CUDA-graph batch size >= n, or n (none captured, or too large)."""
    if buckets:
        i = bisect_left(buckets, n)  # sorted ascending
        if i < len(buckets):
            return buckets[i]
    return n


@dataclass(frozen=True)
class DecodeSplit:
    """What the split-KV decode kernel's split count depends on beyond the batch: the GPU's SMs,
    the model's KV heads, and the bound a CUDA-graph replay was captured with (the executor's
    max_model_len). A cuda profile records it in `settings.decode_split`."""

    num_sms: int
    num_kv_heads: int
    graph_bound: int

    def tail(self, longest: float, total: float, rows: int, bound: int) -> float:
        """decode_tail_ctx (the module docstring) of decode rows whose longest context is
        `longest` and whose contexts sum to `total`, the kernel launched over `rows` rows with
        the host-side bound `bound`."""
        splits = decode_num_splits(rows, self.num_kv_heads, bound, self.num_sms)
        return max(0.0, longest / splits - total * self.num_kv_heads / (2 * self.num_sms))

    def tail_of(self, batch, buckets: list[int] | None, graph: bool, longest: float,
                total: float) -> float:  # fmt: skip
        """`tail` as the executor launches the decode kernel for `batch` (whose decode rows'
        longest context is `longest` and whose sum is `total`; `graph`: it replays a CUDA
        graph): a graph replay over its bucket's rows with the captured bound, an eager
        decode-only pass over its rows with the batch's longest context, a mixed pass over its
        decode rows with theirs (harness/models/attention.py, kernels/paged_extend.py)."""
        rows = batch.num_seqs
        if graph:
            rows, bound = bucket_of(buckets, rows), self.graph_bound
        elif batch.max_query_len == 1:
            bound = int(batch.max_seq_len)
        else:
            rows, bound = batch.num_decode_seqs, int(longest)
        return self.tail(longest, total, rows, bound)

    @classmethod
    def of(cls, settings: dict, max_model_len: int | None = None) -> DecodeSplit | None:
        """A profile's (`settings.decode_split`), its graph bound replaced by a run's own."""
        d = settings.get("decode_split")
        if not d:
            return None
        return cls(int(d["num_sms"]), int(d["num_kv_heads"]),
                   int(max_model_len or d["graph_bound"]))  # fmt: skip


def uses_graph(batch, buckets: list[int] | None) -> bool:
    """Whether the cuda executor replays a decode graph for `batch` (ModelRunner._use_graph).
    `batch`: a `harness.batch.Batch`, or its `StepShape` (the same sizes without arrays)."""
    return bool(
        buckets
        and batch.max_query_len == 1
        and batch.num_padding_tokens == 0
        and batch.num_sampled == batch.num_seqs
        and batch.num_seqs <= buckets[-1]
    )


def piece_bucket(batch, buckets: list[int] | None, pieces: list[int] | None) -> int:
    """The token bucket of the piecewise graphs the cuda executor replays for `batch`, 0 if it
    replays none (ModelRunner._use_pieces): a step no decode graph takes, of at most the largest
    piecewise bucket."""
    n = batch.num_tokens
    if not pieces or not 0 < n <= pieces[-1] or uses_graph(batch, buckets):
        return 0
    return bucket_of(pieces, n)


def features(batch, buckets: list[int] | None = None, split: DecodeSplit | None = None,
             pieces: list[int] | None = None) -> list[float]:  # fmt: skip
    """x(batch) in the order of FEATURES; `batch`: a `harness.batch.Batch` or its `StepShape`;
    `buckets`: the decode graphs' batch sizes, `pieces`: the piecewise graphs' token buckets,
    whose padding tokens count as prefill tokens (the layers but attention compute them)."""
    d = batch.num_decode_seqs
    num_seqs = batch.num_seqs
    decode_ctx = float(batch.decode_ctx)
    decode_max_ctx = float(batch.decode_max_ctx)
    rows = num_seqs - d
    if rows:
        qk = float(batch.prefill_qk)
        attn = qk - float(batch.prefill_qq) * 0.5
        pf_tokens = float(batch.num_tokens - d)
        sampled = float(batch.num_sampled - d)
    else:
        attn = qk = pf_tokens = sampled = 0.0
    if pieces:
        padded = piece_bucket(batch, buckets, pieces)
        pf_tokens += padded - batch.num_tokens if padded else 0
    graph = bool(d) and uses_graph(batch, buckets)
    dec = float(bucket_of(buckets, d)) if graph else float(d)
    tail = split.tail_of(batch, buckets, graph, decode_max_ctx, decode_ctx) if split and d else 0.0
    return [1.0, float(rows > 0), pf_tokens, attn, qk, dec, decode_ctx, float(rows), sampled,
            float(d) if rows else 0.0, decode_max_ctx, tail,
            max(0.0, pf_tokens - PREFILL_KNEE), max(0.0, pf_tokens - PREFILL_ROOF),
            decode_roof(dec, pf_tokens)]  # fmt: skip


def decode_roof(decode_rows: float, prefill_tokens: float) -> float:
    """The decode rows among a step's GEMM rows (decode rows as run, plus prefill tokens) beyond
    DECODE_ROOF (the feature `decode_roof`)."""
    return (max(0.0, decode_rows + prefill_tokens - DECODE_ROOF)
            - max(0.0, prefill_tokens - DECODE_ROOF))  # fmt: skip


def host_features(batch, buckets: list[int] | None = None,
                  pieces: list[int] | None = None) -> list[float]:  # fmt: skip
    """h(batch) in the order of HOST_FEATURES."""
    piecewise = bool(pieces) and piece_bucket(batch, buckets, pieces) > 0
    eager = not piecewise and not (buckets and uses_graph(batch, buckets))
    rows, d = batch.num_seqs, batch.num_decode_seqs
    mixed = 0 < d < rows
    return [1.0, float(eager), float(mixed and not piecewise), float(rows),
            float(batch.num_tokens), float(piecewise), float(mixed and piecewise)]  # fmt: skip


def host_coef(coef: list[float], known: tuple[str, ...]) -> list[float]:
    """A host model's coefficients over this version's HOST_FEATURES, from one fitted over the
    first `known` of them: a feature added since costs 0, but `piece_mixed` takes `mixed`'s
    coefficient (that profile's `mixed` covered every mixed step)."""
    out = [float(c) for c in coef] + [0.0] * (len(HOST_FEATURES) - len(known))
    if "piece_mixed" not in known:
        out[HOST_FEATURES.index("piece_mixed")] = out[HOST_FEATURES.index("mixed")]
    return out


def host_columns_upgrade(h: np.ndarray) -> np.ndarray:
    """Host feature rows recorded over fewer HOST_FEATURES (`sim_accuracy --record-steps`) in
    this version's meaning: missing ones 0, and a piecewise step's `mixed` moved to
    `piece_mixed` (see `host_coef`)."""
    n = len(HOST_FEATURES)
    if h.shape[1] >= n:
        return h
    out = np.pad(h, ((0, 0), (0, n - h.shape[1])))
    if h.shape[1] > HOST_FEATURES.index("piecewise"):
        m, pw, pm = (HOST_FEATURES.index(f) for f in ("mixed", "piecewise", "piece_mixed"))
        out[:, pm] = out[:, m] * out[:, pw]
        out[:, m] -= out[:, pm]
    return out


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """min ||a x - b|| subject to x >= 0 (Lawson and Hanson's active-set method)."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(max_iter):
        w = a.T @ (b - a @ x)
        if passive.all() or w[~passive].max(initial=-np.inf) <= 1e-12 * max(1.0, abs(w).max()):
            break
        j = np.flatnonzero(~passive)[np.argmax(w[~passive])]
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return x


@dataclass
class Fit:
    coef: np.ndarray
    in_sample_mape: float
    num_points: int
    num_outliers: int


def fit_relative(x: np.ndarray, y: np.ndarray, outlier_factor: float = 4.0) -> Fit:
    """Non-negative coefficients minimising the squared *relative* error (rows weighted by 1/y),
    so that short steps count as much as long ones; then once more without the points whose
    relative residual exceeds `outlier_factor` times the median one (and 10%): a step slowed
    by another process on a shared host is a measurement fault, not a property of the step."""
    keep = y > 0
    coef = _weighted(x[keep], y[keep])
    rel = np.abs(x @ coef - y) / np.maximum(y, 1e-12)
    bound = max(0.10, outlier_factor * float(np.median(rel[keep])))
    inliers = keep & (rel <= bound)
    if inliers.sum() >= x.shape[1]:
        coef = _weighted(x[inliers], y[inliers])
    rel = np.abs(x[inliers] @ coef - y[inliers]) / y[inliers]
    return Fit(coef, float(rel.mean()), int(inliers.sum()), int(keep.sum() - inliers.sum()))


def fit_absolute(x: np.ndarray, y: np.ndarray, outlier_factor: float = 8.0) -> Fit:
    """Non-negative coefficients minimising the squared *absolute* error, then once more without
    the points whose residual exceeds `outlier_factor` times the median one. For the host's
    time around a launch: its spread is noise (garbage collection, the launch queue), not the
    step's shape, and what adds up along a run is its mean, which this fit keeps (a relative
    fit leans to the short end of a skewed spread)."""
    keep = np.isfinite(y) & (y > 0)
    coef = nnls(x[keep], y[keep])
    res = np.abs(x @ coef - y)
    inliers = keep & (res <= outlier_factor * float(np.median(res[keep])))
    if inliers.sum() >= x.shape[1]:
        coef = nnls(x[inliers], y[inliers])
    rel = np.abs(x[inliers] @ coef - y[inliers]) / y[inliers]
    return Fit(coef, float(rel.mean()), int(inliers.sum()), int(keep.sum() - inliers.sum()))


def _weighted(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a = x / y[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    return nnls(a / scale, np.ones(len(y))) / scale


def mape(x: np.ndarray, y: np.ndarray, coef: np.ndarray, load_coef: float = 0.0,
         load: np.ndarray | None = None) -> float:  # fmt: skip
    """Mean absolute relative error of the model `coef` on the points (x, y); with a load
    model, its coefficient and each point's load (LoadState)."""
    if not len(y):
        return float("nan")
    pred = x @ coef if load is None else (x @ coef) * (1.0 + load_coef * load)
    return float((np.abs(pred - y) / y).mean())


def fit_loaded(x: np.ndarray, y: np.ndarray, load: np.ndarray,
               max_coef: float = 0.5) -> tuple[Fit, float]:  # fmt: skip
    """`fit_relative` with the load model: y = (c . x)(1 + k load), c >= 0, 0 <= k <=
    `max_coef`. For a given k the model is linear in c (fit to y / (1 + k load), whose relative
    residuals are the model's); k is the one of least relative error, searched on a grid and
    then by golden section around the best. Returns (the fit, its error and inliers; k)."""

    def at(k: float) -> Fit:
        return fit_relative(x, y / (1.0 + k * load))

    grid = np.linspace(0.0, max_coef, 26)
    errs = [at(k).in_sample_mape for k in grid]
    i = int(np.argmin(errs))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = at(a).in_sample_mape, at(b).in_sample_mape
    for _ in range(20):  # to ~1e-5 of k
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = at(a).in_sample_mape
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = at(b).in_sample_mape
    k = float((lo + hi) / 2)
    if errs[0] <= min(fa, fb):  # none beats no load at all
        k = 0.0
    return at(k), k


# -- profiles --------------------------------------------------------------------------------
def profile_path(name_or_file: str) -> Path:
    """A packaged profile's file (`harness/profiles/NAME.json`) or the file given."""
    path = Path(name_or_file).expanduser()
    if path.suffix == ".json" or path.exists() or "/" in name_or_file:
        if not path.is_file():
            raise ConfigError(f"engine.profile={name_or_file}: no such profile file {path}")
        return path
    packaged = PROFILE_DIR / f"{name_or_file}.json"
    if not packaged.is_file():
        names = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
        raise ConfigError(f"engine.profile={name_or_file}: not a packaged profile "
                          f"({', '.join(names) or 'none'}) nor a file")  # fmt: skip
    return packaged


def load_profile(name_or_file: str) -> dict:
    path = profile_path(name_or_file)
    try:
        profile = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"engine.profile={name_or_file}: cannot read {path}: {exc}") from None
    if profile.get("format") != PROFILE_FORMAT or "step_model" not in profile:
        raise ConfigError(f"engine.profile={name_or_file}: {path} is not a profile of format "
                          f"{PROFILE_FORMAT} (write one with python -m harness.calibrate)")  # fmt: skip
    profile["name"] = name_or_file  # as the run names it (the file records its own)
    return profile


class LoadState:
    """The device's recent load, which a step's time depends on beyond its own batch.

    A GPU that has just run compute-bound work is at its power cap and runs the next step at a
    lower clock (an H200 drops from 1,980 to ~1,600 MHz within a step or two of 8k-token
    prefills): the same batch takes longer after big prefill chunks than after decode steps or
    idle time. The load u in [0, 1] is the exponentially weighted (time constant `tau_s`, over
    the device's own timeline, idle time included) share of recent time the device spent on
    prefill work, a step counting as (prefill tokens - `heat_knee`) / (`heat_tokens` -
    `heat_knee`) of its time, clipped to [0, 1] (a profile fitted before the knee has 0). A step
    starting at load u takes (c . x) (1 + coef u). Fitted by `harness.calibrate` to points
    whose load it computes from the calibration's own timeline (`loads`)."""

    __slots__ = ("coef", "tau_s", "heat_tokens", "heat_knee", "u", "at_s")

    def __init__(self, coef: float, tau_s: float, heat_tokens: float,
                 heat_knee: float = 0.0) -> None:  # fmt: skip
        self.coef, self.tau_s, self.heat_tokens = float(coef), float(tau_s), float(heat_tokens)
        self.heat_knee = float(heat_knee)
        if not 0 <= self.heat_knee < self.heat_tokens:
            raise ValueError(f"load model: heat_knee {heat_knee} not in [0, {heat_tokens})")
        self.u, self.at_s = 0.0, 0.0  # the load when the device last finished a step, and when

    @classmethod
    def of(cls, model: dict) -> LoadState:
        return cls(model["coef"], model["tau_s"], model["heat_tokens"], model.get("heat_knee", 0))

    def start(self, start_s: float) -> float:
        """The load at `start_s`: it has decayed since the last step ended (idle time cools)."""
        if start_s > self.at_s:
            return self.u * math.exp((self.at_s - start_s) / self.tau_s)
        return self.u

    def run(self, start_s: float, base_s: float, prefill_tokens: float) -> float:
        """A step of `base_s` (the model at load 0) starting at `start_s`: its time, and the
        load it leaves."""
        u = self.start(start_s)
        t = base_s * (1.0 + self.coef * u)
        a = math.exp(-t / self.tau_s)
        heat = (prefill_tokens - self.heat_knee) / (self.heat_tokens - self.heat_knee)
        heat = 0.0 if heat < 0.0 else (1.0 if heat > 1.0 else heat)
        self.u = u * a + heat * (1.0 - a)
        self.at_s = start_s + t
        return t


def loads(starts_s: np.ndarray, times_s: np.ndarray, prefill_tokens: np.ndarray, tau_s: float,
          heat_tokens: float, heat_knee: float = 0.0) -> np.ndarray:  # fmt: skip
    """The load (LoadState) at the start of each step of a measured timeline: steps in device
    order, each starting at `starts_s` and running `times_s`."""
    state = LoadState(0.0, tau_s, heat_tokens, heat_knee)
    out = np.empty(len(starts_s))
    for i, (s, t, n) in enumerate(zip(starts_s, times_s, prefill_tokens, strict=True)):
        out[i] = state.start(float(s))
        state.run(float(s), float(t), float(n))  # coef 0: the measured time is the time
    return out


class ProfileStepCost:
    """A profile's fitted model as the engine's step-cost model (harness/step_cost.py)."""

    def __init__(self, profile: dict, buckets: list[int] | None = None, block_size: int = 16,
                 max_model_len: int | None = None, pieces: list[int] | None = None):  # fmt: skip
        model = profile["step_model"]
        known = tuple(model["features"])
        if known != FEATURES[: len(known)]:
            raise ConfigError(f"engine.profile={profile.get('name')}: features {model['features']}"
                              f" are not this version's {list(FEATURES)}")  # fmt: skip
        # a profile fitted before a feature existed does not use it (coefficient 0); refit it
        # (python -m harness.calibrate --refit) to use it
        self.coef = [float(c) for c in model["coef"]] + [0.0] * (len(FEATURES) - len(known))
        self.buckets, self.pieces = buckets, pieces or None
        self.split = DecodeSplit.of(profile.get("settings", {}), max_model_len)
        # The largest sizes the profile measured: a step beyond them is extrapolated (counted)
        cols = profile.get("points", {}).get("columns", [])
        rows = profile.get("points", {}).get("rows", [])
        unused = set(model.get("unused", ()))  # no cost: going beyond them changes nothing
        self.measured_max = {
            f: max(float(r[cols.index(f)]) for r in rows)
            for f in RANGE_FEATURES if f in cols and f not in unused
        } if rows else {}  # fmt: skip
        self._range = [(FEATURES.index(f), m) for f, m in self.measured_max.items()]
        self.beyond = dict.fromkeys(self.measured_max, 0)  # steps beyond, per feature
        self.num_beyond = self.num_steps = 0
        pipelined = bool(profile["settings"].get("async_scheduling"))
        host = profile.get("host_model") if pipelined else None
        # `host_time` (harness/step_cost.Timeline) only for a pipelined profile with a host
        # model; otherwise the step model's time is the whole step
        self.host_time = self._host_time if host else None
        if host:
            known = tuple(host["features"])
            if known != HOST_FEATURES[: len(known)]:
                raise ConfigError(f"engine.profile={profile.get('name')}: host features "
                                  f"{host['features']} are not this version's "
                                  f"{list(HOST_FEATURES)}")  # fmt: skip
            self._host = tuple(host_coef(host[k]["coef"], known)
                               for k in ("before_launch", "after_launch"))  # fmt: skip
        swaps = profile["swap_model"]
        # a block of another size moves proportionally many bytes
        scale = block_size / profile["kv_capacity"]["block_size"]
        self._swap = {
            False: (swaps["out"]["fixed_s"], swaps["out"]["per_block_s"] * scale),
            True: (swaps["in"]["fixed_s"], swaps["in"]["per_block_s"] * scale),
        }
        # Measured with pipelining, a swap was timed from its call: its wait for the step in
        # flight is inside the fitted time (the fixed part holds the typical wait)
        self._swap_timed_with_wait = pipelined
        # the device's load (see LoadState): a profile without a load model has none
        load = profile.get("load_model")
        self.load = LoadState.of(load) if load and load.get("coef") else None

    def step_time(self, batch, start_s: float | None = None) -> float:
        """The device seconds of `batch`; `start_s`, when the device starts it: with a load
        model, the steps run so far (in start order) set the device's load, which scales it."""
        x = features(batch, self.buckets, self.split, self.pieces)
        c = self.coef
        self.num_steps += 1
        for i, m in self._range:
            if x[i] > m:
                self._beyond(x)
                break
        t = (c[0] + c[1] * x[1] + c[2] * x[2] + c[3] * x[3] + c[4] * x[4] + c[5] * x[5]
             + c[6] * x[6] + c[7] * x[7] + c[8] * x[8] + c[9] * x[9]
             + c[10] * x[10] + c[11] * x[11] + c[12] * x[12] + c[13] * x[13]
             + c[14] * x[14])  # fmt: skip
        if self.load is not None and start_s is not None:
            t = self.load.run(start_s, t, x[2])
        return t

    def _beyond(self, x: list[float]) -> None:
        self.num_beyond += 1
        for f, m in self.measured_max.items():
            if x[FEATURES.index(f)] > m:
                self.beyond[f] += 1

    def range_report(self) -> dict:
        """How many steps of the run were beyond what the profile measured (extrapolated by
        the linear model), per feature, with the measured maxima."""
        return {"num_steps": self.num_steps, "num_beyond": self.num_beyond,
                "beyond": dict(self.beyond), "measured_max": dict(self.measured_max)}  # fmt: skip

    def _host_time(self, batch) -> tuple[float, float]:
        """The host's seconds before the launch of `batch` and after it (see the module)."""
        h = host_features(batch, self.buckets, self.pieces)
        before, after = self._host
        return (before[0] + before[1] * h[1] + before[2] * h[2] + before[3] * h[3]
                + before[4] * h[4] + before[5] * h[5] + before[6] * h[6],
                after[0] + after[1] * h[1] + after[2] * h[2] + after[3] * h[3]
                + after[4] * h[4] + after[5] * h[5] + after[6] * h[6])  # fmt: skip

    def swap_time(self, num_blocks: int, swap_in: bool = False) -> float:
        fixed, per_block = self._swap[bool(swap_in)]
        return fixed + per_block * num_blocks

    def swap_end(self, now: float, device_free: float, num_blocks: int, swap_in: bool) -> float:
        """When a swap called at `now`, behind what the device runs until `device_free`, ends.
        Timed with pipelining, the fitted time already holds a typical wait for the step in
        flight: the swap ends that long after its call, or after the step in flight plus the
        copy when that step runs longer. Otherwise it follows the step in flight."""
        fixed, per_block = self._swap[bool(swap_in)]
        copy = per_block * num_blocks
        if self._swap_timed_with_wait:
            return max(now + fixed + copy, device_free + copy)
        return max(device_free, now) + (fixed + copy)  # as swap_time: the same float
