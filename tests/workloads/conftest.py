"""Factories for workload tests: small trace files written to a tmp dir, the public traces' dir."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from workloads.fetch import fetch_command, source_for_file, traces_dir

CHECKOUT = Path(__file__).resolve().parents[2]


def find_traces(environ: Mapping[str, str], checkout: Path) -> Path:
    """HARNESS_TRACES, else `shared/traces` beside the checkout (where CI has them), else the
    folder `python -m harness.workloads fetch` writes to."""
    beside = checkout.parent / "shared" / "traces"
    if not environ.get("HARNESS_TRACES") and beside.is_dir():
        return beside
    return traces_dir(environ)


TRACES = find_traces(os.environ, CHECKOUT)
_missing: dict[str, str] = {}  # trace file -> how to get it, for the end-of-run summary


def trace_path(name: str) -> Path:
    """A public trace by file name. Absent: the test skips saying how to get it, or fails under
    CI (`CI=true`), where the traces are laid beside the checkout and must be read."""
    path = TRACES / name
    if path.is_file():
        return path
    source = source_for_file(name)
    how = f"`{fetch_command(source)}`" if source else "download it"
    message = f"public trace {path} is absent: set HARNESS_TRACES to a folder holding it, or {how}"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message)
    _missing[name] = how
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter):
    if _missing:
        terminalreporter.section("public traces absent: their tests were skipped", yellow=True)
        terminalreporter.write_line(f"looked in {TRACES} (HARNESS_TRACES); to run them:")
        for name, how in sorted(_missing.items()):
            terminalreporter.write_line(f"  {name}: {how}")


@pytest.fixture
def write_file(tmp_path):
    """Write `text` to tmp_path/name and return the path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


AZURE_2023 = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:47.18,396,109
2023-11-16 18:15:48,100,1
2023-11-16 18:15:50.500000001,7,300
"""

AZURE_2024 = """TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-10 00:00:00.009930+00:00,2162,5
2024-05-10 00:00:00.5+00:00,1500,20
2024-05-10 00:00:02+00:00,30,7
"""

BURSTGPT = """Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type
5,1,0.5,ChatGPT,472,18,490,Conversation log
10,2,0.7,GPT-4,1000,0,1000,Conversation log
12.5,3,1.1,ChatGPT,200,0,200,Conversation log
13,4,2.0,ChatGPT,50,60,110,API log
20,5,0.9,ChatGPT,300,30,330,Conversation log
"""

VIDUR_TIMED = """arrived_at,num_prefill_tokens,num_decode_tokens
0.0,100,10
0.25,200,20
1.5,300,30
"""

LENGTHS_ONLY = """num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio
74,918,992,0.08
290,905,1195,0.32
3772,54,3826,69.8
10,5,15,2.0
"""

MOONCAKE = """{"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [0, 1, 2]}
{"timestamp": 250, "input_length": 1030, "output_length": 7, "hash_ids": [0, 1, 3]}
{"timestamp": 1000, "input_length": 600, "output_length": 9, "hash_ids": [4, 5]}
"""
