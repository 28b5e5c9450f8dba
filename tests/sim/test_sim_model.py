"""The simulator's step-time model: batch features (CUDA-graph buckets, causal and dense
attention work), the non-negative fit, and the calibration plan's validity."""

from __future__ import annotations

import numpy as np
import pytest

from harness.batch import Batch
from harness.calibrate import QUICK, build_plan
from harness.sim_model import FEATURES, features, fit_relative, nnls


def _batch(decode_ctx: list[int], prefill: list[tuple[int, int]]) -> Batch:
    """Decode rows at these contexts, then prefill rows of (query tokens, context incl. them)."""
    q = [1] * len(decode_ctx) + [n for n, _ in prefill]
    seq_lens = np.array(decode_ctx + [c for _, c in prefill], dtype=np.int32)
    qsl = np.concatenate([[0], np.cumsum(q)]).astype(np.int32)
    n = int(qsl[-1])
    logits = list(range(len(decode_ctx))) + [int(qsl[i + 1]) - 1 for i in range(len(decode_ctx),
                                                                                 len(q))]  # fmt: skip
    return Batch(
        input_ids=np.zeros(n, np.int64), positions=np.zeros(n, np.int64),
        slot_mapping=np.zeros(n, np.int64), query_start_loc=qsl, seq_lens=seq_lens,
        block_tables=np.zeros((len(q), 1), np.int32), logits_indices=np.array(logits),
        max_query_len=max(q), max_seq_len=int(seq_lens.max()), num_decode_seqs=len(decode_ctx),
    )  # fmt: skip


def test_decode_only_steps_cost_their_cuda_graph_bucket():
    f = dict(zip(FEATURES, features(_batch([10] * 5, []), [1, 2, 4, 8, 16]), strict=True))
    assert f["decode_rows"] == 8 and f["decode_ctx"] == 50 and f["prefill"] == 0
    f = dict(zip(FEATURES, features(_batch([10] * 5, []), None), strict=True))
    assert f["decode_rows"] == 5  # no graphs (cpu): the rows themselves
    # a mixed step runs eagerly: no bucket; its decode rows also count as mixed
    f = dict(zip(FEATURES, features(_batch([10] * 5, [(4, 4)]), [1, 2, 4, 8, 16]), strict=True))
    assert f["decode_rows"] == 5 and f["mixed_decode"] == 5 and f["prefill"] == 1


def test_decode_rows_beyond_the_knee_of_the_linear_layers_rows():
    from harness.refit import DERIVED
    from harness.sim_model import DECODE_ROOF

    buckets = [1, 2, 4, 8, 16, 32, 64, 128, 192, 256]
    cases = [  # (decode contexts, prefill rows, decode_roof)
        ([10] * 100, [], 0),  # bucket 128: at the knee
        ([10] * 130, [], 192 - DECODE_ROOF),  # bucket 192
        ([10] * 250, [], 256 - DECODE_ROOF),
        ([10] * 50, [(100, 100)], 150 - DECODE_ROOF),  # 150 rows multiplied, 22 beyond
        ([10] * 50, [(300, 300)], 50),  # the prompt is beyond already: every decode row
        ([], [(3000, 3000)], 0),  # prefill only: prefill_roof's
    ]
    for ctx, pf, want in cases:
        f = dict(zip(FEATURES, features(_batch(ctx, pf), buckets), strict=True))
        assert f["decode_roof"] == want, (len(ctx), pf)
        assert DERIVED["decode_roof"](f) == want  # a refit derives it from the same columns


