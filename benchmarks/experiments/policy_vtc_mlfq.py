"""Issue 17's headline experiments for `vtc` and `mlfq`, each against `fcfs`, at saturation.

    python benchmarks/experiments/policy_vtc_mlfq.py all          # or vtc | mlfq
    python benchmarks/experiments/policy_vtc_mlfq.py vtc --requests 400 --load 3 --seed 1

Every run: `engine=cpu model=tiny engine.clock=virtual logger=none engine.progress=false` (a
step costs the virtual cost model, so a run is exact and machine-independent); one set of request
specs per experiment, served by every policy. Arrivals are Poisson at `--load` times the capacity
of fcfs on the same specs sent at once (requests / makespan).
- vtc: tenant `heavy` sends 4x the requests of tenant `light` (prompts 32..256, outputs 16..128,
  uniform); 16 seats, 128 KV blocks (2048 tokens). Service = w_p * prompt + w_q * output tokens
  (1, 2), stamped when served (the prompt with the first token). Over the time both tenants are
  backlogged (each has a request that arrived and is not yet admitted): the heavy tenant's share
  of the service and the largest service gap over any interval, against the paper's bound 2U,
  U = max(w_p * longest prompt, w_q * M), M the most tokens a running batch can hold
  (min(KV tokens, seats x longest request)).
- mlfq: 20% long jobs (prompts 384..512, outputs 192..256), 80% short (32..96, 8..24), the class
  recorded as the request's tenant; 8 seats. E2E (job completion time) and TTFT of short and long
  jobs under fcfs, mlfq (swap) and mlfq with recompute preemption.
A burst's capacity is below the saturated rate (its tail runs with a part-empty batch): mlfq's
default load 1.5 is what makes the queue grow there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

from harness.config import register
from harness.request import RequestSpec
from harness.run import run

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
BASE = ["engine=cpu", "model=tiny", "engine.clock=virtual", "logger=none", "engine.progress=false",
        "logger.print_table=false"]  # fmt: skip
VOCAB_SIZE = 2048  # the tiny preset's


def serve(specs: list[RequestSpec], policy: str, *overrides: str):
    """One run of `specs` under `policy`: harness.run's RunResult."""
    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", overrides=[*BASE, f"policy={policy}", *overrides])
    return run(cfg, None, specs=specs)


def make_specs(rng, prompt_lens, output_lens, tenants) -> list[RequestSpec]:
    return [
        RequestSpec(f"r{i:04d}", 0.0, tuple(rng.integers(0, VOCAB_SIZE, int(p)).tolist()), int(o),
                    tenant=str(t))
        for i, (p, o, t) in enumerate(zip(prompt_lens, output_lens, tenants, strict=True))
    ]  # fmt: skip


def with_poisson_arrivals(specs, budget, load: float, rng) -> tuple[list[RequestSpec], float]:
    """`specs` arriving as a Poisson process at `load` x fcfs's capacity on them (sent at once)."""
    burst = serve(specs, "fcfs", *budget).summary
    rate = load * len(specs) / burst["duration_s"]
    arrivals = np.cumsum(rng.exponential(1.0 / rate, len(specs)))
    order = rng.permutation(len(specs))  # tenants and lengths interleave at random
    timed = [RequestSpec(s.request_id, float(arrivals[k]), s.prompt_ids, s.max_output_tokens,
                         s.tenant, s.priority) for k, s in zip(order.argsort(), specs, strict=True)]  # fmt: skip
    return timed, rate


# -- vtc ------------------------------------------------------------------------------------------


def service_events(requests: pd.DataFrame, w_p: float, w_q: float) -> pd.DataFrame:
    """(time, tenant, service) of every token served: w_q each, plus w_p * prompt with the first."""
    rows = [(t, r.tenant, w_q + (w_p * r.prompt_tokens if i == 0 else 0.0))
            for r in requests.itertuples() for i, t in enumerate(r.token_times_s)]  # fmt: skip
    return pd.DataFrame(rows, columns=["time_s", "tenant", "service"]).sort_values("time_s")


def fairness(requests: pd.DataFrame, tenants: tuple[str, str], w_p: float, w_q: float) -> dict:
    """Over the times both tenants are backlogged: the first tenant's share of the service, and
    the largest |W_a(t1, t2) - W_b(t1, t2)| over intervals inside one both-backlogged period."""
    events = service_events(requests, w_p, w_q)
    times = np.unique(np.concatenate([events.time_s, requests.arrival_s,
                                      requests.first_scheduled_s]))  # fmt: skip
    both = np.ones(len(times), dtype=bool)
    served = {}
    for tenant in tenants:
        rows = requests[requests.tenant == tenant]
        arrived = np.searchsorted(np.sort(rows.arrival_s), times, side="right")
        admitted = np.searchsorted(np.sort(rows.first_scheduled_s), times, side="right")
        both &= arrived > admitted
        mine = events[events.tenant == tenant]
        cum = np.concatenate([[0.0], np.cumsum(mine.service)])
        served[tenant] = cum[np.searchsorted(mine.time_s.to_numpy(), times, side="right")]
    diff = served[tenants[0]] - served[tenants[1]]
    gap, shares = 0.0, np.zeros(2)
    edges = np.diff(np.r_[0, both.astype(int), 0])
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        end = min(stop, len(times) - 1)  # both backlogged from times[start] to times[stop]
        span = diff[start : end + 1]
        gap = max(gap, float(span.max() - span.min()))
        shares += [served[t][end] - served[t][start] for t in tenants]
    duration = float(np.sum(np.diff(times)[both[:-1]]))
    return {"share": shares[0] / shares.sum(), "gap": gap, "backlogged_s": duration}


