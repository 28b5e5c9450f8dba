"""The sweep most report tests read: 2 policies x 2 budgets, one run each."""

from __future__ import annotations

import pytest

from .runs import make_run


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun_x"
    for i, (policy, budget, gap) in enumerate(
        [("fcfs", 256, 0.02), ("fcfs", 1024, 0.01), ("chunked_prefill", 256, 0.005),
         ("chunked_prefill", 1024, 0.03)]
    ):  # fmt: skip
        make_run(root / f"{i}_{policy}", policy, budget, gap)
    return root
