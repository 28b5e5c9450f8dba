"""The Recorder keeps steps by StepRecord's field names: the frame's columns are its fields, and
a step missing a field or naming an unknown one fails instead of shifting the columns."""

from __future__ import annotations

import dataclasses

import pytest

from harness.records import STEP_COLUMNS, Recorder, StepRecord


def _values(**change) -> dict:
    return {name: i for i, name in enumerate(STEP_COLUMNS)} | change


def test_values_land_in_their_named_columns_whatever_the_call_order():
    recorder = Recorder()
    values = _values()
    recorder.on_step_values(**dict(reversed(list(values.items()))))
    frame = recorder.steps_frame()
    assert list(frame.columns) == list(STEP_COLUMNS)
    assert frame.iloc[0].to_dict() == values
    assert recorder.steps == [StepRecord(**values)]


def test_a_missing_or_unknown_field_fails():
    recorder = Recorder()
    values = _values()
    del values["num_waiting"]
    with pytest.raises(TypeError):
        recorder.on_step_values(**values)
    with pytest.raises((TypeError, KeyError)):
        recorder.on_step_values(**_values(), not_a_field=1)
    assert recorder.steps_frame().empty


def test_on_step_and_on_step_values_agree():
    a, b = Recorder(), Recorder()
    record = StepRecord(**_values())
    a.on_step(record)
    b.on_step_values(**dataclasses.asdict(record))
    assert a.steps_frame().equals(b.steps_frame())
