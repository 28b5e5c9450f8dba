"""`python -m harness.workloads fetch NAME`: public traces into the cache folder, size and hash
checked; presets read them there; a missing trace names the command. No network: file:// only."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.workloads import conftest
from tests.workloads.conftest import AZURE_2023, TRACES, trace_path
from workloads import fetch
from workloads.errors import WorkloadError
from workloads.fetch import SOURCES, FetchError, TraceSource, fetch_trace, traces_dir

ROOT = Path(__file__).resolve().parents[2]


def make_source(tmp_path: Path, text: str = AZURE_2023, **kw) -> TraceSource:
    src = tmp_path / "published" / "t.csv"
    src.parent.mkdir(exist_ok=True)
    src.write_text(text)
    data = src.read_bytes()
    fields = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **kw}
    return TraceSource("t", "t.csv", src.as_uri(), license="test", **fields)


def test_fetch_writes_the_file_and_checks_it(tmp_path):
    source = make_source(tmp_path)
    path, verified = fetch_trace(source, tmp_path / "cache")
    assert path == tmp_path / "cache" / "t.csv" and verified
    assert path.read_text() == AZURE_2023
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]  # no temporary left


@pytest.mark.parametrize("field", ["sha256", "size"])
def test_fetch_rejects_a_file_that_differs_and_keeps_nothing(tmp_path, field):
    source = make_source(tmp_path, **{field: "0" * 64 if field == "sha256" else 3})
    with pytest.raises(FetchError, match=f"{field}.*t.csv|t.csv.*{field}"):
        fetch_trace(source, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_without_a_recorded_hash_keeps_the_file_unverified(tmp_path):
    path, verified = fetch_trace(make_source(tmp_path, size=None, sha256=None), tmp_path / "c")
    assert path.is_file() and not verified


def test_a_present_verified_file_is_not_fetched_again(tmp_path):
    source = make_source(tmp_path)
    fetch_trace(source, tmp_path / "cache")
    (tmp_path / "published" / "t.csv").unlink()
    path, verified = fetch_trace(source, tmp_path / "cache")
    assert verified and path.read_text() == AZURE_2023


def test_traces_dir_is_harness_traces_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("HARNESS_TRACES", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert traces_dir() == tmp_path / ".cache" / "sched-harness" / "traces"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert traces_dir() == tmp_path / "xdg" / "sched-harness" / "traces"
    monkeypatch.setenv("HARNESS_TRACES", str(tmp_path / "mine"))
    assert traces_dir() == tmp_path / "mine"


def test_the_registry_has_the_issue_traces_and_every_preset_file():
    names = {s.name for s in SOURCES}
    assert {"azure_code", "azure_conv", "azure_code_1week", "azure_conv_1week"} <= names
    assert {"mooncake_conversation", "burstgpt", "sharegpt"} <= names
    files = {s.file for s in SOURCES}
    for preset in (ROOT / "conf" / "workload").glob("*.yaml"):
        for line in preset.read_text().splitlines():
            if line.startswith("path:") and "${traces:" in line:
                assert line.split("${traces:")[1].rstrip("}") in files, preset.name
    for s in SOURCES:
        assert s.url.startswith("https://") and s.license
        assert (s.sha256 is None) == (s.size is None), s.name


@pytest.mark.parametrize("source", [s for s in SOURCES if s.sha256], ids=lambda s: s.name)
def test_recorded_hashes_match_the_local_copies(source):
    path = trace_path(source.file)
    assert path.stat().st_size == source.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == source.sha256


def test_presets_read_the_cache_folder(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_TRACES", str(tmp_path))
    cfg = compose_cfg("workload=azure_conv")
    assert cfg.workload.path == str(tmp_path / "AzureLLMInferenceTrace_conv.csv")


def test_a_missing_preset_trace_names_the_fetch_command(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_TRACES", str(tmp_path))
    workload = instantiate(compose_cfg("workload=mooncake_conversation").workload)
    with pytest.raises(WorkloadError, match="python -m harness.workloads fetch mooncake_conv"):
        workload.build(0, 2048, 4096)


def test_cli_lists_fetches_and_rejects_an_unknown_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_TRACES", str(tmp_path / "cache"))
    assert fetch.main([]) == 0
    assert "azure_conv" in capsys.readouterr().out
    assert fetch.main(["azure_cnv"]) == 2
    err = capsys.readouterr().err
    assert "azure_cnv" in err and "azure_conv" in err and len(err.strip().splitlines()) == 1


def test_cli_mirror_with_a_different_file_fails_on_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "AzureLLMInferenceTrace_code.csv").write_text(AZURE_2023)
    monkeypatch.setenv("HARNESS_TRACES", str(tmp_path / "cache"))
    assert fetch.main(["azure_code", "--mirror", (tmp_path / "m").as_uri()]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err or "size" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cache" / "AzureLLMInferenceTrace_code.csv").exists()


def test_fetch_command_then_describe_the_preset(tmp_path):
    """The README's path: fetch (here from a local mirror), then use the preset."""
    trace_path("AzureLLMInferenceTrace_code.csv")
    env = {**__import__("os").environ, "HARNESS_TRACES": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.workloads", "fetch", "azure_code", "--mirror",
         TRACES.as_uri()],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path / "AzureLLMInferenceTrace_code.csv") in proc.stdout
    assert "sha256 " in proc.stdout and "verified" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "harness.workloads", "workload=azure_code",
         "workload.max_requests=20", "--no-plot"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "requests             20" in proc.stdout or "20" in proc.stdout


def test_missing_trace_skips_loudly_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "TRACES", tmp_path)
    monkeypatch.setattr(conftest, "_missing", {})  # no end-of-run note for this one
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="HARNESS_TRACES.*fetch azure_conv"):
        trace_path("AzureLLMInferenceTrace_conv.csv")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="fetch azure_conv"):
        trace_path("AzureLLMInferenceTrace_conv.csv")


def test_tests_find_the_traces_beside_the_checkout(tmp_path, monkeypatch):
    checkout = tmp_path / "clone"
    (checkout / "tests" / "workloads").mkdir(parents=True)
    (tmp_path / "shared" / "traces").mkdir(parents=True)
    assert conftest.find_traces({}, checkout) == tmp_path / "shared" / "traces"
    assert conftest.find_traces({"HARNESS_TRACES": "/x"}, checkout) == Path("/x")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert conftest.find_traces({}, tmp_path / "elsewhere" / "clone") == traces_dir({})
