"""EDF: waiting requests by TTFT deadline (arrival + their class's SLO); late ones last if asked."""

from __future__ import annotations

import dataclasses

import pytest

from harness.run import instantiate_node
from policies.edf import EdfPolicy
from policies.fcfs import FcfsPolicy
from tests.policies.conftest import make_request_view, make_view, tiny_specs


def _tenant(request, tenant: str):
    return dataclasses.replace(request, tenant=tenant)


def test_earliest_deadline_first_across_classes():
    # 'loose' arrived first but is due at 0 + 2.0; 'tight' at 1.0 + 0.1.
    loose = make_request_view("loose", 0.0, 100)
    tight = _tenant(make_request_view("tight", 1.0, 100), "chat")
    view = make_view(waiting=[loose, tight], max_num_batched_tokens=150)
    policy = EdfPolicy(ttft_s=2.0, tenant_ttft_s={"chat": 0.1})
    assert policy.deadline_s(tight) == 1.1 and policy.deadline_s(loose) == 2.0
    assert policy.schedule(view).num_scheduled_tokens == {"tight": 100}
    # One class: deadlines are in arrival order, so EDF is FCFS.
    assert EdfPolicy(ttft_s=2.0).schedule(view).num_scheduled_tokens == {"loose": 100}


def test_missed_deadlines_go_last_only_when_asked():
    late = make_request_view("late", 0.0, 100)  # due at 1.0, now is 3.0
    on_time = make_request_view("on_time", 2.5, 100)  # due at 3.5
    view = dataclasses.replace(make_view(waiting=[late, on_time], max_num_batched_tokens=150),
                               now_s=3.0)  # fmt: skip
    assert EdfPolicy(ttft_s=1.0).schedule(view).num_scheduled_tokens == {"late": 100}
    demoting = EdfPolicy(ttft_s=1.0, deprioritize_missed=True)
    assert demoting.schedule(view).num_scheduled_tokens == {"on_time": 100}


def test_a_resumed_request_goes_before_any_deadline():
    resumed = make_request_view("resumed", 5.0, 40, num_output_tokens=3, num_computed_tokens=0)
    fresh = make_request_view("fresh", 0.0, 40)
    view = make_view(waiting=[fresh, resumed], max_num_batched_tokens=50)
    assert EdfPolicy(ttft_s=0.5).schedule(view).num_scheduled_tokens == {"resumed": 43}


def test_ttft_slo_comes_from_the_run_config(compose_cfg):
    cfg = compose_cfg("policy=edf", "slo.ttft_s=0.25", "policy.tenant_ttft_s={chat:0.05}")
    policy = instantiate_node(cfg, "policy")
    assert policy.ttft_s == 0.25 and policy.tenant_ttft_s == {"chat": 0.05}
    assert instantiate_node(compose_cfg("policy=edf", "slo.ttft_s=null"), "policy").ttft_s is None


def test_tight_deadlines_overtake_a_backlog(scenario):
    # Two seats. r0..r3 (tenant 'batch', 2 s SLO) arrive at once; r4, r5 ('chat', 50 ms) just
    # after. fcfs serves the chat requests after the backlog; EDF next, as soon as a seat frees.
    specs = tiny_specs([16] * 6, [12] * 6, arrivals=[0, 0, 0, 0, 0.002, 0.002])
    specs = [
        dataclasses.replace(s, tenant="chat" if i >= 4 else "batch") for i, s in enumerate(specs)
    ]
    kw = dict(max_num_seqs=2)
    policy = EdfPolicy(ttft_s=2.0, tenant_ttft_s={"chat": 0.05})
    _, fcfs, _ = scenario(FcfsPolicy(), specs, **kw)
    _, edf, _ = scenario(policy, specs, **kw)
    chat, batch = ["r4", "r5"], ["r2", "r3"]
    assert fcfs.loc[chat, "first_scheduled_s"].min() > fcfs.loc[batch, "first_scheduled_s"].max()
    assert edf.loc[chat, "first_scheduled_s"].max() < edf.loc[batch, "first_scheduled_s"].min()
    assert edf.loc[chat, "ttft_s"].max() < fcfs.loc[chat, "ttft_s"].min()
    assert (edf.status == "finished").all()
    assert edf.output_ids.to_dict() == fcfs.output_ids.to_dict()
    # Demoting missed deadlines: with a 1 ms SLO the chat requests are late on arrival and go
    # behind the whole on-time backlog.
    demoting = EdfPolicy(ttft_s=2.0, tenant_ttft_s={"chat": 0.001}, deprioritize_missed=True)
    _, late, _ = scenario(demoting, specs, **kw)
    assert late.loc[chat, "first_scheduled_s"].min() > late.loc[batch, "first_scheduled_s"].max()


