"""Bad config fails at start-up, naming the key and value, before any model is built."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

import harness.run
from harness.config import ConfigError


@pytest.fixture
def no_model_build(monkeypatch):
    def _fail(*a, **k):
        raise AssertionError("a model was built before the config was checked")

    monkeypatch.setattr(harness.run, "build_model", _fail)


def test_unknown_group_option(compose_cfg):
    with pytest.raises(MissingConfigException, match="policy.*no_such_policy|no_such_policy"):
        compose_cfg("policy=no_such_policy")


def test_mistyped_key(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="max_num_batched_token"):
        compose_cfg("budget.max_num_batched_token=512")


@pytest.mark.parametrize(
    "override, message",
    [
        ("budget.max_num_batched_tokens=0", "budget.max_num_batched_tokens=0"),
        ("budget.max_num_seqs=-1", "budget.max_num_seqs=-1"),
        ("budget.block_size=24", "budget.block_size=24 must be a power of two"),
        (
            "budget.num_gpu_blocks=8",
            "budget.num_gpu_blocks=8 is smaller than one block per sequence",
        ),
        ("engine.dtype=float8", "engine.dtype='float8'"),
        ("slo.ttft_s=-1", "slo.ttft_s=-1"),
        ("policy.preemption=sometimes", "policy: 'sometimes' is not a valid Preemption"),
        ("+policy.no_such_knob=1", "policy: .*no_such_knob"),
        ("model.preset=gpt5", "model.preset='gpt5' is not a preset"),
    ],
)
def test_bad_values_fail_before_model_build(compose_cfg, no_model_build, override, message):
    cfg = compose_cfg("engine=cpu", "logger=none", override)
    with pytest.raises(ConfigError, match=message):
        harness.run.run(cfg, None)


def test_cli_reports_bad_value_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "budget.block_size=12", f"results_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "budget.block_size=12 must be a power of two" in proc.stderr
    assert "Traceback" not in proc.stderr
