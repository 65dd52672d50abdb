"""Hydra multirun sweeps: one pipeline run per point, under one sweep run.

`python main.py -m optim.lr=0.02,0.05` (or `mlflow run . -P overrides="-m optim.lr=0.02,0.05"`)
runs the whole pipeline once per point. The sweep run (the `mlflow run` entry point's
run, or a new one) is the parent; each point is a nested pipeline run whose params carry
the full configuration, swept values included, so the UI's compare view lines them up.
Steps that do not depend on the swept values (fetch, for an optimiser sweep) are reused
through the step cache, so the points share them.

With `sweep.parallel=N` (N > 1) up to N points run at once, each as a `python main.py`
process of its own with the point's overrides, nested under the sweep run through
PARENT_RUN_ENV. Cancelling the sweep cancels every running point.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from cifar_pipeline import names
from cifar_pipeline.cancellation import Cancelled, cancellable
from cifar_pipeline.orchestrator.faults.status_guard import guard_killed_run
from cifar_pipeline.tracking import PIPELINE_NAME, PIPELINE_TAG, STEP_TAG

log = logging.getLogger(__name__)

SWEEP_TAG_VALUE = "sweep"
POINT_TAG = names.SWEEP_POINT_TAG
# A point run in a process of its own: the sweep run it nests under, and its label.
PARENT_RUN_ENV = "PIPELINE_SWEEP_RUN_ID"
POINT_ENV = "PIPELINE_SWEEP_POINT"
MAIN = Path(__file__).resolve().parents[2] / "main.py"


@dataclass
class Sweep:
    keys: list[str]
    run_id: str
    points: list[tuple[str, str, int]] = field(default_factory=list)  # label, pipeline run ID, exit code
    running: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)  # label, process
    cancelled: int = 0  # the exit code of a signal that cancelled the whole sweep


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
        run = mlflow.active_run() or mlflow.start_run()  # the `mlflow run` entry point's run, if any
        _current = Sweep(keys=swept_keys(arguments), run_id=run.info.run_id)
        mlflow.set_tags({STEP_TAG: SWEEP_TAG_VALUE, PIPELINE_TAG: PIPELINE_NAME})
        mlflow.log_param("sweep.keys", ",".join(_current.keys))
        MlflowClient().update_run(run.info.run_id, name=f"sweep {', '.join(_current.keys)}")
        log.info("sweep run %s over %s", run.info.run_id, ", ".join(_current.keys))
    return {POINT_TAG: point_label(cfg, _current.keys)}


def end_point(tags: dict[str, str], pipeline_run_id: str, code: int) -> None:
    assert _current is not None
    _current.points.append((tags[POINT_TAG], pipeline_run_id, code))


def parallelism(cfg: DictConfig) -> int:
    value = OmegaConf.select(cfg, "sweep.parallel")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"sweep.parallel={value!r}: expected a whole number of points at once, 1 or more")
    return value


def launch_point(tags: dict[str, str], parallel: int) -> None:
    """Start this point as a process of its own, once fewer than `parallel` points run.

    Cancelled while waiting for a slot: the running points are cancelled, the sweep ends.
    """
    assert _current is not None
    _wait_for_points(fewer_than=parallel)
    if _current.cancelled:
        sys.exit(finish())
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}  # not the sweep run itself
    env |= {
        PARENT_RUN_ENV: _current.run_id,
        POINT_ENV: tags[POINT_TAG],
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        "MLFLOW_EXPERIMENT_ID": MlflowClient().get_run(_current.run_id).info.experiment_id,
    }
    overrides = list(HydraConfig.get().overrides.task)
    log.info("sweep point %s: starting", tags[POINT_TAG])
    process = subprocess.Popen([sys.executable, str(MAIN), *overrides], env=env, cwd=get_original_cwd())
    _current.running.append((tags[POINT_TAG], process))


def _wait_for_points(fewer_than: int) -> None:
    """Wait until fewer than `fewer_than` points run. Cancelled meanwhile (SIGINT or
    SIGTERM): cancel every running point and wait for them all."""
    assert _current is not None
    try:
        with cancellable():
            while len(_current.running) >= fewer_than:
                _collect(_current.running[0])
                _current.running.pop(0)
    except Cancelled as exc:
        _current.cancelled = exc.exit_code
        for _, process in _current.running:
            if process.poll() is None:
                # SIGTERM, not the signal received: after a terminal's Ctrl-C (which reached
                # the points too) a second SIGINT would make them skip the grace period
                process.terminate()
        while _current.running:
            _collect(_current.running.pop(0))


def _collect(point: tuple[str, subprocess.Popen[bytes]]) -> None:
    """Wait for a point's process; record its pipeline run (found by its tags) and exit code."""
    assert _current is not None
    label, process = point
    code = process.wait()
    client = MlflowClient()
    query = f"tags.`mlflow.parentRunId` = '{_current.run_id}' and tags.`{POINT_TAG}` = '{label}'"
    experiment = client.get_run(_current.run_id).info.experiment_id
    runs = client.search_runs([experiment], query, order_by=["attributes.start_time DESC"], max_results=1)
    _current.points.append((label, runs[0].info.run_id if runs else "", code))


def point_status(exit_code: int) -> str:
    return names.FINISHED if exit_code == 0 else names.KILLED if exit_code > 128 else names.FAILED


def finish() -> int:
    """After the last point (or a cancelled one): close the sweep run; the exit code.

    The sweep is KILLED if a point was cancelled, FAILED if one failed, else FINISHED.
    """
    if _current is None:
        return 0
    _wait_for_points(fewer_than=1)
    codes = [code for _, _, code in _current.points]
    failed = [code for code in codes if code]
    lines = [f"{point_status(code):<9} {run_id}  {label}" for label, run_id, code in _current.points]
    table = "\n".join(lines)
    log.info("sweep: %d points, %d failed or cancelled\n%s", len(codes), len(failed), table)
    mlflow.log_text(table + "\n", "sweep.txt")
    cancelled = [code for code in [_current.cancelled, *codes] if code > 128]
    exit_code = cancelled[0] if cancelled else 1 if failed else 0
    mlflow.end_run(point_status(exit_code))
    if exit_code > 128:
        guard_killed_run(_current.run_id)
    return exit_code