def test_prefill_attention_counts_causal_pairs_and_dense_scores():
    # a 4-token chunk at context 10 (positions 6..9): causal pairs 7+8+9+10 = 34, dense 4*10
    f = dict(zip(FEATURES, features(_batch([], [(4, 10)])), strict=True))
    assert f["prefill_attn"] == 34 and f["prefill_qk"] == 40
    assert f["prefill_tokens"] == 4 and f["prefill_rows"] == 1 and f["prefill_sampled"] == 1
    assert f["prefill_excess"] == 0 and f["prefill_roof"] == 0  # below the knees
    f = dict(zip(FEATURES, features(_batch([10], [(3000, 3000), (500, 600)])), strict=True))
    assert f["prefill_tokens"] == 3500 and f["prefill_excess"] == 3500 - 1024
    assert f["prefill_roof"] == 3500 - 192


def test_nnls_is_non_negative_and_exact_when_the_truth_is():
    rng = np.random.default_rng(0)
    a = rng.random((50, 4))
    truth = np.array([0.5, 0.0, 2.0, 1.0])
    assert np.allclose(nnls(a, a @ truth), truth, atol=1e-9)
    x = nnls(a, a @ np.array([1.0, -3.0, 1.0, 1.0]))  # the unconstrained fit is negative
    assert (x >= 0).all() and x[1] == 0


def test_the_relative_fit_drops_a_disturbed_point():
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(40), rng.integers(1, 100, 40)])
    y = x @ np.array([2e-3, 1e-4])
    y[7] *= 5  # a step slowed by a neighbour
    fit = fit_relative(x, y)
    assert fit.num_outliers == 1 and np.allclose(fit.coef, [2e-3, 1e-4])


def test_the_plan_stays_within_the_kv_cache_and_finishes_every_request():
    p = build_plan(QUICK, 16, 400, 2048, 64, 4096)
    assert p.cell > 5 and not p.live  # every request finished (planner asserts the cache)
    assert all(r.max_out and r.max_out >= 1 for r in p.reqs.values())
    assert all(sum(s.tokens.values()) <= 2048 for s in p.steps)


def test_the_longest_decode_row_and_the_hosts_step_kinds():
    from harness.sim_model import HOST_FEATURES, host_features

    f = dict(zip(FEATURES, features(_batch([10, 700, 30], [(4, 900)])), strict=True))
    assert f["decode_max_ctx"] == 700 and f["decode_ctx"] == 740  # the prefill row's 900: no
    buckets = [1, 2, 4, 8]
    h = dict(zip(HOST_FEATURES, host_features(_batch([10, 20], []), buckets), strict=True))
    assert h["eager"] == 0 and h["mixed"] == 0 and h["rows"] == 2  # a CUDA graph replay
    h = dict(zip(HOST_FEATURES, host_features(_batch([10], [(4, 9)]), buckets), strict=True))
    assert h["eager"] == 1 and h["mixed"] == 1 and h["tokens"] == 5
    h = dict(zip(HOST_FEATURES, host_features(_batch([], [(4, 9)]), buckets), strict=True))
    assert h["eager"] == 1 and h["mixed"] == 0


def test_a_profile_fitted_before_a_feature_existed_does_not_use_it():
    from harness.sim_model import ProfileStepCost, load_profile

    profile = load_profile("cpu_tiny")
    batch = _batch([10, 5000], [(4, 9)])
    new = ProfileStepCost(profile)
    k = len(profile["step_model"]["features"]) - 1  # one feature fewer than it has
    old = dict(profile, step_model={**profile["step_model"], "features": list(FEATURES[:k]),
                                    "coef": profile["step_model"]["coef"][:k]})  # fmt: skip
    expected = sum(c * x for c, x in zip(old["step_model"]["coef"], features(batch), strict=False))
    assert ProfileStepCost(old).step_time(batch) == expected
    assert ProfileStepCost(old).coef[k:] == [0.0] * (len(FEATURES) - k)
    assert new.coef[:k] == ProfileStepCost(old).coef[:k]


