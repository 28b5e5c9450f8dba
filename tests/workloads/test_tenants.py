"""Request attributes (tenant, priority, SLO class): kept by every reader, mixed by
MultiTenantWorkload, counted by `describe`."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hydra.utils import instantiate

from tests.workloads.conftest import BURSTGPT
from workloads.describe import format_summary, summarize
from workloads.errors import WorkloadError
from workloads.readers import csv_common
from workloads.synthetic import SyntheticWorkload
from workloads.table import RequestTable
from workloads.tenants import MultiTenantWorkload
from workloads.trace import TraceWorkload

AZURE_ATTRS = """TIMESTAMP,ContextTokens,GeneratedTokens,tenant,priority,slo_class
2023-11-16 18:15:46.68,374,44,acme, 2 ,interactive
2023-11-16 18:15:47.18,396,109,,,
2023-11-16 18:15:48,100,1,zeta,-1,batch
"""
VIDUR_ATTRS = "arrived_at,num_prefill_tokens,num_decode_tokens,priority\n0,5,1,3\n1,6,2,0\n"
MOONCAKE_ATTRS = """{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [0], "tenant": "a", "priority": 2, "slo_class": "interactive"}
{"timestamp": 250, "input_length": 10, "output_length": 7, "hash_ids": [1]}
{"timestamp": 500, "input_length": 10, "output_length": 7, "hash_ids": [2], "slo_class": null}
"""


def build(path, **kw):
    return TraceWorkload(str(path), **kw).build(seed=0, vocab_size=100, max_model_len=4096)


def attrs(specs):
    return [(s.tenant, s.priority, s.slo_class) for s in specs]


def test_csv_attribute_columns_reach_the_specs_blank_is_default(write_file):
    specs = build(write_file("a.csv", AZURE_ATTRS))
    assert attrs(specs) == [("acme", 2, "interactive"), ("default", 0, None), ("zeta", -1, "batch")]
    specs = build(write_file("v.csv", VIDUR_ATTRS))
    assert attrs(specs) == [("default", 3, None), ("default", 0, None)]


def test_burstgpt_tenant_column_wins_over_model(write_file):
    text = BURSTGPT.replace("Log Type\n", "Log Type,tenant\n", 1).replace(" log\n", " log,t\n")
    specs = build(write_file("b.csv", text))
    assert {s.tenant for s in specs} == {"t"}
    assert {s.tenant for s in build(write_file("b0.csv", BURSTGPT))} == {"ChatGPT"}


def test_mooncake_attribute_fields(write_file):
    specs = build(write_file("m.jsonl", MOONCAKE_ATTRS))
    assert attrs(specs) == [("a", 2, "interactive"), ("default", 0, None), ("default", 0, None)]


def test_attributes_survive_sorting_and_sampling(write_file):
    text = AZURE_ATTRS.replace("18:15:48", "18:15:40")  # the last row becomes the first
    w = TraceWorkload(str(write_file("a.csv", text)), sort=True, sample_requests=2)
    with pytest.warns(UserWarning, match="not sorted"):
        specs = w.build(0, 100, 4096)
    assert len(specs) == 2 and specs[0].tenant == "zeta" and specs[0].priority == -1


@pytest.mark.parametrize("value", ["1.5", "high", "9" * 19])
def test_csv_priority_must_be_an_integer(write_file, value):
    path = write_file("a.csv", AZURE_ATTRS.replace(",-1,", f",{value},"))
    with pytest.raises(WorkloadError, match=r"line 4, column 'priority'.*must be an integer"):
        build(path)


def test_csv_bad_priority_in_a_later_batch_names_its_line(write_file, monkeypatch):
    monkeypatch.setattr(csv_common, "BLOCK_BYTES", 64)
    path = write_file("a.csv", AZURE_ATTRS + "2023-11-16 18:15:49,1,1,x,one,y\n")
    with pytest.raises(WorkloadError, match="line 5, column 'priority'"):
        build(path)


@pytest.mark.parametrize(
    "field, value, words",
    [("priority", "1.5", "priority must be an integer"), ("priority", "true", "integer"),
     ("tenant", "7", "tenant must be a string"), ("slo_class", "[1]", "string or null")],
)  # fmt: skip
def test_mooncake_bad_attribute_names_line_and_field(write_file, field, value, words):
    row = f'{{"timestamp": 9, "input_length": 1, "output_length": 1, "hash_ids": [], "{field}": {value}}}\n'
    with pytest.raises(WorkloadError, match=f"line 4, column '{field}': .*{words}"):
        build(write_file("m.jsonl", MOONCAKE_ATTRS + row))


def test_concat_fills_a_missing_attribute_with_its_default():
    one = RequestTable(np.zeros(1), np.ones(1, int), np.ones(1, int), priorities=np.array([5]))
    two = RequestTable(np.zeros(1), np.ones(1, int), np.ones(1, int), slo_classes=np.array(["x"]))
    both = RequestTable.concat([one, two])
    assert both.priorities.tolist() == [5, 0] and both.slo_classes.tolist() == [None, "x"]
    assert both.tenants is None and both.attribute("tenants").tolist() == ["default"] * 2


def tenant(name, rate, n, prompt=100, **kw):
    return {
        "name": name, "num_requests": n, "arrival": {"process": "poisson", "rate": rate},
        "prompt_len": {"kind": "fixed", "value": prompt},
        "output_len": {"kind": "uniform", "min": 1, "max": 50}, **kw,
    }  # fmt: skip


def test_multi_tenant_mixes_rates_lengths_and_attributes():
    heavy = tenant("heavy", 40.0, 2000, prompt=64)
    light = tenant("light", 10.0, 500, prompt=512, priority=2, slo_class="interactive")
    w = MultiTenantWorkload([heavy, light])
    specs = w.build(seed=0, vocab_size=100, max_model_len=4096)
    assert [s.request_id for s in specs] == [f"r{i:06d}" for i in range(2500)]
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(specs, specs[1:], strict=False))
    assert Counter(attrs(specs)) == {("heavy", 0, None): 2000, ("light", 2, "interactive"): 500}
    assert {s.num_prompt_tokens for s in specs if s.tenant == "light"} == {512}
    for name, rate in (("heavy", 40.0), ("light", 10.0)):
        times = np.array([s.arrival_s for s in specs if s.tenant == name])
        assert len(times) / times[-1] == pytest.approx(rate, rel=0.1)
    again = MultiTenantWorkload([heavy, light]).build(0, 100, 4096)
    assert again == specs and MultiTenantWorkload([heavy, light]).build(1, 100, 4096) != specs


def test_changing_one_tenant_leaves_the_others_requests():
    a = MultiTenantWorkload([tenant("x", 5.0, 30), tenant("y", 5.0, 30)]).load(0, 4096)
    b = MultiTenantWorkload([tenant("x", 9.0, 50), tenant("y", 5.0, 30)]).load(0, 4096)
    y_a, y_b = (t.take(t.tenants == "y") for t in (a, b))
    np.testing.assert_array_equal(y_a.arrival_s, y_b.arrival_s)
    np.testing.assert_array_equal(y_a.output_tokens, y_b.output_tokens)
    assert not np.array_equal(a.take(a.tenants == "x").arrival_s, y_a.arrival_s)


@pytest.mark.parametrize(
    "tenants, words",
    [
        ([], "non-empty list"),
        ([tenant("x", 1.0, 5, rte=2)], r"workload.tenants\[0\].rte: unknown key"),
        ([{"name": "x"}], r"tenants\[0\].num_requests is required"),
        ([tenant("x", 1.0, 5), tenant("x", 1.0, 5)], r"tenants\[1\].name='x' is used twice"),
        ([tenant("x", 1.0, 5, priority=1.5)], r"tenants\[0\].priority must be an integer"),
        ([tenant("x", 1.0, 5, slo_class=3)], r"tenants\[0\].slo_class must be a string"),
        ([tenant("", 1.0, 5)], r"tenants\[0\].tenant must be a non-empty string"),
    ],
)
def test_bad_tenants_name_the_key(tenants, words):
    with pytest.raises(WorkloadError, match=words):
        MultiTenantWorkload(tenants)


def test_bad_tenant_arrival_names_the_tenant():
    w = MultiTenantWorkload([tenant("x", 1.0, 5), tenant("y", -1.0, 5)])
    with pytest.raises(WorkloadError, match=r"workload.tenants\[1\].arrival: rate"):
        w.load(0, 4096)


def test_synthetic_carries_its_tenant_priority_and_slo_class():
    w = SyntheticWorkload(
        num_requests=3, arrival={"process": "poisson", "rate": 1.0},
        prompt_len={"kind": "fixed", "value": 4}, output_len={"kind": "fixed", "value": 2},
        tenant="t", priority=-3, slo_class="batch",
    )  # fmt: skip
    assert set(attrs(w.build(0, 100, 4096))) == {("t", -3, "batch")}


def test_two_tenants_preset_one_tenant_at_four_times_the_rate(compose_cfg):
    w = instantiate(compose_cfg("workload=two_tenants").workload, _convert_="all")
    specs = w.build(seed=0, vocab_size=2048, max_model_len=4096)
    counts = Counter(s.tenant for s in specs)
    assert counts["batch"] == 4 * counts["interactive"]
    spans = {n: max(s.arrival_s for s in specs if s.tenant == n) for n in counts}
    assert spans["batch"] == pytest.approx(spans["interactive"], rel=0.5)  # both ~10 s
    assert {(s.tenant, s.priority, s.slo_class) for s in specs} == {
        ("batch", 0, "batch"), ("interactive", 1, "interactive"),
    }  # fmt: skip


def test_describe_counts_requests_by_tenant_only_when_several():
    w = MultiTenantWorkload([tenant("x", 5.0, 30), tenant("yy", 5.0, 10)])
    table = w.load(0, 4096)
    text = format_summary("t", summarize(table), w.stats)
    assert "tenant x   30" in text and "tenant yy  10" in text
    single = MultiTenantWorkload([tenant("x", 5.0, 30)]).load(0, 4096)
    assert "requests_by_tenant" not in summarize(single)
