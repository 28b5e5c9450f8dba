"""Big prefill steps back to back: does the GPU hold their speed? (round 3's fcfs question)

    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.max.sm,power.draw,temperature.gpu,\
clocks_throttle_reasons.active --format=csv -lms 200 > smi.csv &
    python benchmarks/sustained_prefill.py --out sus.json [--repeats 60] [--chunk 8192]

One `harness.calibrate` prefill cell (a prompt of 2 x chunk tokens, prefilled in two chunks: at
context 0, then at context `chunk`) repeated `--repeats` times through the real engine and
executor, with nothing in between; prints each chunk kind's device time, first steps against
last. Run the nvidia-smi line beside it for the clocks and the power.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--chunk", type=int, default=8192)
    args, overrides = p.parse_known_args(argv)
    from harness.calibrate import measure
    from harness.config import check_config, compose, validate

    cfg = compose(overrides or ["engine=cuda", "model=llama3_8b",
                                f"budget.max_num_batched_tokens={args.chunk}"])  # fmt: skip
    check_config(cfg)
    validate(cfg)
    grid = dict(decode_batches=(), contexts=(), chunks=(args.chunk,), prefill_contexts=(0,),
                swap_blocks=(), max_cell_tokens=0, decode_steps=0, mixed_steps=0,
                repeats=args.repeats)  # fmt: skip
    _, points = measure(cfg, grid)
    Path(args.out).write_text(json.dumps(points))
    dev = np.array([q["device_time_s"] for q in points]) * 1e3
    for name, d in (("at context 0", dev[0::2]), (f"at context {args.chunk}", dev[1::2])):
        print(f"chunk of {args.chunk} {name}: first {d[0]:.1f} ms, median of the first 10 "
              f"{np.median(d[:10]):.1f}, of the last 10 {np.median(d[-10:]):.1f} "
              f"({len(d)} steps)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
