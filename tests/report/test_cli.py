"""`python -m harness.report` for everyday use (issue 18, point 1): the table in the terminal, a
`report/` folder beside the inputs (never in a run folder), one error line for an unwritable
destination, repeated runs aggregated over seeds, incomplete runs counted and marked."""

from __future__ import annotations

import os
import statistics

import pandas as pd
import pytest

from harness import report
from harness.report import comparison, load_runs, main, to_markdown

from .runs import capture_figures, figure_texts, make_run


def test_prints_the_comparison_table_in_the_terminal(sweep, tmp_path, capsys):
    main([str(sweep), "-o", str(tmp_path / "out"), "--max-timelines", "0"])
    out = capsys.readouterr().out
    assert "| policy | budget | workload |" in out
    assert "P99 TTFT (ms)" in out and "throughput (out tok/s)" in out
    assert out.count("| fcfs |") == 2 and "**" in out


def test_a_sweep_folder_gets_a_report_folder_inside(sweep):
    main([str(sweep), "--max-timelines", "0"])
    assert (sweep / "report" / "report.md").is_file()
    assert not (sweep / "report.md").exists()


def test_a_run_folder_given_alone_is_never_written_into(sweep):
    run = sweep / "0_fcfs"
    before = sorted(p.name for p in run.iterdir())
    main([str(run), "--max-timelines", "0"])
    assert sorted(p.name for p in run.iterdir()) == before
    assert (sweep / "report" / "report.md").is_file()


def test_an_out_folder_inside_a_run_folder_is_refused(sweep, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), "-o", str(sweep / "0_fcfs" / "report")])
    assert exc.value.code == 2
    assert "run folder" in capsys.readouterr().err
    assert not (sweep / "0_fcfs" / "report").exists()


@pytest.mark.parametrize("how", ["read_only", "a_file_in_the_way"])
def test_an_unwritable_destination_is_one_error_line(sweep, tmp_path, capsys, how):
    if how == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o555)
    else:
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "report"
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), "-o", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and str(out) in err[0]


def test_t_quantile_matches_the_t_table():
    # Two-sided 95% critical values of Student's t (any statistics textbook's table).
    for dof, value in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert report.t_quantile(0.975, dof) == pytest.approx(value, abs=1e-3)
    normal = statistics.NormalDist().inv_cdf(0.975)
    assert report.t_quantile(0.975, 100_000) == pytest.approx(normal, abs=1e-4)


def test_repeated_runs_become_one_row_with_mean_ci_and_n(tmp_path):
    gaps = {"fcfs": (0.01, 0.02, 0.012), "sjf": (0.005, 0.006, 0.004)}
    for policy, per_seed in gaps.items():
        for seed, gap in enumerate(per_seed):
            make_run(tmp_path / f"{policy}_{seed}", policy, 256, gap, seed=seed)
    table = comparison(load_runs([tmp_path]))
    assert sorted(table["policy"]) == ["fcfs", "sjf"]
    (i,) = table.index[table["policy"] == "fcfs"]
    tpot_ms = [1e3 * g for g in gaps["fcfs"]]
    half = report.t_quantile(0.975, 2) * statistics.stdev(tpot_ms) / 3**0.5
    assert table.loc[i, "n"] == 3
    assert table.loc[i, "p99_tpot_ms"] == pytest.approx(statistics.mean(tpot_ms))
    assert table.loc[i, "p99_tpot_ms_ci95"] == pytest.approx(half)
    md = to_markdown(table)
    assert "| n |" in md.splitlines()[0] and f"± {half:.3g}" in md


def test_no_complete_run_says_how_many_incomplete_were_skipped(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run, "fcfs", 256, 0.01, statuses={11: "aborted"}, complete=False)
    with pytest.raises(SystemExit) as exc:
        main([str(run)])
    message = f"{exc.value.code} {capsys.readouterr().err}"
    assert "1 incomplete run" in message and "--include-incomplete" in message


def test_included_incomplete_runs_are_marked_in_every_table_and_plot(tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    make_run(runs / "a", "fcfs", 256, 0.01)
    make_run(runs / "b", "sjf", 256, 0.01, statuses={11: "aborted"}, complete=False)
    figures = capture_figures(monkeypatch)
    main([str(runs), "-o", str(out), "--include-incomplete"])
    (line,) = [ln for ln in (out / "report.md").read_text().splitlines() if ln.startswith("| sjf")]
    assert "(incomplete)" in line
    csv = pd.read_csv(out / "report.csv")
    assert csv.loc[csv["policy"] == "sjf", "complete"].tolist() == [False]
    showing_sjf = [(n, f) for n, f in figures if "sjf" in figure_texts(f)]
    assert {n.split("_")[0] for n, _ in showing_sjf} == {"pareto", "cdf", "timeline"}
    for name, fig in showing_sjf:
        assert "(incomplete)" in figure_texts(fig), name


def test_several_inputs_get_a_report_folder_in_their_common_folder(tmp_path):
    a, b = tmp_path / "results" / "sweep_a", tmp_path / "results" / "sweep_b"
    assert report.default_out_dir([a, b]) == tmp_path / "results" / "report"


def test_a_workload_split_is_a_warning_in_the_terminal_and_in_report_md(tmp_path, capsys):
    for policy, fp in (("fcfs", "aaaa1111"), ("sjf", "bbbb2222")):
        make_run(tmp_path / "runs" / policy, policy, 256, 0.01,
                 summary={"workload_fingerprint": fp})  # fmt: skip
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--max-timelines", "0"])
    assert "WARNING" in capsys.readouterr().err
    md = (tmp_path / "out" / "report.md").read_text()
    assert "WARNING" in md and "aaaa1111" in md and "bbbb2222" in md
    assert "bursty [A]" in md and "bursty [B]" in md


def test_a_stray_config_yaml_above_does_not_move_the_report(tmp_path, sweep):
    (tmp_path / "config.yaml").write_text("seed: 0\n")  # a user's own file, not a run folder
    assert report.default_out_dir([sweep]) == sweep / "report"
    assert report.default_out_dir([sweep / "0_fcfs"]) == sweep / "report"
