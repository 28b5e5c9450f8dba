"""Bad config fails at start-up, naming the key and value, before any model is built."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

import harness.executors.local
import harness.run
from harness.config import ConfigError


@pytest.fixture
def no_model_build(monkeypatch):
    def _fail(*a, **k):
        raise AssertionError("a model was built before the config was checked")

    monkeypatch.setattr(harness.executors.local, "build_model", _fail)


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


@pytest.mark.parametrize(
    "override, key, closest",
    [
        ("+budget.max_num_batched_tokenz=512", "budget.max_num_batched_tokenz",
         "budget.max_num_batched_tokens"),
        ("+engine.progres=false", "engine.progres", "engine.progress"),
        ("+seeed=3", "seeed", "seed"),
        ("+policy.preemptoin=swap", "policy.preemptoin", "policy.preemption"),
        ("+workload.num_request=3", "workload.num_request", "workload.num_requests"),
        ("+logger.print_tabel=false", "logger.print_tabel", "logger.print_table"),
    ],
)  # fmt: skip
def test_added_unknown_key_fails_naming_the_closest_valid_one(compose_cfg, override, key, closest):
    """`+key=value` gets past Hydra's strict schema (it is Hydra's own advice for a typo)."""
    from harness.config import check_config

    cfg = compose_cfg(override)
    with pytest.raises(ConfigError, match=rf"unknown key {key}\b.*did you mean {closest}\?"):
        check_config(cfg)


def test_known_keys_pass(compose_cfg):
    from harness.config import check_config

    for overrides in (
        (),
        ("policy=chunked_prefill", "policy.max_num_partial_prefills=2"),
        ("workload=azure_conv", "workload.max_requests=5", "logger=wandb"),
    ):
        check_config(compose_cfg(*overrides))


def test_unknown_key_without_a_close_one_lists_the_valid_ones(compose_cfg):
    from harness.config import check_config

    with pytest.raises(ConfigError, match=r"unknown key budget\.xyz; valid keys: .*block_size"):
        check_config(compose_cfg("+budget.xyz=1"))
