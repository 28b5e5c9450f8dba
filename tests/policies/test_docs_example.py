"""The example of docs/policies.md runs: it schedules shortest prompts first and, through the
real engine, finishes every request with the same greedy tokens as fcfs."""

from __future__ import annotations

import importlib.util
import re

from hydra.utils import instantiate
from omegaconf import OmegaConf

from policies.fcfs import FcfsPolicy
from tests.conftest import CONF_DIR
from tests.policies.conftest import make_request_view, make_view, tiny_specs

PAGE = CONF_DIR.parent / "docs" / "policies.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.S)


def _example_policy(tmp_path, monkeypatch):
    (code,) = _blocks("python")
    assert len(code.splitlines()) <= 50, "keep the example short"
    path = tmp_path / "shortest_prompt_first.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("shortest_prompt_first", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(__import__("sys").modules, "policies.shortest_prompt_first", module)
    (yaml,) = _blocks("yaml")
    return instantiate(OmegaConf.create(yaml))


def test_example_admits_shortest_first(tmp_path, monkeypatch):
    policy = _example_policy(tmp_path, monkeypatch)
    waiting = [make_request_view(f"r{n}", 0.0, n) for n in (300, 40, 100)]
    d = policy.schedule(make_view(waiting=waiting, max_num_batched_tokens=200))
    assert d.num_scheduled_tokens == {"r40": 40, "r100": 100}


def test_example_runs_through_the_engine(tmp_path, monkeypatch, scenario):
    policy = _example_policy(tmp_path, monkeypatch)
    specs = tiny_specs([90, 20, 60, 30], [8, 8, 8, 8], arrivals=[0, 0.001, 0.001, 0.002])
    _, requests, _ = scenario(policy, specs, max_num_batched_tokens=128)
    _, reference, _ = scenario(FcfsPolicy(), specs, max_num_batched_tokens=128)
    assert (requests.status == "finished").all()
    assert requests.output_ids.to_dict() == reference.output_ids.to_dict()