def test_the_split_kernels_tail_is_the_long_rows_split_beyond_an_even_share():
    from harness.sim_model import DecodeSplit

    split = DecodeSplit(num_sms=132, num_kv_heads=8, graph_bound=131072)
    buckets = [1, 2, 4, 8, 16, 32, 48, 64]
    one_long = [65536] + [256] * 4
    share = (65536 + 4 * 256) * 8 / 264  # even share: all rows' context x KV heads / 2 x SMs

    def tail(batch, b=buckets, s=split):
        return dict(zip(FEATURES, features(batch, b, s), strict=True))["decode_tail_ctx"]

    # a graph replay runs its bucket's 8 rows with the captured bound: ceil(264 / 64) = 5 splits
    assert tail(_batch(one_long, [])) == pytest.approx(65536 / 5 - share)
    # 48 rows or more fill the GPU's 2 x 132 program slots unsplit
    many = [65536] + [256] * 40
    assert tail(_batch(many, [])) == pytest.approx(65536 - sum(many) * 8 / 264)
    # alone it is cut into ceil(264 / 8) = 33 splits, less than its even share: no tail
    assert tail(_batch([65536], [])) == 0.0
    # a mixed step launches the decode kernel over its 5 decode rows: ceil(264 / 40) = 7
    assert tail(_batch(one_long, [(8, 8)])) == pytest.approx(65536 / 7 - share)
    # eager (no graphs): its own rows, its batch's longest context as the bound: 7 splits too
    assert tail(_batch(one_long, []), None) == pytest.approx(65536 / 7 - share)
    # rows of one context fill the GPU evenly: no tail
    assert tail(_batch([8192] * 8, [])) == 0.0
    # without the split kernel (cpu: the torch reference) the feature is 0
    assert tail(_batch(one_long, []), buckets, None) == 0.0


def test_the_plan_has_skewed_decode_cells():
    grid = {**QUICK, "skew_contexts": (1024,), "skew_batches": (4,), "skew_short": 32}
    p = build_plan(grid, 16, 400, 2048, 64, 4096)
    assert not p.live
    skewed = [s for s in p.steps if len(s.tokens) >= 4 and all(n == 1 for n in s.tokens.values())
              and {p.reqs[r].prompt for r in s.tokens} == {1024, 32}]  # fmt: skip
    assert len(skewed) >= QUICK["decode_steps"]
    assert len(build_plan(grid, 16, 400, 2048, 64, 4096).steps) > len(
        build_plan(QUICK, 16, 400, 2048, 64, 4096).steps)  # fmt: skip


def test_a_feature_the_fit_left_unused_is_not_range_checked():
    from harness.sim_model import ProfileStepCost, load_profile

    profile = load_profile("h200_llama3_8b")
    assert "prefill_qk" in profile["step_model"]["unused"]
    cost = ProfileStepCost(profile, [1, 2, 4, 8])
    assert "prefill_qk" not in cost.measured_max and "prefill_tokens" in cost.measured_max
    # one 80k-token prompt: beyond the measured prompt sizes, counted as such, and not as qk
    cost.step_time(_batch([], [(80000, 80000)]))
    assert cost.beyond["prefill_tokens"] == 1 and "prefill_qk" not in cost.beyond


def test_a_hot_grid_puts_unmeasured_full_budget_steps_before_each_cell():
    grid = {**QUICK, "heat_steps": 2, "swap_blocks": ()}
    p = build_plan(grid, 16, 400, 256, 64, 4096)
    assert not p.live
    steps = p.steps
    firsts = [i for i, s in enumerate(steps) if s.cell >= 0 and steps[i - 1].cell != s.cell]
    assert len(firsts) > 5
    for i in firsts:  # each cell's first step follows 2 unmeasured steps of the full budget
        assert [steps[j].cell for j in (i - 2, i - 1)] == [-1, -1]
        assert all(sum(steps[j].tokens.values()) == 256 for j in (i - 2, i - 1))
    cold = build_plan({**grid, "heat_steps": 0}, 16, 400, 256, 64, 4096)

    def measured(plan):  # each measured step's cell and its rows' token counts
        return [(s.cell, sorted(s.tokens.values())) for s in plan.steps if s.cell >= 0]

    assert measured(cold) == measured(p)  # the same measured steps, heated


