"""`python -m harness.workloads workload=azure_conv [workload.max_requests=100 ...] [--out FILE.png]`:
compose the project's config, load the workload (no model, no engine) and describe it.
`python -m harness.workloads fetch NAME...`: download public traces (`workloads.fetch`).
The one entry point of both: `workloads` itself imports nothing from `harness`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fetch"]:
        from workloads.fetch import main as fetch

        return fetch(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m harness.workloads", description=__doc__)
    parser.add_argument("--out", help="PNG path (default: <results_dir>/workloads/<name>.png)")
    parser.add_argument("--no-plot", action="store_true", help="print the statistics only")
    args, overrides = parser.parse_known_args(argv)

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.config import CONF_DIR, CONFIG_ERRORS, register
    from harness.run import build_executor, instantiate_node
    from workloads.describe import format_summary, plot, summarize

    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        name = cfg.hydra.runtime.choices.get("workload", "workload")
        OmegaConf.set_struct(cfg, False)
        cfg.pop("hydra")
        max_model_len = build_executor(cfg).max_model_len  # cheap: no model is built
        workload = instantiate_node(cfg, "workload")
        table = workload.load(seed=cfg.seed, max_model_len=max_model_len)
    except CONFIG_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Hydra's override and composition errors
        if type(exc).__module__.startswith(("hydra", "omegaconf")):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    title = f"workload={name} (seed {cfg.seed}, max_model_len {max_model_len})"
    print(format_summary(title, summarize(table, workload), workload.stats))
    if not args.no_plot:
        out = Path(args.out or Path(cfg.results_dir) / "workloads" / f"{name}.png")
        print(f"  plot: {plot(table, title, out, workload.stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
