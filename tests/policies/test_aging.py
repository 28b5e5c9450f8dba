"""Aging (`max_wait_s` on fcfs and chunked_prefill): a request past its maximum wait is not
preempted while another candidate is left."""

from __future__ import annotations

import pytest

from policies.base import Preemption
from policies.chunked_prefill import ChunkedPrefillPolicy
from policies.fcfs import FcfsPolicy
from tests.policies.conftest import make_decode, make_view


def _view():
    # a (arrived at 0, low priority) and c (arrived at 9, high priority) both need a new block;
    # one block is free. Without aging the victim is the lowest priority: a.
    a = make_decode("a", 0.0, num_prompt_tokens=29, outputs=4)
    c = make_decode("c", 9.0, num_prompt_tokens=29, outputs=4)
    c = type(c)(**{**{f: getattr(c, f) for f in c.__slots__}, "priority": 1})
    b = make_decode("b", 8.0, num_prompt_tokens=29, outputs=4)
    b = type(b)(**{**{f: getattr(b, f) for f in b.__slots__}, "priority": 1})
    return make_view(running=[a, b, c], num_free_blocks=1)


@pytest.mark.parametrize("policy", [FcfsPolicy, ChunkedPrefillPolicy])
def test_a_request_past_its_maximum_wait_is_not_the_victim(policy):
    view = _view()
    view = type(view)(**{**view.__dict__, "now_s": 10.0})
    assert policy().schedule(view).preempt == {"a": Preemption.RECOMPUTE}
    # a has been in the system 10 s > 5 s: protected; the victim is the latest arrival, c
    assert policy(max_wait_s=5.0).schedule(view).preempt == {"c": Preemption.RECOMPUTE}
    # once every candidate is past its wait, the usual order applies again
    assert policy(max_wait_s=0.5).schedule(view).preempt == {"a": Preemption.RECOMPUTE}
