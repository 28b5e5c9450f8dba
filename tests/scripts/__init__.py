"""Tests of the command-line scripts under benchmarks/ and scripts/ (not part of the package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script(relpath: str):
    """The script at `relpath` (from the repository root), imported as a module of its name."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