def test_a_step_the_piecewise_graphs_take_costs_its_token_bucket():
    """ModelRunner._use_pieces's rule: a step no decode graph takes, of at most the largest
    token bucket, replays the pieces of the smallest bucket >= its tokens; the padding tokens
    run through every layer but attention (prefill_tokens), the host launches pieces."""
    from harness.executors.cuda_graphs import piece_sizes
    from harness.sim_model import HOST_FEATURES, host_features, piece_bucket

    buckets, pieces = [1, 2, 4, 8], piece_sizes(64)
    assert pieces == [8, 16, 32, 48, 64]
    mixed = _batch([10, 20], [(51, 67)])  # 53 tokens: bucket 64
    assert piece_bucket(mixed, buckets, pieces) == 64
    f = dict(zip(FEATURES, features(mixed, buckets, None, pieces), strict=True))
    assert f["prefill_tokens"] == 51 + 11 and f["mixed_decode"] == 2
    assert dict(zip(FEATURES, features(mixed, buckets), strict=True))["prefill_tokens"] == 51
    h = dict(zip(HOST_FEATURES, host_features(mixed, buckets, pieces), strict=True))
    assert h["piecewise"] == 1 and h["eager"] == 0 and h["tokens"] == 53
    # its two attention paths are launched per layer from one plan: piece_mixed, not the eager
    # pass's mixed (each layer's kernels launched anew)
    assert h["piece_mixed"] == 1 and h["mixed"] == 0
    # a decode the decode graphs take: no pieces; a step beyond the largest bucket: eager
    decode = _batch([10] * 3, [])
    assert piece_bucket(decode, buckets, pieces) == 0
    h = dict(zip(HOST_FEATURES, host_features(decode, buckets, pieces), strict=True))
    assert h["piecewise"] == 0 and h["eager"] == 0
    big = _batch([10], [(100, 100)])
    assert piece_bucket(big, buckets, pieces) == 0
    h = dict(zip(HOST_FEATURES, host_features(big, buckets, pieces), strict=True))
    assert h["piecewise"] == 0 and h["eager"] == 1 and h["mixed"] == 1 and h["piece_mixed"] == 0
    assert features(big, buckets, None, pieces) == features(big, buckets)
    # decode rows beyond the largest decode graph: the pieces take them
    wide = _batch([10] * 9, [])
    assert piece_bucket(wide, buckets, pieces) == 16


def test_piece_sizes_pad_little():
    from harness.executors.cuda_graphs import piece_sizes

    assert piece_sizes(0) == []
    for top in (8, 100, 512, 1024, 1500):
        sizes = piece_sizes(top)
        assert sizes[-1] == top and sizes == sorted(set(sizes)) and sizes[0] <= 8
        for n in range(1, top + 1):
            b = next(s for s in sizes if s >= n)
            assert b - n < (16 if n <= 256 else 64)


def test_a_profile_without_the_piecewise_host_feature_costs_nothing_for_it():
    from harness.executors.cuda_graphs import piece_sizes
    from harness.sim_model import HOST_FEATURES, ProfileStepCost, load_profile

    shipped = load_profile("h200_llama3_8b")
    host = {"features": list(HOST_FEATURES[:5])}  # as fitted before piecewise existed
    for key in ("before_launch", "after_launch"):
        host[key] = {"coef": shipped["host_model"][key]["coef"][:5]}
    profile = dict(shipped, host_model=host)
    cost = ProfileStepCost(profile, [1, 2, 4, 8], 16, None, piece_sizes(64))
    mixed = _batch([10, 20], [(51, 67)])
    before = host["before_launch"]["coef"]
    h = [1.0, 0.0, 1.0, 3.0, 53.0]  # the pieces' step: not eager, no piecewise term
    assert cost.host_time(mixed)[0] == pytest.approx(
        sum(c * x for c, x in zip(before, h, strict=True))
    )


