"""The capacity the simulator finds against the one the real engine finds (issue 15): the same
bisection (`harness.capacity.bisect_capacity`), the same requests, the same SLO test
(`harness.capacity.meets_slo`), one probe a real run on each side.

    # on the GPU (one model for every probe; each probe's result is appended as it finishes)
    python benchmarks/sim_capacity.py run --engine cuda --out REAL.jsonl
    # anywhere: the simulator, from the profile measured on that GPU
    python benchmarks/sim_capacity.py run --engine sim --profile h200_llama3_8b --out SIM.jsonl
    python benchmarks/sim_capacity.py compare REAL.jsonl SIM.jsonl

The trace window is `azure_code` from 600 s, 20 s long (220 requests), its rate set by
`workload.target_rate`; the SLO is the run config's (`slo.ttft_s`, `slo.tpot_s`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# the engine options, one model for every real probe: as the accuracy cases
from sim_accuracy import SharedModel, add_engine_args, compose_run, engine_overrides  # noqa: E402

WINDOW = ["workload=azure_code", "workload.start_s=600", "workload.duration_s=20"]
KNOB = "workload.target_rate"
POLICIES = {
    "fcfs": ["policy=fcfs"],
    "cp2048": ["policy=chunked_prefill", "budget.max_num_batched_tokens=2048"],
    "decode_priority": ["policy=decode_priority"],
}
COMMON = ["logger=none", "engine.progress=false", "seed=0"]


def run_search(args) -> int:
    from harness.capacity import bisect_capacity, meets_slo
    from harness.run import run

    engine = engine_overrides(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shared = SharedModel(args.engine)  # one model for every probe
    for name in args.policies:

        def probe(rate: float, name=name) -> bool:
            cfg = compose_run([*COMMON, *engine, *WINDOW, *POLICIES[name], f"{KNOB}={rate:.6g}"])
            executor = shared.executor(cfg)
            t0 = time.perf_counter()
            s = run(cfg, None, model=shared.model, executor=executor).summary
            ok = meets_slo(s, cfg.slo.ttft_s, cfg.slo.tpot_s)
            row = {"policy": name, "rate": rate, "meets_slo": ok, "p99_ttft_s": s["ttft_s"]["p99"],
                   "p99_tpot_s": s["tpot_s"]["p99"], "num_finished": s["num_finished"],
                   "num_requests": s["num_requests"], "num_rejected": s.get("num_rejected", 0),
                   "output_throughput_tok_s": s["output_throughput_tok_s"],
                   "workload_fingerprint": s.get("workload_fingerprint"),
                   "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            return ok

        if args.rates:  # the same rates as another side's probes, no search
            for rate in args.rates:
                probe(rate)
            continue
        cap, bracket, status = bisect_capacity(probe, args.low, args.high, args.iters, args.rel_tol)
        row = {"policy": name, "capacity_req_s": cap, "bracket": list(bracket), "status": status,
               "slo": "default"}  # fmt: skip
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    return 0


def compare(args) -> int:
    def load(path):
        caps, probes = {}, {}
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            if "capacity_req_s" in row:
                caps[row["policy"]] = row
            else:
                probes.setdefault(row["policy"], []).append(row)
        return caps, probes

    (rc, rp), (sc, sp) = load(args.real), load(args.sim)
    lines = ["| policy | real capacity (bracket) | simulated capacity (bracket) | error | probes "
             "real / sim |", "|---|---|---|---|---|"]  # fmt: skip
    for policy in rc:
        if policy not in sc:
            continue
        a, b = rc[policy], sc[policy]
        err = (b["capacity_req_s"] - a["capacity_req_s"]) / a["capacity_req_s"]
        lines.append(
            f"| {policy} | {a['capacity_req_s']:.2f} req/s [{a['bracket'][0]:.2f}, "
            f"{a['bracket'][1]:.2f}) | {b['capacity_req_s']:.2f} req/s [{b['bracket'][0]:.2f}, "
            f"{b['bracket'][1]:.2f}) | {err:+.1%} | {len(rp[policy])} / {len(sp[policy])} |"
        )
    lines += ["", "Probes (rate req/s: real pass/miss, P99 TTFT, P99 TPOT | simulated):", ""]
    if args.at:  # simulated probes at the real side's rates
        sp = {}
        for line in Path(args.at).read_text().splitlines():
            row = json.loads(line)
            sp.setdefault(row["policy"], []).append(row)
    for policy in rp:
        sim_by_rate = {round(p["rate"], 6): p for p in sp.get(policy, [])}
        for p in rp[policy]:
            q = sim_by_rate.get(round(p["rate"], 6))
            other = "not probed" if q is None else (
                f"{'pass' if q['meets_slo'] else 'miss'} {q['p99_ttft_s']:.3f} s "
                f"{q['p99_tpot_s'] * 1e3:.1f} ms")  # fmt: skip
            lines.append(f"- {policy} {p['rate']:.3f}: {'pass' if p['meets_slo'] else 'miss'} "
                         f"{p['p99_ttft_s']:.3f} s {p['p99_tpot_s'] * 1e3:.1f} ms | {other}")  # fmt: skip
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    add_engine_args(r)
    r.add_argument("--out", required=True, help="a JSON-lines file, appended to")
    r.add_argument("--policies", nargs="*", default=list(POLICIES), choices=list(POLICIES))
    r.add_argument("--low", type=float, default=4.0)
    r.add_argument("--high", type=float, default=32.0)
    r.add_argument("--iters", type=int, default=8)
    r.add_argument("--rel-tol", type=float, default=0.03)
    r.add_argument("--rates", nargs="*", type=float,
                   help="probe exactly these rates instead of searching (e.g. the real side's, "
                   "to compare the latency at each); with `compare --at` FILE")  # fmt: skip
    c = sub.add_parser("compare")
    c.add_argument("real")
    c.add_argument("sim")
    c.add_argument("--at", help="simulated probes at the real rates (run --rates ...)")
    args = p.parse_args(argv)
    if args.cmd == "run" and not math.isfinite(args.high):
        p.error("--high must be finite")
    return run_search(args) if args.cmd == "run" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
