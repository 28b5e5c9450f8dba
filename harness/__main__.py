"""`python -m harness key=value ...`: compose the config with Hydra and run it."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.config import ConfigError, register
from harness.models.loader import ModelLoadError

register()

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from harness.run import run

    hc = HydraConfig.get()
    names = {f"{group}_name": hc.runtime.choices.get(group, "") for group in ("policy", "workload")}
    if hc.mode == RunMode.MULTIRUN:  # a sweep's jobs share its name (the W&B group)
        names["sweep_name"] = Path(hc.sweep.dir).name
    try:
        result = run(cfg, Path(hc.runtime.output_dir), names)
    except (ConfigError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not result.summary["complete"]:
        sys.exit(1)
    return result.summary["output_throughput_tok_s"]


if __name__ == "__main__":
    main()
