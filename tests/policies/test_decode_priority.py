"""Decode priority: running decodes run every step; prompts fill the budget left."""

from __future__ import annotations

from policies.decode_priority import DecodePriorityPolicy
from tests.policies.conftest import make_decode, make_request_view, make_view, tiny_specs


def test_prompts_only_in_the_budget_left_by_decodes():
    running = [make_decode(f"d{i}") for i in range(4)]
    view = make_view(
        running=running,
        waiting=[make_request_view("long", 1.0, 100), make_request_view("short", 2.0, 20)],
        max_num_batched_tokens=100,
    )
    # By default the first prompt that does not fit stops admission (GUARANTEED_NO_EVICT).
    d = DecodePriorityPolicy().schedule(view)
    assert d.num_scheduled_tokens == {f"d{i}": 1 for i in range(4)}
    skip = DecodePriorityPolicy(skip_ahead=True).schedule(view)
    assert skip.num_scheduled_tokens == {**{f"d{i}": 1 for i in range(4)}, "short": 20}


def test_a_large_prompt_at_the_head_is_not_passed_by_later_small_ones(scenario):
    # r0 and r1 reserve 17 of the 48 blocks each (8 + 60 tokens of 4); the large r2 (60 + 40
    # tokens: 25 blocks) waits for one of them to finish. The small r3..r5 (2 blocks each) would
    # fit at once, but arrived after r2.
    specs = tiny_specs(
        [8, 8, 60, 4, 4, 4], [60, 60, 40, 4, 4, 4], arrivals=[0, 0, 0.005, 0.01, 0.02, 0.03]
    )
    _, requests, _ = scenario(
        DecodePriorityPolicy(), specs, block_size=4, num_gpu_blocks=48, max_num_batched_tokens=128
    )
    large = requests.loc["r2", "first_scheduled_s"]
    assert large > requests.loc["r3", "arrival_s"]  # r2 did wait while r3 was there
    later = requests.loc[["r3", "r4", "r5"], "first_scheduled_s"]
    assert (later >= large).all(), later.to_dict()
    assert (requests.status == "finished").all()


def test_never_stalls_a_decode_in_the_engine(scenario):
    specs = tiny_specs(
        [24, 24, 200, 60, 120], [30, 30, 6, 10, 8], arrivals=[0.0, 0.0, 0.01, 0.02, 0.03]
    )
    _, requests, steps = scenario(DecodePriorityPolicy(), specs, max_num_batched_tokens=256)
    assert steps.num_preempted.sum() == 0
    # Every request running after a step decodes in the next one (whole prompts: all running
    # requests are decodes), including the steps that admit a prompt.
    decoding_before = steps.num_running.shift(1).fillna(0).astype(int)
    assert (steps.num_decode_tokens == decoding_before).all()
    assert ((steps.num_prefill_tokens > 0) & (steps.num_decode_tokens > 0)).any()
    assert (requests.status == "finished").all()


def test_admission_reserves_every_request_s_full_length():
    # block size 16 (make_view's default): 'd' holds 3 blocks, will grow to 4 (32 + 40 - 1 tokens
    # need 5: 2 more). 'p' needs 2 blocks now but 4 at full length (32 + 32 - 1 = 63 tokens).
    d = make_decode("d", num_prompt_tokens=32, outputs=4, max_output_tokens=40)
    p = make_request_view("p", 1.0, 32, max_output_tokens=32)
    blocks_now = d.num_blocks + 2  # p's blocks now
    tight = make_view(running=[d], waiting=[p], num_free_blocks=5, num_total_blocks=blocks_now + 3)
    assert "p" not in DecodePriorityPolicy().schedule(tight).num_scheduled_tokens
    assert (
        "p" in DecodePriorityPolicy(reserve_full_length=False).schedule(tight).num_scheduled_tokens
    )
    roomy = make_view(running=[d], waiting=[p], num_free_blocks=6)
    assert DecodePriorityPolicy().schedule(roomy).num_scheduled_tokens == {"d": 1, "p": 32}
