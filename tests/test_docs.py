"""Every `python -m harness ...` example of README.md and docs/*.md composes and passes the CLI's
own key check, so a renamed key, group or option in the docs fails here; one runs end to end."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_COMMANDS = {"harness", "harness.workloads", "workloads", "harness.capacity"}
VALUE_FLAGS = {"--out", "-o", "--low", "--high", "--iters", "--rel-tol", "--max-timelines"}
MAX_JOBS = 6  # of a sweep example, composed one by one


def _command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of each `python -m` command in code blocks and inline code."""
    found = []
    for block in re.finditer(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        first = text.count("\n", 0, block.start(1)) + 1
        joined = re.sub(r"\\\n\s*", " ", block.group(1))  # continuation lines
        offset = 0
        for line in joined.splitlines():
            found.append((first + offset, line))
            offset += 1 + line.count("\\")
    for span in re.finditer(r"`(python -m [^`]+)`", text):
        found.append((text.count("\n", 0, span.start()) + 1, span.group(1)))
    commands = []
    for number, line in found:
        for part in re.split(r"&&|;", line):
            part = re.sub(r"\$\([^)]*\)", "X", part).strip()  # $(date +%F) and the like
            if part.startswith("python -m "):
                commands.append((number, part))
    return commands


def examples() -> list[tuple[str, str, list[str]]]:
    out = []
    for doc in DOCS:
        for number, command in _command_lines(doc.read_text()):
            module, *args = shlex.split(command, comments=True)[2:]
            if module in CONFIG_COMMANDS:
                out.append((f"{doc.name}:{number}", module, args))
    return out


def parse(args: list[str]) -> tuple[bool, list[str]]:
    """(multirun, overrides) of a command's arguments; `[optional ...]` placeholders dropped."""
    multirun, overrides, skip, optional = False, [], False, False
    for arg in args:
        if optional or arg.startswith("["):
            optional = not arg.endswith("]")
            continue
        if skip:
            skip = False
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg.startswith("-"):
            skip = arg in VALUE_FLAGS
        elif "=" in arg:
            overrides.append(arg)
    return multirun, overrides


def jobs(module: str, args: list[str]) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun, overrides = parse(args)
    if not (multirun or module == "harness.capacity"):  # capacity searches each policy=a,b
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch[:MAX_JOBS]


@pytest.fixture
def tutorial_policy(tmp_path, monkeypatch):
    """docs/policies.md's example policy saved as the page says, so its commands compose."""
    import importlib.util

    page = (ROOT / "docs" / "policies.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    (yaml,) = re.findall(r"```yaml\n(.*?)```", page, flags=re.S)
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "shortest_prompt_first.yaml").write_text(yaml)
    (tmp_path / "shortest_prompt_first.py").write_text(code)
    spec = importlib.util.spec_from_file_location(
        "policies.shortest_prompt_first", tmp_path / "shortest_prompt_first.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "policies.shortest_prompt_first", module)
    return f"hydra.searchpath=[file://{tmp_path}]"


EXAMPLES = examples()


def test_the_docs_have_examples():
    modules = {module for _, module, _ in EXAMPLES}
    assert {"harness", "harness.capacity"} <= modules and len(EXAMPLES) >= 15


@pytest.mark.parametrize("where, module, args", EXAMPLES, ids=[w for w, _, _ in EXAMPLES])
def test_example_composes_and_passes_the_key_check(where, module, args, tutorial_policy):
    from harness.config import check_config, compose

    if module in ("workloads", "harness.workloads") and args[:1] == ["fetch"]:
        from workloads.fetch import SOURCES

        assert set(args[1:]) <= {s.name for s in SOURCES}
        return
    for job in jobs(module, args):
        cfg = compose([*job, tutorial_policy])
        check_config(cfg)


def test_the_first_run_example_runs_end_to_end(tmp_path):
    where, module, args = next(e for e in EXAMPLES if e[1] == "harness" and "-m" not in e[2][:1])
    tiny = ["engine=cpu", "workload.num_requests=4", "engine.progress=false",
            "logger.print_table=false", f"results_dir={tmp_path}"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, *tiny], cwd=ROOT, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, f"{where}: {proc.stderr[-2000:]}"
    assert len(list(tmp_path.glob("*/summary.json"))) == 1
