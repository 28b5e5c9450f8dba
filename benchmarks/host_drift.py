"""How steady is the host? The same step, over and over, for minutes: its launch time, its
device time and the machine's load beside them.

    python benchmarks/host_drift.py --out DRIFT.json [--repeats 400] [OVERRIDES...]
    python benchmarks/host_drift.py --show DRIFT.json

A step that runs eagerly (a prefill chunk or a mixed step: no CUDA graph) costs the host
milliseconds of Python and kernel launches; when those outlast the device's work, the host sets
the pace, and the step's time is the host's. If the host's speed drifts (other jobs on its
cores, its clock), so do such steps, on the real engine and against any profile measured at
another moment. This measures that drift: it runs one calibration cell (`harness.calibrate`'s
real engine and executor; B decodes at context L, then mixed steps of the B decodes and a
P-token chunk) `--repeats` times, and reports per window of `--window` seconds the medians of
- `host_after_s`: the host's time from a mixed step's launch to the next one, its waits out;
- `launch_wall_s` / `launch_cpu_s`: the launch call's own wall and CPU time (wall above CPU:
  the core was taken by another process);
- `device_time_s` of the mixed steps and of the decode-only (CUDA-graph) steps;
beside the machine's load average and its CPUs' busy share (/proc), sampled by a separate
process twice a second. The spread of the windows' medians is the drift.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# a separate process: it must not take the GIL from the one it watches
_SAMPLER = r"""
import sys, time
def stat():
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait
prev = stat()
while True:
    time.sleep(0.5)
    try:
        load = float(open('/proc/loadavg').read().split()[0])
        cur = stat()
        busy = 1.0 - (cur[1] - prev[1]) / max(1, cur[0] - prev[0])
        prev = cur
        print(f"{time.time():.3f} {load:.2f} {busy:.4f}", flush=True)
    except OSError:
        break
"""


def run(args, overrides: list[str]) -> int:
    from harness.calibrate import measure
    from harness.config import check_config, compose, validate

    cfg = compose(overrides)
    check_config(cfg)
    validate(cfg)
    grid = dict(decode_batches=(args.batch,), contexts=(args.context,), chunks=(args.chunk,),
                prefill_contexts=(), swap_blocks=(), max_cell_tokens=args.batch * args.context,
                decode_steps=args.decode_steps, mixed_steps=args.mixed_steps,
                repeats=args.repeats)  # fmt: skip
    sampler = subprocess.Popen([sys.executable, "-c", _SAMPLER], stdout=subprocess.PIPE, text=True)
    t0 = time.time()
    try:
        info, points = measure(cfg, grid)
    finally:
        sampler.terminate()
        samples = [tuple(map(float, line.split())) for line in sampler.stdout.read().splitlines()]
    out = {
        "command": "python benchmarks/host_drift.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "device": info["device"], "settings": info["settings"], "grid": grid,
        "points": points, "samples": samples,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(out) + "\n")
    print(f"wrote {args.out}: {len(points)} steps, {len(samples)} load samples")
    show(out, args.window)
    return 0


def windows(data: dict, width: float) -> list[dict]:
    """Per `width` seconds of the run: the medians the module docstring lists."""
    pts = data["points"]
    at = np.array([p["launch_at"] for p in pts])
    mixed = np.array([p["prefill"] > 0 and p["mixed_decode"] > 0 for p in pts])
    decode = np.array([p["prefill"] == 0 for p in pts])
    col = {k: np.array([np.nan if p[k] is None else p[k] for p in pts], float)
           for k in ("host_after_s", "launch_wall_s", "launch_cpu_s", "device_time_s")}  # fmt: skip
    smp = np.array(data["samples"]) if data["samples"] else np.zeros((0, 3))
    rows, start = [], at.min()
    while start <= at.max():
        w = (at >= start) & (at < start + width)
        s = (smp[:, 0] >= start) & (smp[:, 0] < start + width) if len(smp) else np.zeros(0, bool)
        m = w & mixed
        if m.sum() >= 3:
            rows.append({
                "t_s": round(float(start - at.min()), 1), "mixed_steps": int(m.sum()),
                **{k: float(np.nanmedian(col[k][m])) for k in
                   ("host_after_s", "launch_wall_s", "launch_cpu_s", "device_time_s")},
                "decode_device_s": float(np.nanmedian(col["device_time_s"][w & decode]))
                if (w & decode).any() else None,
                "loadavg": float(smp[s, 1].mean()) if s.any() else None,
                "cpu_busy": float(smp[s, 2].mean()) if s.any() else None,
            })  # fmt: skip
        start += width
    return rows


def show(data: dict, width: float = 10.0) -> None:
    rows = windows(data, width)
    print(f"{data['device']}, {data['date']}; mixed steps of {data['grid']['chunks'][0]} prefill "
          f"tokens + {data['grid']['decode_batches'][0]} decodes; medians per {width:g} s")  # fmt: skip
    print("| t (s) | steps | host after launch (ms) | launch wall / CPU (ms) | device, mixed (ms) "
          "| device, decode (ms) | load avg | CPUs busy |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        dec = f"{r['decode_device_s'] * 1e3:.2f}" if r["decode_device_s"] else "-"
        load = f"{r['loadavg']:.1f}" if r["loadavg"] is not None else "-"
        busy = f"{r['cpu_busy']:.0%}" if r["cpu_busy"] is not None else "-"
        print(f"| {r['t_s']:.0f} | {r['mixed_steps']} | {r['host_after_s'] * 1e3:.1f} | "
              f"{r['launch_wall_s'] * 1e3:.1f} / {r['launch_cpu_s'] * 1e3:.1f} | "
              f"{r['device_time_s'] * 1e3:.1f} | {dec} | {load} | {busy} |")  # fmt: skip
    if rows:
        h = np.array([r["host_after_s"] for r in rows])
        print(f"host after launch over {len(rows)} windows: median {np.median(h) * 1e3:.1f} ms, "
              f"min {h.min() * 1e3:.1f}, max {h.max() * 1e3:.1f} "
              f"({(h.max() - h.min()) / np.median(h):.0%} of the median)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="the JSON to write (every step's point and the load samples)")
    p.add_argument("--show", help="print the table of a written file")
    p.add_argument("--repeats", type=int, default=400, help="times the cell runs")
    p.add_argument("--batch", type=int, default=16, help="decode rows of each step (B)")
    p.add_argument("--context", type=int, default=256, help="their context (L)")
    p.add_argument("--chunk", type=int, default=512, help="prefill tokens of a mixed step (P)")
    p.add_argument("--decode-steps", type=int, default=2)
    p.add_argument("--mixed-steps", type=int, default=8)
    p.add_argument("--window", type=float, default=10.0, help="seconds a table row covers")
    args, overrides = p.parse_known_args(argv)
    if args.show:
        show(json.loads(Path(args.show).read_text()), args.window)
        return 0
    if not args.out:
        p.error("--out or --show")
    return run(args, overrides)


if __name__ == "__main__":
    raise SystemExit(main())
