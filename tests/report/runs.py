"""Factories: fake run folders written by the real result writer, and figures the report saves."""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import matplotlib.text
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from harness.loggers.local import write_results
from harness.metrics import summarize

SLO = {"ttft_s": 2.0, "tpot_s": 0.1, "e2e_s": None}


def make_frames(num_requests: int, gap_s: float, seed: int = 0, statuses: dict | None = None):
    """Requests (and steps) of a fake run whose tokens come every `gap_s` seconds; `statuses`
    maps a request index to "rejected" (no token) or "aborted" (cut after its first token)."""
    rng = np.random.default_rng(seed)
    statuses = statuses or {}
    rows, steps = [], []
    for i in range(num_requests):
        arrival = 0.05 * i
        ttft = rng.uniform(0.01, 0.2) * gap_s * 100
        status = statuses.get(i, "finished")
        num_tokens = {"finished": 8, "aborted": 1, "rejected": 0}[status]
        times = (arrival + ttft + gap_s * np.arange(8))[:num_tokens]
        last = times[-1] if num_tokens else np.nan
        rows.append(
            {
                "request_id": f"r{i}", "arrival_s": arrival, "prompt_tokens": 32,
                "output_tokens": num_tokens, "max_output_tokens": 8, "status": status,
                "reason": None if status == "finished" else f"{status}: test",
                "first_scheduled_s": arrival + ttft / 2 if num_tokens else np.nan,
                "first_token_s": times[0] if num_tokens else np.nan,
                "finish_s": last if status == "finished" else np.nan,
                "ttft_s": times[0] - arrival if num_tokens else np.nan,
                "tpot_s": gap_s if num_tokens > 1 else np.nan,
                "e2e_s": last - arrival, "queue_wait_s": ttft / 2, "num_preemptions": i % 2,
                "num_swaps": 0, "token_times_s": list(times), "output_ids": [1] * num_tokens,
            }
        )  # fmt: skip
    for s in range(20):
        steps.append(
            {
                "step": s, "start_s": 0.01 * s, "duration_s": 0.01, "host_time_s": 0.002,
                "device_time_s": 0.008, "num_prefill_tokens": 16,
                "num_decode_tokens": 4, "num_padding_tokens": 0, "num_running": 4,
                "num_waiting": 20 - s, "num_swapped": 0, "num_kv_blocks_used": 10 + s,
                "num_preempted": int(s == 5), "num_swapped_out_blocks": 0,
                "num_swapped_in_blocks": 0,
            }
        )  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(steps)


def make_summary(gap_s: float, statuses: dict | None = None, **extra) -> dict:
    """A summary as `harness.run` returns it (with `steps`, as the compare script keeps it)."""
    requests, steps = make_frames(12, gap_s, statuses=statuses)
    return {"steps": steps, **summarize(requests, steps, SLO), **extra}


def make_run(
    folder: Path,
    policy: str,
    budget: int | None,
    gap_s: float,
    rate: float = 10.0,
    *,
    seed: int | None = None,
    statuses: dict | None = None,
    summary: dict | None = None,
    config: dict | None = None,
    resolved: dict | None = None,
    complete: bool = True,
) -> dict:
    """A run folder of `policy` at `budget`; `summary`, `config` and `resolved` add or replace
    keys (a fingerprint, utilisation, a varying config key, a sweep name)."""
    requests, steps = make_frames(12, gap_s, statuses=statuses)
    cfg = {
        "policy": {"_target_": f"policies.{policy}.X"},
        "workload": {
            "_target_": "workloads.synthetic.SyntheticWorkload",
            "arrival": {"rate": rate},
        },
        "budget": {"max_num_batched_tokens": budget, "max_num_seqs": 8},
        "slo": SLO,
        "resolved": {"policy_name": policy, "workload_name": "bursty", "num_gpu_blocks": 64},
        **(config or {}),
    }
    if seed is not None:
        cfg["seed"] = seed
    cfg["resolved"].update(resolved or {})
    result = {**summarize(requests, steps, SLO, complete=complete), **(summary or {})}
    write_results(folder, cfg, result, requests, steps)
    return result


def capture_figures(monkeypatch) -> list[tuple[str, matplotlib.figure.Figure]]:
    """Every figure saved from now on, as (file name, figure), still readable after closing."""
    saved = []
    savefig = matplotlib.figure.Figure.savefig

    def record(fig, fname, *args, **kwargs):
        saved.append((Path(fname).name, fig))
        return savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return saved


def renderer(fig):
    """A drawn Agg canvas's renderer (a figure closed by pyplot has lost its canvas)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def figure_texts(fig) -> str:
    """Every piece of text of a figure: titles, axis labels, legends, annotations."""
    renderer(fig)
    return " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
