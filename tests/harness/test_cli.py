"""`python -m harness` as a user meets it: exit codes, one-line errors, no stray run folders,
Ctrl-C, progress in a log file, result files a colleague can read, sweep folder names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["engine=cpu", "workload.num_requests=4", "logger.print_table=false"]


def harness(*args: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, **kw,
    )  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The whole of stderr, which must be one line without a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("plus", ["", "+"])
def test_unknown_key_exits_2_naming_the_closest_and_leaves_no_folder(tmp_path, plus):
    proc = harness(f"{plus}budget.max_num_batched_tokenz=512", f"results_dir={tmp_path}", *TINY)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert "budget.max_num_batched_tokenz" in line
    assert "did you mean budget.max_num_batched_tokens?" in line
    assert list(tmp_path.iterdir()) == []


def test_unknown_constructor_argument_names_the_closest(tmp_path):
    proc = harness("policy.preemptoin=swap", f"results_dir={tmp_path}", *TINY)
    assert proc.returncode == 2, proc.stderr
    assert "did you mean policy.preemption?" in one_error_line(proc)


@pytest.mark.parametrize(
    "override, words",
    [("policy=fcfz", ["policy", "fcfz", "fcfs"]), ("budget.max_num_seqs=many", ["max_num_seqs", "many"])],
)  # fmt: skip
def test_hydra_composition_errors_exit_2_on_one_line(tmp_path, override, words):
    proc = harness(override, f"results_dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert all(w in line for w in words), line


def test_failed_start_leaves_no_folder_but_keeps_one_that_existed(tmp_path):
    proc = harness("budget.block_size=12", f"results_dir={tmp_path}")
    assert proc.returncode == 2 and "power of two" in one_error_line(proc)
    assert list(tmp_path.iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (mine, empty):
        proc = harness("budget.block_size=12", f"hydra.run.dir={folder}")
        assert proc.returncode == 2, proc.stderr
    assert (mine / "notes.txt").read_text() == "keep me" and empty.is_dir()


def _read_only(folder: Path) -> list[str]:
    """A command prefix under which `folder` cannot be written, even by root."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return []
    if not shutil.which("unshare"):
        pytest.skip("root ignores file modes and `unshare` (for a read-only mount) is missing")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"root ignores file modes and `unshare -m` fails: {probe.stderr!r}")
    return ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{folder}" "{folder}" && exec "$@"',
            "sh"]  # fmt: skip


