"""The pipeline's `main` entry point: fetch -> train -> build -> system test.

A thin Hydra app: compose configs/, then hand over to cifar_pipeline.orchestrator.
`mlflow run .` calls it with MLproject's parameters as Hydra overrides.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from cifar_pipeline.orchestrator.cli import expand_overrides
from cifar_pipeline.orchestrator.pipeline import run_pipeline


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    sys.exit(run_pipeline(cfg))


if __name__ == "__main__":
    sys.argv = expand_overrides(sys.argv)
    main()
