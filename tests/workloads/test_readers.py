"""Each reader on small hand-written files and on the head of the public traces."""

from __future__ import annotations

import numpy as np
import pytest

from tests.workloads.conftest import (
    AZURE_2023,
    AZURE_2024,
    BURSTGPT,
    LENGTHS_ONLY,
    MOONCAKE,
    VIDUR_TIMED,
    trace_path,
)
from workloads.readers import detect_format
from workloads.trace import TraceWorkload


def load(path, **kw):
    w = TraceWorkload(str(path), **kw)
    return w, w.load(seed=0, max_model_len=1 << 20)


def test_azure_2023_fractional_seconds_of_any_precision(write_file):
    w, t = load(write_file("a.csv", AZURE_2023))
    assert w.stats["format"] == "azure"
    np.testing.assert_allclose(t.arrival_s, [0.0, 0.49941, 1.31941, 3.819410001], atol=1e-9)
    assert t.prompt_tokens.tolist() == [374, 396, 100, 7]
    assert t.output_tokens.tolist() == [44, 109, 1, 300]


def test_azure_2024_with_zone_offset(write_file):
    _, t = load(write_file("a.csv", AZURE_2024))
    np.testing.assert_allclose(t.arrival_s, [0.0, 0.49007, 1.99007], atol=1e-9)
    assert t.prompt_tokens.tolist() == [2162, 1500, 30]


def test_mooncake_shared_hash_ids_share_prompt_tokens(write_file):
    w = TraceWorkload(str(write_file("m.jsonl", MOONCAKE)))
    specs = w.build(seed=3, vocab_size=1000, max_model_len=1 << 20)
    a, b, c = (s.prompt_ids for s in specs)
    assert [len(a), len(b), len(c)] == [1100, 1030, 600]
    assert a[:1024] == b[:1024]  # blocks 0 and 1 shared
    assert a[1024:1030] != b[1024:1030]  # block 2 vs block 3
    assert a[:512] != c[:512]
    assert [s.arrival_s for s in specs] == [0.0, 0.25, 1.0]
    again = TraceWorkload(str(write_file("m.jsonl", MOONCAKE))).build(3, 1000, 1 << 20)
    assert [s.prompt_ids for s in again] == [a, b, c]  # seeded


def test_mooncake_public_trace_prefix_sharing():
    w = TraceWorkload(str(trace_path("mooncake_conversation_trace.jsonl")), max_requests=30)
    specs = w.build(seed=0, vocab_size=2048, max_model_len=1 << 20)
    table = w.load(seed=0, max_model_len=1 << 20)
    assert len(specs) == 30 and w.stats["format"] == "mooncake"
    for spec, n in zip(specs, table.prompt_tokens, strict=True):
        assert len(spec.prompt_ids) == n
    # the first three requests share hash id 0: their first 512 tokens are equal
    assert table.hash_ids[0][0] == table.hash_ids[1][0] == 0
    assert specs[0].prompt_ids[:512] == specs[1].prompt_ids[:512]
    assert specs[0].prompt_ids[512:1024] != specs[1].prompt_ids[512:1024]


def test_burstgpt_filters_and_failed_requests(write_file):
    path = write_file("b.csv", BURSTGPT)
    w, t = load(path, models=["ChatGPT"], log_types=["Conversation log"])
    assert w.stats["format"] == "burstgpt"
    assert t.prompt_tokens.tolist() == [472, 300]  # GPT-4, API log filtered; one failure dropped
    assert w.stats["num_filtered_out"] == 2 and w.stats["num_failed"] == 1
    np.testing.assert_allclose(t.arrival_s, [0.0, 15.0])
    w, t = load(path, failed="keep")
    assert t.output_tokens.tolist() == [18, 1, 1, 60, 30]
    assert w.stats["num_failed"] == 2
    specs = TraceWorkload(str(path)).build(0, 100, 1 << 20)
    assert [s.tenant for s in specs] == ["ChatGPT"] * 3  # failures dropped by default


def test_vidur_timed_and_length_only(write_file):
    _, t = load(write_file("v.csv", VIDUR_TIMED))
    assert t.arrival_s.tolist() == [0.0, 0.25, 1.5]
    path = write_file("l.csv", LENGTHS_ONLY)
    w, t = load(path, arrival={"process": "poisson", "rate": 2.0})
    assert w.stats["format"] == "vidur"
    assert t.prompt_tokens.tolist() == [74, 290, 3772, 10] and t.arrival_s[0] == 0.0
    assert (np.diff(t.arrival_s) > 0).all()


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("AzureLLMInferenceTrace_conv.csv", "azure"),
        ("AzureLLMInferenceTrace_code.csv", "azure"),
        ("mooncake_conversation_trace.jsonl", "mooncake"),
        ("mooncake_synthetic_trace.jsonl", "mooncake"),
        ("sharegpt_8k_filtered_stats_llama2_tokenizer.csv", "vidur"),
        ("arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv", "vidur"),
    ],
)
def test_public_traces_head(name, fmt):
    path = trace_path(name)
    assert detect_format(path) == fmt
    arrival = {"process": "poisson", "rate": 1.0} if fmt == "vidur" else None
    w = TraceWorkload(str(path), max_requests=40, arrival=arrival)
    specs = w.build(seed=0, vocab_size=2048, max_model_len=4096)
    assert len(specs) == 40
    assert specs[0].arrival_s == 0.0
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(specs, specs[1:], strict=False))
    assert all(
        1 <= s.num_prompt_tokens and s.num_prompt_tokens + s.max_output_tokens <= 4096
        for s in specs
    )
    assert w.stats["num_requests"] == 40


def test_public_azure_conv_matches_pandas():
    import pandas as pd

    path = trace_path("AzureLLMInferenceTrace_conv.csv")
    w, t = load(path)
    df = pd.read_csv(path)
    ts = pd.to_datetime(df.TIMESTAMP)
    expect = (ts - ts.iloc[0]).dt.total_seconds().to_numpy()
    np.testing.assert_allclose(t.arrival_s, expect, atol=1e-6)
    assert t.prompt_tokens.tolist() == df.ContextTokens.tolist()
    assert w.stats["num_requests"] == 19366
