"""The terminal summary says why requests were rejected and what the workload clipped."""

from __future__ import annotations

from harness.run import run

CPU = ("engine=cpu", "model=tiny", "engine.progress=false", "logger=none")


def test_terminal_summary_names_rejection_reasons_clipping_and_utilisation(compose_cfg, capsys):
    # prompt + output beyond max_model_len=300: rejected (clip=none) or truncated (the default)
    lengths = (
        *CPU, "engine.max_model_len=300", "workload.num_requests=6", "workload.arrival.rate=200",
        "workload.prompt_len.kind=uniform", "+workload.prompt_len.min=150",
        "workload.prompt_len.max=400", "workload.output_len.min=2", "workload.output_len.max=4",
    )  # fmt: skip
    s = run(compose_cfg(*lengths, "+workload.clip=none"), None).summary
    out = capsys.readouterr().out
    assert s["rejection_reasons"]["max_model_len"] == s["num_rejected"] > 0
    assert f"rejected: {s['num_rejected']} max_model_len" in out
    assert "utilisation: busy" in out
    s = run(compose_cfg(*lengths), None).summary
    out = capsys.readouterr().out
    assert s["num_rejected"] == 0 and s["num_clipped"] > 0
    assert f"{s['num_clipped']} prompts truncated to max_model_len" in out