def _served(requests) -> str:
    """finished/requests and rejected: every row of a comparison must serve the same requests."""
    done, rejected = (requests.status == "finished").sum(), (requests.status == "rejected").sum()
    return f"{f'{done}/{len(requests)}':>9} {rejected:>4}"


def vtc_experiment(args) -> None:
    rng = np.random.default_rng(args.seed)
    n = args.requests
    tenants = np.where(rng.random(n) < 0.8, "heavy", "light")
    prompt_lens, output_lens = rng.integers(32, 257, n), rng.integers(16, 129, n)
    num_seqs, num_blocks, w_p, w_q = 16, 128, 1.0, 2.0
    budget = [f"budget.max_num_seqs={num_seqs}", f"budget.num_gpu_blocks={num_blocks}"]
    specs, rate = with_poisson_arrivals(make_specs(rng, prompt_lens, output_lens, tenants),
                                        budget, args.load, rng)  # fmt: skip
    batch_tokens = min(num_blocks * 16, num_seqs * int((prompt_lens + output_lens).max()))
    bound = 2 * max(w_p * prompt_lens.max(), w_q * batch_tokens)
    print(f"vtc: {n} requests ({(tenants == 'heavy').sum()} heavy, {(tenants == 'light').sum()} "
          f"light), {rate:.1f} req/s = {args.load} x fcfs capacity; bound 2U = {bound:.0f} "
          f"(L_input {prompt_lens.max()}, M {batch_tokens})")  # fmt: skip
    print(
        f"{'policy':<8} {'heavy share':>11} {'max gap':>8} {'2U':>6} {'within':>6} "
        f"{'both backlogged':>15} {'TTFT heavy':>10} {'TTFT light':>10} {'finished':>9} {'rej.':>4}"
    )
    for policy in ("fcfs", "vtc"):
        requests = serve(specs, policy, *budget).requests
        f = fairness(requests, ("heavy", "light"), w_p, w_q)
        ttft = requests.groupby("tenant").ttft_s.mean()
        print(f"{policy:<8} {f['share']:>11.1%} {f['gap']:>8.0f} {bound:>6.0f} "
              f"{'yes' if f['gap'] <= bound else 'no':>6} {f['backlogged_s']:>14.2f}s "
              f"{ttft['heavy']:>9.2f}s {ttft['light']:>9.2f}s {_served(requests)}")  # fmt: skip


# -- mlfq -----------------------------------------------------------------------------------------


MLFQ_VARIANTS = [("fcfs", "fcfs"), ("mlfq", "mlfq"),
                 ("mlfq recompute", "mlfq", "policy.preemption=recompute")]  # fmt: skip


def mlfq_experiment(args) -> None:
    rng = np.random.default_rng(args.seed)
    n = args.requests
    long = rng.random(n) < 0.2
    prompt_lens = np.where(long, rng.integers(384, 513, n), rng.integers(32, 97, n))
    output_lens = np.where(long, rng.integers(192, 257, n), rng.integers(8, 25, n))
    budget = ["budget.max_num_seqs=8"]
    kinds = np.where(long, "long", "short")
    specs, rate = with_poisson_arrivals(make_specs(rng, prompt_lens, output_lens, kinds),
                                        budget, args.load, rng)  # fmt: skip
    print(
        f"mlfq: {n} jobs ({long.sum()} long, {(~long).sum()} short), {rate:.1f} req/s = "
        f"{args.load} x fcfs capacity, 8 seats"
    )
    print(
        f"{'policy':<16} {'short E2E mean':>14} {'p90':>6} {'p99':>6} {'TTFT mean':>9} "
        f"{'long E2E mean':>13} {'p99':>6} {'all E2E mean':>12} {'preempt':>7} {'finished':>9} "
        f"{'rej.':>4}"
    )
    for name, policy, *extra in MLFQ_VARIANTS:
        result = serve(specs, policy, *budget, *extra)
        r = result.requests
        s, lg = r[r.tenant == "short"], r[r.tenant == "long"]
        print(f"{name:<16} {s.e2e_s.mean():>13.3f}s {s.e2e_s.quantile(0.9):>5.2f}s "
              f"{s.e2e_s.quantile(0.99):>5.2f}s {s.ttft_s.mean():>8.3f}s {lg.e2e_s.mean():>12.2f}s "
              f"{lg.e2e_s.quantile(0.99):>5.2f}s {r.e2e_s.mean():>11.3f}s "
              f"{int(result.summary['num_preemptions']):>7} {_served(r)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["vtc", "mlfq", "all"])
    parser.add_argument("--requests", type=int, default=None, help="default: vtc 200, mlfq 200")
    parser.add_argument("--load", type=float, default=None, help="default: vtc 3, mlfq 1.5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, run_experiment, n, load in (("vtc", vtc_experiment, 200, 3.0),
                                          ("mlfq", mlfq_experiment, 200, 1.5)):  # fmt: skip
        if args.experiment in (name, "all"):
            run_experiment(argparse.Namespace(requests=args.requests or n,
                                              load=args.load or load, seed=args.seed))  # fmt: skip


if __name__ == "__main__":
    main()
