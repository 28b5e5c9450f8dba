"""The per-shape BLAS library choice: lookup rules on the CPU, tuning and exactness on the GPU."""

from __future__ import annotations

import pytest
import torch

from harness.models.blas import LIBRARIES, BlasChoice, model_groups, row_ladder
from tests.conftest import make_model, requires_cuda


def test_row_ladder_covers_decode_batches_then_doubles_to_the_budget():
    ladder = row_ladder(16384)
    assert ladder[:3] == [1, 8, 16] and 512 in ladder and ladder[-1] == 16384
    assert ladder == sorted(set(ladder))
    assert [m for m in ladder if m > 512] == [1024, 2048, 4096, 8192, 16384]
    assert row_ladder(100) == [1, 8, 16, 32, 64, 96, 100]


def test_library_is_the_choice_of_the_next_tuned_row_count_up():
    choice = BlasChoice()
    choice.table[(6, 4)] = ([16, 64, 256], ["cublas", "cublaslt", "cublas"])
    assert choice.library(6, 4, 1) == "cublas"
    assert choice.library(6, 4, 16) == "cublas"
    assert choice.library(6, 4, 17) == "cublaslt"
    assert choice.library(6, 4, 64) == "cublaslt"
    assert choice.library(6, 4, 65) == "cublas"
    assert choice.library(6, 4, 10**6) == "cublas"  # past the ladder: its last choice
    assert choice.library(4, 6, 16) is None  # an untuned shape keeps torch's default


@pytest.mark.gpu
@requires_cuda
def test_tuned_choice_runs_each_shape_through_a_measured_library():
    model = make_model(device="cuda").to(torch.bfloat16)
    choice = BlasChoice()
    groups = model_groups(model)
    choice.tune(groups, {name: 300 for name in groups}, copies=2, reps=1)
    assert set(choice.table) == {(g[0].out_features, g[0].in_features) for g in groups.values()}
    for rows, libs in choice.table.values():
        assert rows == row_ladder(300) and set(libs) <= set(LIBRARIES)
    assert all(t["cublas_us"] > 0 and t["cublaslt_us"] > 0 for t in choice.timings)
    layer = groups["down"][0]
    x = torch.randn(37, layer.in_features, device="cuda", dtype=torch.bfloat16)
    ref = torch.nn.functional.linear(x.float(), layer.weight.float())
    torch.testing.assert_close(choice.linear(x, layer).float(), ref, atol=2e-2, rtol=2e-2)
