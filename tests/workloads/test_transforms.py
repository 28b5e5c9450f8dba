"""Trace transformations: window, sampling, max requests, time scaling, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.table import RequestTable
from workloads.trace import TraceWorkload
from workloads.transforms import clip, mean_rate

HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


@pytest.fixture
def trace(write_file):
    """1000 requests, one every 0.1 s, prompt length = 1 + index."""
    rows = "".join(f"{i / 10:.1f},{i + 1},{(i % 50) + 1}\n" for i in range(1000))
    return str(write_file("t.csv", HEADER + rows))


def load(path, **kw):
    w = TraceWorkload(path, **kw)
    return w, w.load(seed=0, max_model_len=1 << 20)


def test_window_rebases_times(trace):
    w, t = load(trace, start_s=10.0, duration_s=5.0)
    assert t.prompt_tokens.tolist() == list(range(101, 151))
    assert t.arrival_s[0] == 0.0 and t.arrival_s[-1] == pytest.approx(4.9)
    assert w.stats["num_selected"] == 50


def test_max_requests_reads_only_the_head(trace):
    _, t = load(trace, max_requests=7)
    assert t.prompt_tokens.tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_thinning_and_random_subset_are_seeded(trace):
    _, a = load(trace, sample_fraction=0.3)
    _, b = load(trace, sample_fraction=0.3)
    assert (
        len(a) == pytest.approx(300, abs=50)
        and a.prompt_tokens.tolist() == b.prompt_tokens.tolist()
    )
    _, s = load(trace, sample_requests=20)
    assert len(s) == 20 and (np.diff(s.arrival_s) > 0).all()
    assert s.prompt_tokens.tolist() != list(range(1, 21))
    w = TraceWorkload(trace, sample_requests=20)
    other = w.load(seed=5, max_model_len=1 << 20)
    assert other.prompt_tokens.tolist() != s.prompt_tokens.tolist()


def test_composition_order(trace):
    _, t = load(trace, start_s=20.0, duration_s=50.0, sample_fraction=0.5, max_requests=10)
    assert len(t) == 10 and t.prompt_tokens.min() >= 201 and t.prompt_tokens.max() < 701


def test_time_scale_and_target_rate(trace):
    _, t = load(trace, max_requests=100, time_scale=2.0)
    assert mean_rate(t.arrival_s) == pytest.approx(5.0)
    w, t = load(trace, target_rate=25.0)
    assert mean_rate(t.arrival_s) == pytest.approx(25.0)
    assert w.stats["time_scale"] == pytest.approx(0.4)


def test_clip_modes_count():
    table = RequestTable(
        arrival_s=np.arange(4.0),
        prompt_tokens=np.array([10, 90, 0, 200]),
        output_tokens=np.array([10, 20, 5, 150]),
    )
    stats = {}
    out = clip(table.take(np.arange(4)), 100, "truncate", stats)
    assert out.prompt_tokens.tolist() == [10, 80, 1] and out.output_tokens.tolist() == [10, 20, 99]
    assert stats == {
        "num_dropped_empty_prompt": 1,
        "num_too_long": 2,
        "num_clipped": 2,
        "num_dropped": 0,
    }
    out = clip(table.take(np.arange(4)), 100, "drop", stats)
    assert out.prompt_tokens.tolist() == [10] and stats["num_dropped"] == 2
    out = clip(table.take(np.arange(4)), 100, "none", stats)
    assert len(out) == 3 and stats["num_too_long"] == 2 and stats["num_clipped"] == 0


def test_a_slice_stops_reading_early(trace, monkeypatch):
    from workloads.readers import csv_common

    monkeypatch.setattr(csv_common, "BLOCK_BYTES", 256)  # ~20 rows a batch
    w, t = load(trace, max_requests=5)
    assert len(t) == 5 and w.stats["num_rows"] < 100
    w, t = load(trace, start_s=1.0, duration_s=2.0)
    assert len(t) == 20 and w.stats["num_rows"] < 100
    w, t = load(trace, sample_requests=5)
    assert w.stats["num_rows"] == 1000  # a random subset needs every row
