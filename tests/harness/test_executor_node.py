"""An executor is a `_target_` node: a config names it, `run()` builds, starts and uses it; a
modelled clock takes its step times from a step-cost model, not from the clock."""

from __future__ import annotations

import pytest

from harness.config import ConfigError
from harness.executors.local import LocalExecutor
from harness.run import build_executor, run
from harness.step_cost import LinearStepCost

CPU = ("engine=cpu", "model=tiny", "engine.progress=false", "logger=none", "policy=fcfs",
       "workload.num_requests=6")  # fmt: skip


class CountingExecutor(LocalExecutor):
    """A new executor in one class: the local one, counting launches and swaps."""

    instances: list[CountingExecutor] = []

    def __init__(self, engine, model, tag: str = "none") -> None:
        super().__init__(engine, model)
        self.tag, self.launches = tag, 0
        CountingExecutor.instances.append(self)

    def launch(self, batch, feed_from=None):
        self.launches += 1
        return super().launch(batch, feed_from)


class ModelledExecutor(CountingExecutor):
    """An executor that models its own step times (as a simulator does)."""

    step_cost = LinearStepCost(step_s=0.5, per_token_s=0.0, per_context_token_s=0.0)


TARGET = f"{__name__}.CountingExecutor"


def test_a_config_names_the_executor_and_its_arguments(compose_cfg):
    CountingExecutor.instances.clear()
    cfg = compose_cfg(*CPU, f"engine.executor._target_={TARGET}", "+engine.executor.tag=x")
    result = run(cfg, None)
    (executor,) = CountingExecutor.instances
    assert executor.tag == "x"
    assert executor.launches == result.summary["num_steps"] > 0
    assert result.summary["num_finished"] == 6


def test_cheap_constructor_builds_no_model(compose_cfg):
    executor = build_executor(compose_cfg(*CPU))
    assert executor.model is None and executor.runner is None
    assert executor.max_model_len == executor.args.max_position_embeddings


def test_a_bad_executor_argument_names_the_key(compose_cfg):
    cfg = compose_cfg(*CPU, f"engine.executor._target_={TARGET}", "+engine.executor.colour=red")
    with pytest.raises(ConfigError, match="engine.executor"):
        run(cfg, None)


def test_virtual_step_time_comes_from_the_step_cost_model(compose_cfg):
    knobs = ("engine.virtual_cost.step_s=0.25", "engine.virtual_cost.per_token_s=0",
             "engine.virtual_cost.per_context_token_s=0")  # fmt: skip
    result = run(compose_cfg(*CPU, "engine.clock=virtual", *knobs), None)
    steps = result.steps
    assert (steps.device_time_s == 0.25).all()
    assert steps.start_s.diff().dropna().min() >= 0.25 - 1e-12


def test_an_executor_with_its_own_step_cost_drives_the_virtual_clock(compose_cfg):
    target = f"engine.executor._target_={__name__}.ModelledExecutor"
    result = run(compose_cfg(*CPU, target, "engine.clock=virtual"), None)
    assert (result.steps.device_time_s == 0.5).all()
    with pytest.raises(ConfigError, match="engine.clock=virtual"):
        run(compose_cfg(*CPU, target, "engine.clock=wall"), None)
