"""`workloads` imports nothing from `harness`: the two packages form no cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import workloads

PACKAGE = Path(workloads.__file__).parent


def test_workloads_imports_nothing_from_harness():
    modules = sorted(
        "workloads." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m == 'harness' or m.startswith('harness.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
