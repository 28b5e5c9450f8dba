"""Sweeps: the issue's command line expands to its jobs, presets compose, and a joblib sweep runs
end to end (cpu engine, tiny model) into folders the report reads, W&B runs in one group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness.config import register
from harness.report import load_runs

from ..loggers.wandb_files import read_offline_run

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ["fcfs", "prefill_priority", "decode_priority", "chunked_prefill", "preempt_cpu"]
SMALL = [
    "engine=cpu", "engine.num_threads=1", "engine.progress=false", "logger.print_table=false",
    "workload.num_requests=20", "workload.arrival.rate=200", "workload.output_len.min=2",
    "workload.output_len.max=8", "workload.prompt_len.max=128", "budget.num_cpu_blocks=64",
]  # fmt: skip


def compose_with_hydra(*overrides: str):
    """The composed config with its `hydra` node (launcher, sweeper)."""
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def existing(policies):
    return [p for p in policies if (ROOT / "conf" / "policy" / f"{p}.yaml").is_file()]


def expand(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of a `-m` command line."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch


def test_the_issue_command_is_20_jobs_that_all_compose(compose_cfg):
    policies = existing(POLICIES)
    jobs = expand(
        [f"policy={','.join(policies)}", "budget.max_num_batched_tokens=256,512,1024,2048"]
    )
    assert len(jobs) == 4 * len(policies)
    if len(policies) < len(POLICIES):
        pytest.skip(f"only {policies} exist yet")
    assert len(jobs) == 20
    for job in jobs:
        cfg = compose_cfg(*job)
        assert cfg.budget.max_num_batched_tokens in (256, 512, 1024, 2048)


@pytest.mark.parametrize("preset", ["budgets", "load", "policies"])
def test_sweep_presets_compose(preset):
    cfg = compose_with_hydra(f"+sweep={preset}")
    params = cfg.hydra.sweeper.params
    assert params.policy == "glob(*)"  # every conf/policy/*.yaml, whichever exist
    others = [f"{k}={v}" for k, v in params.items() if k != "policy"]
    assert not others or len(expand(others)) >= 2


@pytest.mark.parametrize("launcher", ["joblib", "submitit_slurm", "ray"])
def test_launcher_presets_compose_with_one_gpu_per_job(launcher):
    node = compose_with_hydra(f"hydra/launcher={launcher}").hydra.launcher
    assert node._target_.startswith(f"hydra_plugins.hydra_{launcher.split('_')[0]}")
    if launcher == "submitit_slurm":
        assert node.gpus_per_node == 1 and node.tasks_per_node == 1
    if launcher == "ray":
        assert node.ray.remote.num_gpus == 1


def test_joblib_sweep_runs_into_report_layout_with_one_wandb_group(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    policies = existing(["fcfs", "chunked_prefill"])
    sweep_dir = tmp_path / "multirun_test"
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp_path / "wbcfg")}
    env.pop("WANDB_MODE", None)
    cmd = [
        sys.executable, "-m", "harness", "-m", "+sweep=budgets", "hydra/launcher=joblib",
        f"policy={','.join(policies)}", "budget.max_num_batched_tokens=256,1024", *SMALL,
        "logger=wandb", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = load_runs([sweep_dir])
    assert len(runs) == 2 * len(policies)
    assert sorted(runs["budget"].unique()) == [256, 1024]
    assert set(runs["policy"]) == set(policies)
    assert (runs["num_finished"] == 20).all()
    groups = {read_offline_run(Path(d) / "wandb").run.run_group for d in runs["run_dir"]}
    assert groups == {"multirun_test"}
    names = {read_offline_run(Path(d) / "wandb").run.display_name for d in runs["run_dir"]}
    assert f"{policies[0]}-b256-bursty-r200" in names and len(names) == len(runs)