def _class(request, slo_class: str | None, tenant: str = "default"):
    return dataclasses.replace(request, slo_class=slo_class, tenant=tenant)


def test_a_requests_slo_class_sets_its_deadline_before_its_tenant():
    policy = EdfPolicy(
        ttft_s=2.0, tenant_ttft_s={"acme": 1.0}, class_ttft_s={"interactive": 0.5, "batch": 5.0}
    )
    r = make_request_view("r", 10.0, 100)
    assert policy.deadline_s(_class(r, "interactive", "acme")) == 10.5  # the class wins
    assert policy.deadline_s(_class(r, "batch")) == 15.0
    assert policy.deadline_s(_class(r, "unknown", "acme")) == 11.0  # no such class: the tenant's
    assert policy.deadline_s(_class(r, None, "acme")) == 11.0
    assert policy.deadline_s(_class(r, None)) == 12.0  # neither: the run's slo.ttft_s
    zero = EdfPolicy(ttft_s=2.0, tenant_ttft_s={"acme": 1.0}, class_ttft_s={"now": 0.0})
    assert zero.deadline_s(_class(r, "now", "acme")) == 10.0  # a 0 s class is not "unset"


def test_a_later_interactive_request_overtakes_an_earlier_batch_one():
    # Same tenant: only the SLO class tells them apart. 'batch' arrived first but is due at
    # 0 + 5.0; 'chat' at 1.0 + 0.5.
    batch = _class(make_request_view("batch", 0.0, 100), "batch")
    chat = _class(make_request_view("chat", 1.0, 100), "interactive")
    view = make_view(waiting=[batch, chat], max_num_batched_tokens=150)
    classes = {"interactive": 0.5, "batch": 5.0}
    assert EdfPolicy(ttft_s=2.0, class_ttft_s=classes).schedule(view).num_scheduled_tokens == {
        "chat": 100
    }
    # Without the class map both are due at arrival + 2 s: arrival order.
    assert EdfPolicy(ttft_s=2.0).schedule(view).num_scheduled_tokens == {"batch": 100}
    with pytest.raises(ValueError, match=">= 0"):
        EdfPolicy(class_ttft_s={"batch": -1.0})


def test_class_slos_come_from_the_run_config(compose_cfg):
    cfg = compose_cfg("policy=edf", "policy.class_ttft_s={interactive:0.5,batch:5}")
    assert instantiate_node(cfg, "policy").class_ttft_s == {"interactive": 0.5, "batch": 5.0}
    assert instantiate_node(compose_cfg("policy=edf"), "policy").class_ttft_s == {}


def test_interactive_class_overtakes_a_batch_backlog_in_the_engine(scenario):
    # One tenant, two seats: r0..r3 ('batch' class, 5 s) arrive at once, r4, r5 ('interactive',
    # 50 ms) just after. EDF by class serves the interactive ones as soon as a seat frees.
    specs = tiny_specs([16] * 6, [12] * 6, arrivals=[0, 0, 0, 0, 0.002, 0.002])
    specs = [
        dataclasses.replace(s, slo_class="interactive" if i >= 4 else "batch")
        for i, s in enumerate(specs)
    ]
    policy = EdfPolicy(ttft_s=2.0, class_ttft_s={"interactive": 0.05, "batch": 5.0})
    _, edf, _ = scenario(policy, specs, max_num_seqs=2)
    chat, batch = ["r4", "r5"], ["r2", "r3"]
    assert edf.loc[chat, "first_scheduled_s"].max() < edf.loc[batch, "first_scheduled_s"].min()
