"""The report's figures stay readable on a large sweep and are named from the keys that vary."""

from __future__ import annotations

import itertools

import matplotlib.text

from harness.report import main

from .runs import capture_figures, figure_texts, make_run, renderer

POLICIES = ("fcfs", "sjf", "edf", "vtc", "mlfq", "static", "chunked_prefill")
BUDGETS = (256, 512, 1024, 2048)


def test_pareto_labels_of_a_7_policy_4_budget_sweep_never_overlap(tmp_path, monkeypatch):
    for i, (policy, budget) in enumerate(itertools.product(POLICIES, BUDGETS)):
        make_run(tmp_path / "runs" / f"{i}", policy, budget, 0.01 + 0.0002 * i)
    figures = capture_figures(monkeypatch)
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--max-timelines", "0"])
    (fig,) = [f for name, f in figures if name.startswith("pareto")]
    texts = figure_texts(fig)
    assert all(policy in texts for policy in POLICIES)  # every policy is named (legend)
    drawn = renderer(fig)
    for ax in fig.axes:
        notes = [t for t in ax.texts if isinstance(t, matplotlib.text.Annotation)]
        boxes = [t.get_window_extent(drawn) for t in notes]
        assert len(notes) < len(POLICIES) * len(BUDGETS)
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b)


def test_file_names_come_from_the_varying_keys_and_never_say_nan(tmp_path):
    for blocks in (None, 400):
        budget = {"max_num_batched_tokens": 256, "max_num_seqs": 8, "num_gpu_blocks": blocks}
        for policy in ("fcfs", "sjf"):
            make_run(tmp_path / "runs" / f"{policy}_{blocks}", policy, 256, 0.01,
                     config={"budget": budget})  # fmt: skip
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out")])
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names and not [n for n in names if "nan" in n.lower()]
    assert "pareto_bursty_num_gpu_blocks=400.png" in names
    assert len([n for n in names if n.startswith("pareto")]) == 2
