"""The pipeline's `main` entry point: fetch -> train -> build -> system test.

A thin Hydra app: compose configs/, then hand over to cifar_pipeline.orchestrator.
`mlflow run .` calls it with MLproject's parameters as Hydra overrides. With `-m`
(Hydra multirun) every point of the sweep is a pipeline run of its own, nested under
one sweep run.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from cifar_pipeline.cancellation import term_when_parent_dies
from cifar_pipeline.orchestrator import sweep
from cifar_pipeline.orchestrator.overrides import expand_overrides
from cifar_pipeline.orchestrator.pipeline import run_pipeline

OmegaConf.register_new_resolver("pid", os.getpid)  # hydra.run.dir: one folder per process


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    if not sweep.is_multirun():
        if parent := os.environ.get(sweep.PARENT_RUN_ENV):  # a point of a parallel sweep
            tags = {sweep.POINT_TAG: os.environ[sweep.POINT_ENV]}
            sys.exit(run_pipeline(cfg, point_tags=tags, parent_run_id=parent).exit_code)
        sys.exit(run_pipeline(cfg).exit_code)
    try:
        parallel = sweep.parallelism(cfg)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    tags = sweep.start_point(cfg, sys.argv[1:])
    if parallel > 1:
        sweep.launch_point(tags, parallel)
        return
    outcome = run_pipeline(cfg, point_tags=tags)
    sweep.end_point(tags, outcome.run_id, outcome.exit_code)
    if outcome.cancelled:  # the sweep stops with the point
        sys.exit(sweep.finish())


if __name__ == "__main__":
    # `mlflow run` killed alone must not leave this process (and its step container) running
    term_when_parent_dies()
    sys.argv = expand_overrides(sys.argv)
    main()
    sys.exit(sweep.finish())
