"""`python -m harness.report --wandb`: the comparison as a W&B table in the sweep's group, read
back from the offline run's own files."""

from __future__ import annotations

import pytest

from harness.report import main

from ..loggers.wandb_files import read_offline_run
from .runs import make_run

pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def _offline_and_local(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline must be the default
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_uploads_the_comparison_table_to_the_sweep_group(tmp_path):
    runs, out = tmp_path / "multirun_test", tmp_path / "out"
    for policy, budget, gap in (("fcfs", 256, 0.02), ("sjf", 256, 0.01), ("sjf", 512, 0.005)):
        make_run(runs / f"{policy}_{budget}", policy, budget, gap,
                 resolved={"sweep_name": "multirun_test"})  # fmt: skip
    main([str(runs), "-o", str(out), "--wandb", "--max-timelines", "0"])
    wb = read_offline_run(out / "wandb")
    assert wb.exit_code == 0
    assert wb.run.run_group == "multirun_test"
    table = wb.table("comparison")
    columns = table["columns"]
    assert {"policy", "budget", "p99_ttft_ms", "n", "best_in"} <= set(columns)
    rows = [dict(zip(columns, row, strict=True)) for row in table["data"]]
    assert sorted((r["policy"], r["budget"]) for r in rows) == [
        ("fcfs", 256), ("sjf", 256), ("sjf", 512)
    ]  # fmt: skip
