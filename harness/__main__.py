"""`python -m harness key=value ...`: compose the config with Hydra and run it.

Exit status: 0 done; 1 a run that ended incomplete (a stall, a device fault, a bad decision);
2 a configuration error, Hydra's own included (one line on stderr); 130 Ctrl-C, 143 SIGTERM
(a run interrupted while serving still writes its partial results). A traceback means a bug.
A run that fails before writing anything leaves no run folder.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
EXIT_INCOMPLETE, EXIT_CONFIG = 1, 2
_signal_received: int | None = None  # the last SIGINT/SIGTERM, for the exit status


def run_job(cfg) -> float | None:
    """Hydra's task: one run of the composed config."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from harness.config import CONFIG_ERRORS, ConfigError, check_config, validate

    try:
        check_config(cfg)
        validate(cfg)  # before the heavy imports (run() checks again)
        from harness.models.loader import ModelLoadError
        from harness.run import run

        hc = HydraConfig.get()
        names = {f"{g}_name": hc.runtime.choices.get(g, "") for g in ("policy", "workload")}
        if hc.mode == RunMode.MULTIRUN:  # a sweep's jobs share its name (the W&B group)
            names["sweep_name"] = Path(hc.sweep.dir).name
        try:
            result = run(cfg, Path(hc.runtime.output_dir), names)
        except ModelLoadError as exc:
            raise ConfigError(str(exc)) from None
    except CONFIG_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    except Exception as exc:
        exc._harness_bug = True  # not a config error of Hydra's: keep the traceback
        raise
    summary = result.summary
    if not summary["complete"]:
        # run() turns SIGINT and SIGTERM while serving into "interrupted at step N"
        interrupted = str(summary.get("error") or "").startswith("interrupted")
        signum = _signal_received or signal.SIGTERM
        raise SystemExit(128 + signum if interrupted else EXIT_INCOMPLETE)
    return summary["output_throughput_tok_s"]


def main() -> None:
    """Run Hydra's command line; turn config errors and interruptions into one line."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises its errors; they are reported here
    code: int | str | None = 0
    try:
        import hydra

        from harness.config import register

        register()
        hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")(run_job)()
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = 128 + (_signal_received or signal.SIGINT)
    except Exception as exc:
        message = None if getattr(exc, "_harness_bug", False) else _config_error(exc)
        if message is None:
            _remove_unused_run_folders()
            raise
        print(f"error: {message}", file=sys.stderr)
        code = EXIT_CONFIG
    if code not in (0, None):
        removed = _remove_unused_run_folders()
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM) and _signal_received:
            name = signal.Signals(_signal_received).name
            kept = "; nothing was written" if removed else ""
            print(f"interrupted ({name}){kept}", file=sys.stderr)
    sys.exit(code)


def _interrupt(signum, frame) -> None:
    global _signal_received
    _signal_received = signum
    raise KeyboardInterrupt


def _remove_unused_run_folders() -> list[Path]:
    try:
        from harness.config import remove_unused_run_folders

        return remove_unused_run_folders()
    except Exception:  # never let the cleanup hide the error being reported
        return []


def _config_error(exc: Exception) -> str | None:
    """One line for an error in the configuration (Hydra's, OmegaConf's or ours), else None."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from harness.config import CONFIG_ERRORS, FOLDER_ERRORS, one_line

    if FOLDER_ERRORS:  # Hydra's own attempt at the folder failed after ours
        return str(FOLDER_ERRORS[0])
    if isinstance(exc, CONFIG_ERRORS):
        return str(exc)
    if not isinstance(exc, (HydraException, OmegaConfBaseException)):
        return None
    cause = exc.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return str(_unknown_key(cause.full_key))
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        import difflib

        group, _, name = exc.missing_cfg_file.rpartition("/")
        close = difflib.get_close_matches(name, exc.options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"{group}={name}: no such option; {hint}options: {', '.join(exc.options)}"
    return one_line(exc)


def _unknown_key(full_key: str):
    """The error for a key Hydra would not override: composed again without it, for the keys
    valid there (the group options given stay, sweeps aside)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from harness.config import compose, unknown_key_error, valid_keys

    overrides = get_args_parser().parse_args(sys.argv[1:]).overrides
    parsed = OverridesParser.create().parse_overrides(overrides)
    keep = [
        o.input_line
        for o in parsed
        if o.key_or_group != full_key and not o.is_sweep_override() and o.input_line
    ]
    try:
        valid = valid_keys(compose(keep), full_key.rpartition(".")[0])
    except Exception:  # no better hint than none
        valid = None
    return unknown_key_error(full_key, valid)


if __name__ == "__main__":
    main()
