"""VTC: the least-served backlogged tenant first, counters charged with what is served, counter
lift for newly backlogged tenants, and the paper's service-gap bound on a real engine."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from harness.request import RequestSpec
from policies.fcfs import FcfsPolicy
from policies.vtc import VtcPolicy
from tests.policies.conftest import make_decode, make_request_view, make_view


def _req(request_id, tenant, arrival_s=0.0, prompt=32, **kw):
    return replace(make_request_view(request_id, arrival_s, prompt, **kw), tenant=tenant)


def test_least_served_tenant_first_and_charged_at_admission():
    # Counters start equal: A's earliest prompt goes first, and its charge (100 + 2) puts B ahead
    # of A's second prompt, although A's arrived first.
    waiting = [_req("a1", "A", 0.0, 100), _req("a2", "A", 1.0, 100), _req("b1", "B", 2.0, 100)]
    policy = VtcPolicy()
    d = policy.schedule(make_view(waiting=waiting, max_num_seqs=2))
    assert d.num_scheduled_tokens == {"a1": 100, "b1": 100}
    assert policy.counters == {"A": 102.0, "B": 102.0}


def test_decodes_charge_w_q_and_a_recompute_charges_only_its_new_token():
    policy = VtcPolicy(w_p=1.0, w_q=3.0, tenant_weights={"B": 2.0})
    decode = replace(make_decode("a", 0.0), tenant="A")
    assert policy.cost(decode, 1) == 3.0
    recompute = replace(make_request_view("b", 0.0, 32, num_output_tokens=5, num_computed_tokens=0),
                        tenant="B")  # fmt: skip
    assert policy.cost(recompute, recompute.num_tokens) == 3.0 / 2  # the prompt was paid once
    assert policy.cost(_req("c", "B", prompt=10), 10) == (10 + 3.0) / 2


def test_newly_backlogged_tenant_is_lifted_to_the_least_served():
    policy = VtcPolicy()
    a1, a2 = _req("a1", "A", 0.0, 300), _req("a2", "A", 0.1, 300)
    b1, b2 = _req("b1", "B", 0.2, 100), _req("b2", "B", 0.3, 100)
    policy.schedule(make_view(waiting=[a1, a2, b1, b2], max_num_seqs=2))  # A=302, B=102
    # C was idle: without the lift its counter 0 would give it both free seats.
    c1, c2 = _req("c1", "C", 1.0, 10), _req("c2", "C", 1.1, 10)
    running = [replace(make_decode(r.request_id, r.arrival_s, num_prompt_tokens=r.num_prompt_tokens,
                                   outputs=1), tenant=r.tenant) for r in (a1, b1)]  # fmt: skip
    d = policy.schedule(make_view(running=running, waiting=[a2, b2, c1, c2], max_num_seqs=4))
    # C lifted to B's 102; A and B decode (+2 each); C's c1 (+12) then B's b2 (104 < 114).
    assert d.num_scheduled_tokens == {"a1": 1, "b1": 1, "c1": 10, "b2": 100}
    assert policy.counters["C"] == 114.0


def service_gap(requests, w_p: float, w_q: float, tenants: tuple[str, str]) -> float:
    """Largest difference between the two tenants' service over any interval in which both
    are backlogged (from 0, when everything arrives, to the first tenant's last admission):
    max - min of the difference of their cumulative services."""
    end_s = requests.groupby("tenant").first_scheduled_s.max().min()
    events = []
    for r in requests.itertuples():
        sign = 1.0 if r.tenant == tenants[0] else -1.0
        for i, t in enumerate(r.token_times_s):
            events.append((t, sign * (w_q + (w_p * r.prompt_tokens if i == 0 else 0.0))))
    events.sort()
    diff = np.cumsum([0.0] + [v for t, v in events if t <= end_s])
    return float(diff.max() - diff.min())


def test_service_gap_between_backlogged_tenants_within_the_bound(scenario):
    # All at t=0, the heavy tenant's 12 requests ahead of the light one's 4 in arrival order; two
    # seats. FCFS serves the heavy tenant alone until its queue is nearly empty; VTC alternates.
    rng = np.random.default_rng(0)
    specs = [RequestSpec(f"{t}{i:02d}", 0.0, tuple(rng.integers(0, 2048, 32).tolist()), 8, tenant=t)
             for t, n in (("h", 12), ("l", 4)) for i in range(n)]  # fmt: skip
    num_seqs, w_p, w_q = 2, 1.0, 2.0
    # Paper's bound 2U, U = max(w_p * longest prompt, w_q * most tokens a running batch holds).
    bound = 2 * max(w_p * 32, w_q * num_seqs * (32 + 8))
    _, vtc, _ = scenario(VtcPolicy(w_p, w_q), specs, max_num_seqs=num_seqs)
    _, fcfs, _ = scenario(FcfsPolicy(), specs, max_num_seqs=num_seqs)
    assert service_gap(vtc, w_p, w_q, ("h", "l")) <= bound
    assert service_gap(fcfs, w_p, w_q, ("h", "l")) > bound
    light_admitted_by = vtc[vtc.tenant == "l"].first_scheduled_s.max()
    assert (vtc[vtc.tenant == "h"].first_scheduled_s < light_admitted_by).sum() <= 5