def test_a_profile_fitted_before_piece_mixed_keeps_its_predictions():
    """Before `piece_mixed`, `mixed` covered every mixed step, piecewise or eager: such a
    profile's mixed coefficient still applies to both, so its predictions do not change."""
    from harness.executors.cuda_graphs import piece_sizes
    from harness.sim_model import HOST_FEATURES, ProfileStepCost, load_profile

    shipped = load_profile("h200_llama3_8b")
    n = HOST_FEATURES.index("piece_mixed")
    host = {"features": list(HOST_FEATURES[:n])}
    for key in ("before_launch", "after_launch"):
        host[key] = {"coef": [1e-3 * (i + 1) for i in range(n)]}
    profile = dict(shipped, host_model=host)
    cost = ProfileStepCost(profile, [1, 2, 4, 8], 16, None, piece_sizes(64))
    mixed = _batch([10, 20], [(51, 67)])  # piecewise (bucket 64), mixed
    h = [1.0, 0.0, 1.0, 3.0, 53.0, 1.0]  # as host_features was: mixed = 1
    want = sum(c * x for c, x in zip(host["after_launch"]["coef"], h, strict=True))
    assert cost.host_time(mixed)[1] == pytest.approx(want)


def test_the_step_time_is_the_fitted_model_over_every_feature():
    """ProfileStepCost.step_time is unrolled for speed: it must still be coef . features over
    every feature (a feature added to FEATURES and missed there would cost nothing)."""
    from harness.executors.cuda_graphs import piece_sizes
    from harness.sim_model import ProfileStepCost, load_profile

    profile = load_profile("h200_llama3_8b")
    coef = [1e-3 * (i + 1) for i in range(len(FEATURES))]
    profile = dict(profile, step_model={**profile["step_model"], "features": list(FEATURES),
                                        "coef": coef})  # fmt: skip
    buckets = [1, 2, 4, 8]
    cost = ProfileStepCost(profile, buckets, 16, None, piece_sizes(64))
    for batch in (_batch([10, 20], [(51, 67)]), _batch([10] * 3, []),
                  _batch([10], [(3000, 3000), (500, 600)])):  # fmt: skip
        x = features(batch, buckets, cost.split, piece_sizes(64))
        assert all(v > 0 for v in x[-2:]) or batch.num_tokens < 1024  # the knees count
        want = sum(c * v for c, v in zip(coef, x, strict=True))
        assert cost.step_time(batch) == pytest.approx(want)


def test_the_host_time_is_the_fitted_model_over_every_host_feature():
    """ProfileStepCost._host_time is unrolled too: coef . host_features over all of them."""
    from harness.executors.cuda_graphs import piece_sizes
    from harness.sim_model import HOST_FEATURES, ProfileStepCost, host_features, load_profile

    profile = load_profile("h200_llama3_8b")
    host = {"features": list(HOST_FEATURES)}
    for j, key in enumerate(("before_launch", "after_launch")):
        host[key] = {"coef": [1e-3 * (i + 1 + j) for i in range(len(HOST_FEATURES))]}
    cost = ProfileStepCost(dict(profile, host_model=host), [1, 2, 4, 8], 16, None,
                           piece_sizes(64))  # fmt: skip
    for batch in (_batch([10, 20], [(51, 67)]), _batch([10] * 3, []),
                  _batch([10], [(3000, 3000)])):  # fmt: skip
        h = host_features(batch, [1, 2, 4, 8], piece_sizes(64))
        for got, key in zip(cost.host_time(batch), ("before_launch", "after_launch"), strict=True):
            assert got == pytest.approx(
                sum(c * x for c, x in zip(host[key]["coef"], h, strict=True))
            )
