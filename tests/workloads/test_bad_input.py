"""Bad input fails with a WorkloadError naming the file, the line and the column."""

from __future__ import annotations

import pytest

from harness.config import CONFIG_ERRORS
from tests.workloads.conftest import AZURE_2023, MOONCAKE
from workloads.errors import WorkloadError
from workloads.readers import csv_common
from workloads.trace import TraceWorkload

H = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW = "2023-11-16 18:15:46.68,374,44\n"


def fail(path, **kw) -> WorkloadError:
    with pytest.raises(WorkloadError) as info:
        TraceWorkload(str(path), **kw).load(seed=0, max_model_len=4096)
    assert str(path) in str(info.value)
    return info.value


def test_is_a_config_error():
    assert WorkloadError in CONFIG_ERRORS and issubclass(WorkloadError, ValueError)


def test_missing_file(tmp_path):
    err = fail(tmp_path / "nope.csv")
    assert "not found" in str(err) and "HARNESS_TRACES" in str(err)


@pytest.mark.parametrize(
    "name, text, line, column, words",
    [
        ("unknown.csv", "a,b,c\n1,2,3\n", 1, None, "unknown trace format"),
        (
            "renamed.csv",
            "TIMESTAMP,PromptTokens,GeneratedTokens\n" + ROW,
            1,
            "ContextTokens",
            "missing column",
        ),
        ("empty.csv", "", 1, None, "empty trace"),
        ("header_only.csv", H, 2, None, "empty trace"),
        ("nonnum.csv", H + ROW + "2023-11-16 18:15:47,3x6,5\n", 3, "ContextTokens", "'3x6'"),
        (
            "negative.csv",
            H + ROW + ROW + "2023-11-16 18:15:47,3,-5\n",
            4,
            "GeneratedTokens",
            "'-5'",
        ),
        ("blank.csv", H + ROW + "2023-11-16 18:15:47,,5\n", 3, "ContextTokens", "empty value"),
        ("badtime.csv", H + ROW + "yesterday,3,5\n", 3, "TIMESTAMP", "not a timestamp"),
        (
            "mixedzone.csv",
            H + ROW + "2023-11-16 18:15:47+00:00,3,5\n",
            3,
            "TIMESTAMP",
            "zone offset",
        ),
        (
            "unsorted.csv",
            H + ROW + "2023-11-16 18:15:48,3,5\n2023-11-16 18:15:47,3,5\n",
            4,
            "TIMESTAMP",
            "not sorted",
        ),
        (
            "float.csv",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,2.5,3\n",
            3,
            "num_prefill_tokens",
            "integer",
        ),
        (
            "negtime.csv",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n-1,2,3\n",
            3,
            "arrived_at",
            ">= 0",
        ),
        (
            "bgpt.csv",
            "Timestamp,Model,Request tokens,Response tokens,Log Type\n1,ChatGPT,5,5,API log\nsoon,ChatGPT,5,5,API log\n",
            3,
            "Timestamp",
            "not a number",
        ),
        ("m1.jsonl", MOONCAKE + "{oops\n", 4, None, "not JSON"),
        (
            "m2.jsonl",
            '{"timestamp": 0, "input_length": 5, "hash_ids": [0]}\n',
            1,
            "output_length",
            "missing field",
        ),
        (
            "m3.jsonl",
            MOONCAKE
            + '{"timestamp": 2000, "input_length": -1, "output_length": 1, "hash_ids": []}\n',
            4,
            "input_length",
            ">= 0",
        ),
        (
            "m4.jsonl",
            MOONCAKE + '{"timestamp": 2, "input_length": 1, "output_length": 1, "hash_ids": [7]}\n',
            4,
            "timestamp",
            "not sorted",
        ),
        (
            "m5.jsonl",
            '{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": ["a"]}\n',
            1,
            "hash_ids",
            "integers",
        ),
    ],
)
def test_bad_file_names_line_and_column(write_file, name, text, line, column, words):
    err = fail(write_file(name, text))
    assert err.line == line, str(err)
    assert f"line {line}" in str(err)
    assert err.column == column
    if column:
        assert repr(column) in str(err)
    assert words in str(err)


def test_errors_in_later_batches_name_the_right_line(write_file, monkeypatch):
    monkeypatch.setattr(csv_common, "BLOCK_BYTES", 128)  # a batch of ~4 rows
    rows = [f"2023-11-16 18:{m:02d}:00.5,{m + 1},7\n" for m in range(40)]
    rows[30] = "2023-11-16 18:30:00.5,12,x\n"
    err = fail(write_file("late.csv", H + "".join(rows)))
    assert (err.line, err.column) == (32, "GeneratedTokens")
    rows[30] = "2023-11-16 18:01:00.5,12,7\n"
    err = fail(write_file("late2.csv", H + "\n" + "".join(rows)))  # a blank line counts too
    assert (err.line, err.column) == (33, "TIMESTAMP")


def test_unsorted_with_sort_true_warns_and_sorts(write_file):
    path = write_file("u.csv", H + "2023-11-16 18:15:48,3,5\n2023-11-16 18:15:47,4,5\n" + ROW)
    with pytest.warns(UserWarning, match="not sorted"):
        table = TraceWorkload(str(path), sort=True).load(0, 4096)
    assert table.prompt_tokens.tolist() == [374, 4, 3]
    assert table.arrival_s == pytest.approx([0.0, 0.32, 1.32])


def test_bad_options(write_file):
    path = write_file("a.csv", AZURE_2023)
    assert "format" in str(fail(path, format="parquet"))
    assert "burstgpt" in str(fail(path, models=["ChatGPT"]))
    assert "workload.arrival" in str(
        fail(write_file("l.csv", "num_prefill_tokens,num_decode_tokens\n1,2\n"))
    )
    assert "no request left" in str(fail(path, start_s=100))
    with pytest.raises(WorkloadError, match="max_requests"):
        TraceWorkload(str(path), max_requests=0)
    with pytest.raises(WorkloadError, match="workload.clip"):
        TraceWorkload(str(path), clip="squash")
    with pytest.raises(WorkloadError, match="not both"):
        TraceWorkload(str(path), time_scale=2, target_rate=1)
