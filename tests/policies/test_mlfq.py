"""Skip-join MLFQ: the initial level from the prompt, demotion by tokens generated, preemption of
lower levels, starvation promotion, and short jobs past long ones on a real engine."""

from __future__ import annotations

from dataclasses import replace

from policies.base import Preemption
from policies.fcfs import FcfsPolicy
from policies.mlfq import MlfqPolicy
from tests.policies.conftest import make_decode, make_request_view, make_view, tiny_specs


def test_skip_join_level_from_the_first_iteration_and_short_prompts_first():
    # Quanta 2, 4, 8, 16 iterations; a prefill of 16 tokens costs one.
    policy = MlfqPolicy(num_levels=4, base_quantum=2, prompt_tokens_per_iteration=16)
    levels = [policy.join_level(make_request_view("r", num_prompt_tokens=p))
              for p in (16, 32, 40, 100, 1000)]  # fmt: skip
    assert levels == [0, 0, 1, 2, 3]
    waiting = [make_request_view("long", 0.0, 100), make_request_view("short", 1.0, 16)]
    d = policy.schedule(make_view(waiting=waiting, max_num_seqs=1))
    assert d.num_scheduled_tokens == {"short": 16}  # fcfs would admit "long"


def test_demoted_after_its_quantum_then_preempted_by_a_new_job():
    policy = MlfqPolicy(num_levels=4, base_quantum=2, prompt_tokens_per_iteration=16)
    view = make_view(waiting=[make_request_view("a", 0.0, 16)], max_num_seqs=1)
    assert policy.schedule(view).num_scheduled_tokens == {"a": 16}  # 1 iteration of 2 at level 0
    running = make_decode("a", 0.0, num_prompt_tokens=16, outputs=1)
    b = make_request_view("b", 1.0, 16)
    d = policy.schedule(make_view(running=[running], waiting=[b], max_num_seqs=1))
    assert d.num_scheduled_tokens == {"a": 1} and not d.preempt  # same level: no preemption
    assert policy.jobs["a"].level == 1  # its second token used level 0's quantum
    running = make_decode("a", 0.0, num_prompt_tokens=16, outputs=2)
    d = policy.schedule(make_view(running=[running], waiting=[b], max_num_seqs=1))
    assert d.preempt == {"a": Preemption.SWAP} and d.num_scheduled_tokens == {"b": 16}


def test_lower_levels_preempted_for_blocks_lowest_level_latest_arrival_first():
    policy = MlfqPolicy(num_levels=4, base_quantum=2, prompt_tokens_per_iteration=16,
                        preemption="recompute")  # fmt: skip
    # Fresh running jobs join by their prompts: 'mid' level 1, 'low_old'/'low_new' level 3.
    running = [make_decode("low_old", 0.0, num_prompt_tokens=300, outputs=1),
               make_decode("low_new", 1.0, num_prompt_tokens=300, outputs=1),
               make_decode("mid", 2.0, num_prompt_tokens=40, outputs=1)]  # fmt: skip
    short = make_request_view("short", 3.0, 48)  # 3 blocks
    view = make_view(running=running, waiting=[short], num_free_blocks=2, max_num_batched_tokens=49)
    d = policy.schedule(view)
    assert d.preempt == {"low_new": Preemption.RECOMPUTE}
    # 'short' and 'mid' take the whole budget; 'low_old' idles this step, its KV in place.
    assert d.num_scheduled_tokens == {"mid": 1, "short": 48}


def test_starving_job_promoted_to_the_top_level():
    policy = MlfqPolicy(num_levels=4, base_quantum=2, prompt_tokens_per_iteration=16,
                        starvation_s=1.0)  # fmt: skip
    long = make_request_view("long", 0.0, 200)
    policy.schedule(make_view(waiting=[long], max_num_seqs=0))  # joins level 3, not served
    short = make_request_view("short", 4.0, 16)
    view = replace(make_view(waiting=[long, short], max_num_seqs=1), now_s=5.0)
    assert policy.schedule(view).num_scheduled_tokens == {"long": 200}
    assert MlfqPolicy(num_levels=4, base_quantum=2, prompt_tokens_per_iteration=16).schedule(
        view
    ).num_scheduled_tokens == {"short": 16}  # without the guard


def test_short_jobs_pass_long_ones_under_head_of_line_blocking(scenario):
    # Two long jobs hold both seats; four short ones arrive once the long ones are demoted.
    specs = tiny_specs([32] * 6, [40, 40, 4, 4, 4, 4], arrivals=[0, 0, 0.06, 0.06, 0.07, 0.08])
    _, mlfq, steps = scenario(MlfqPolicy(), specs, max_num_seqs=2)
    _, fcfs, _ = scenario(FcfsPolicy(), specs, max_num_seqs=2)
    short, long = ["r2", "r3", "r4", "r5"], ["r0", "r1"]
    assert mlfq.loc[short].finish_s.max() < mlfq.loc[long].finish_s.min()
    assert fcfs.loc[short].finish_s.min() > fcfs.loc[long].finish_s.min()  # blocked under fcfs
    assert mlfq.loc[short].e2e_s.mean() < 0.5 * fcfs.loc[short].e2e_s.mean()
    assert steps.num_swapped_out_blocks.sum() > 0 and (mlfq.num_preemptions == mlfq.num_swaps).all()
