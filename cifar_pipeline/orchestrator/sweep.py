"""Hydra multirun sweeps: one pipeline run per point, under one sweep run.

`python main.py -m optim.lr=0.02,0.05` (or `mlflow run . -P overrides="-m optim.lr=0.02,0.05"`)
runs the whole pipeline once per point. The sweep run (the `mlflow run` entry point's
run, or a new one) is the parent; each point is a nested pipeline run whose params carry
the full configuration, swept values included, so the UI's compare view lines them up.
Steps that do not depend on the swept values (fetch, for an optimiser sweep) are reused
through the step cache, so the points share them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cifar_pipeline.tracking import PIPELINE_NAME, PIPELINE_TAG, STEP_TAG

log = logging.getLogger(__name__)

SWEEP_TAG_VALUE = "sweep"
POINT_TAG = "pipeline.sweep_point"


@dataclass
class Sweep:
    keys: list[str]
    points: list[tuple[str, str, int]] = field(default_factory=list)  # label, pipeline run ID, exit code


_current: Sweep | None = None


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def swept_keys(arguments: list[str]) -> list[str]:
    """The config keys a multirun sweeps over, from its command-line overrides."""
    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [override.key_or_group for override in parsed if override.is_sweep_override()]


def point_label(cfg: DictConfig, keys: list[str]) -> str:
    return " ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in keys)


def start_point(cfg: DictConfig, arguments: list[str]) -> dict[str, str]:
    """Open the sweep run on the first point; return the tags of this point's pipeline run."""
    global _current
    if _current is None:
        _current = Sweep(keys=swept_keys(arguments))
        run = mlflow.active_run() or mlflow.start_run()  # the `mlflow run` entry point's run, if any
        mlflow.set_tags({STEP_TAG: SWEEP_TAG_VALUE, PIPELINE_TAG: PIPELINE_NAME})
        mlflow.log_param("sweep.keys", ",".join(_current.keys))
        log.info("sweep run %s over %s", run.info.run_id, ", ".join(_current.keys))
    return {POINT_TAG: point_label(cfg, _current.keys)}


def end_point(tags: dict[str, str], pipeline_run_id: str, code: int) -> None:
    assert _current is not None
    _current.points.append((tags[POINT_TAG], pipeline_run_id, code))


def point_status(exit_code: int) -> str:
    return "FINISHED" if exit_code == 0 else "KILLED" if exit_code > 128 else "FAILED"


def finish() -> int:
    """After the last point (or a cancelled one): close the sweep run; the exit code.

    The sweep is KILLED if a point was cancelled, FAILED if one failed, else FINISHED.
    """
    if _current is None:
        return 0
    codes = [code for _, _, code in _current.points]
    failed = [code for code in codes if code]
    lines = [f"{point_status(code):<9} {run_id}  {label}" for label, run_id, code in _current.points]
    table = "\n".join(lines)
    log.info("sweep: %d points, %d failed or cancelled\n%s", len(codes), len(failed), table)
    mlflow.log_text(table + "\n", "sweep.txt")
    cancelled = [code for code in codes if code > 128]
    exit_code = cancelled[0] if cancelled else 1 if failed else 0
    mlflow.end_run(point_status(exit_code))
    return exit_code