def test_read_only_results_dir_is_one_line_exit_2(tmp_path):
    results = tmp_path / "ro"
    results.mkdir()
    prefix = _read_only(results)
    cmd = [*prefix, sys.executable, "-m", "harness", f"results_dir={results}", *TINY]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    results.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert str(results) in line and "results_dir" in line


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_ctrl_c_during_start_up_exits_130_on_one_line_and_leaves_no_folder(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", f"results_dir={tmp_path}", *TINY],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # the run folder exists before the model is built (Hydra makes it first): start-up
    _wait_for(lambda: any(tmp_path.iterdir()) or proc.poll() is not None, 120, "the run folder")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted (SIGINT)" in err, err
    if not list(tmp_path.glob("*/summary.json")):  # (else start-up was over: partial results)
        assert len(err.strip().splitlines()) == 1, err
        assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_serving_writes_partial_results_and_exits_130(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", f"results_dir={tmp_path / 'r'}", *TINY,
             "engine.progress=true", "workload.arrival.rate=0.2"],
            cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        # serving has begun once the progress log says so (the first arrival is at t=0, the
        # others tens of seconds later)
        _wait_for(lambda: "serving" in log.read_text() or proc.poll() is not None, 120, "serving")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    (summary,) = (tmp_path / "r").glob("*/summary.json")
    assert json.loads(summary.read_text())["complete"] is False


def test_progress_in_a_log_file_is_a_few_plain_lines(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "harness", f"results_dir={tmp_path / 'r'}", *TINY,
             "engine.progress=true", "workload.num_requests=40", "workload.arrival.rate=100",
             "workload.output_len.min=2", "workload.output_len.max=8"],
            cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=180,
            preexec_fn=lambda: os.umask(0o022),
        )  # fmt: skip
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text
    progress = [line for line in text.splitlines() if "40 requests" in line or "/40" in line]
    assert 1 <= len(progress) <= 4, text
    (run_dir,) = (tmp_path / "r").iterdir()
    for name in ("config.yaml", "summary.json", "requests.parquet", "steps.parquet"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_result_files_are_created_per_the_umask(tmp_path, umask, mode):
    from harness.loggers.local import atomic_write

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.txt", lambda p: p.write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _job_subdirs(*overrides: str) -> list[str]:
    """The sweep job folder names Hydra would make of a `-m` command line."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    from harness.config import register

    register()
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    names = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        for num, job in enumerate(jobs):
            cfg = compose("config", overrides=job, return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.job.num = num
            HydraConfig.instance().set_config(cfg)
            names.append(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    return names


def test_sweep_job_folders_name_what_varies_and_are_unique():
    names = _job_subdirs("policy=fcfs", "workload.arrival.rate=5,10", "seed=1,2")
    assert len(set(names)) == len(names) == 4
    assert names[0].startswith("0_") and "workload.arrival.rate=5" in names[0]
    assert all("/" not in n and len(n) < 120 for n in names)
    # paths and output settings are not part of the name
    (name,) = _job_subdirs("results_dir=/tmp/x", "engine.progress=false", "policy=fcfs")
    assert "results_dir" not in name and "progress" not in name and "/" not in name
    (name,) = _job_subdirs("budget.max_num_batched_tokens=null")
    assert name.startswith("0")


def test_a_rate_sweep_runs_into_two_named_folders(tmp_path):
    proc = harness(
        "-m", "workload.arrival.rate=50,100", f"hydra.sweep.dir={tmp_path / 's'}", *TINY,
        "engine.progress=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir())
    assert names == ["0_workload.arrival.rate=50", "1_workload.arrival.rate=100"]


def test_log_progress_is_a_line_at_start_per_interval_and_at_the_end():
    import io

    from harness.progress import LogProgress, Progress, make_progress

    stream = io.StringIO()  # not a terminal
    progress = make_progress(10, stream=stream, interval_s=0.0)
    assert isinstance(progress, LogProgress)
    for k in range(3):
        progress.update(k, 1, 9 - k, step=k)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("serving 10 requests") and len(lines) == 5
    assert "2/10 requests done" in lines[-1] and "7 waiting" in lines[-1]
    quiet = io.StringIO()
    progress = make_progress(10, stream=quiet, interval_s=3600)
    progress.update(5, 1, 4, step=5)
    assert len(quiet.getvalue().splitlines()) == 1
    assert type(make_progress(10, enabled=False, stream=quiet)) is Progress  # prints nothing


def test_a_ctrl_c_while_the_run_folder_is_being_made_leaves_no_folder(tmp_path, monkeypatch):
    """The folder is noted before it is made: a KeyboardInterrupt between its mkdir and the
    write check (the CLI test above hit that window under load) must not leave it behind."""
    import tempfile

    from omegaconf import OmegaConf

    import harness.config as config

    folder = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tempfile, "TemporaryFile", interrupted)
    monkeypatch.setattr(config, "NEW_RUN_FOLDERS", [])
    cfg = OmegaConf.create({"hydra": {"run": {"dir": str(folder)}}, "results_dir": str(tmp_path)})
    monkeypatch.setattr("hydra.core.hydra_config.HydraConfig.set_config", lambda self, c: None)
    with pytest.raises(KeyboardInterrupt):
        config._claim(cfg, "hydra.run.dir")
    assert folder.is_dir()  # made, then interrupted
    assert config.remove_unused_run_folders() == [folder] and not folder.exists()
