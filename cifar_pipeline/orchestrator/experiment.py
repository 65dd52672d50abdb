"""The project's own MLflow experiment, the default for `mlflow run` in this project.

`mlflow run` creates the pipeline run before main.py starts, in the experiment named by
`--experiment-name`/`--experiment-id`, else by MLFLOW_EXPERIMENT_NAME/MLFLOW_EXPERIMENT_ID,
else by the first registered default-experiment provider that is in context, else in
"Default". This module is that provider (registered as an entry point of the installed
project, see pyproject.toml): in context when the working directory is this project, so
`mlflow run .` lands the pipeline runs in an experiment named after the project while
MLflow's own ways of choosing an experiment still win.

MLflow loads its providers while `import mlflow` runs, so this module imports nothing of
MLflow at its top: importing it first (as a test does) would otherwise import MLflow, which
would import this half-made module again. For the same reason the provider follows MLflow's
DefaultExperimentProvider interface (in_context, get_experiment_id) without subclassing it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from cifar_pipeline.local_store import is_sqlite_store, proxied_location

# The `name:` of the project's MLproject file, and of its experiment.
PROJECT_NAME = "cifar-pipeline"


def is_project_dir(directory: Path) -> bool:
    """Whether `directory` holds this project's MLproject file (a copy of the project counts)."""
    try:
        spec = yaml.safe_load((directory / "MLproject").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(spec, dict) and spec.get("name") == PROJECT_NAME


def project_experiment_id(tracking_uri: str | None = None) -> str:
    """The ID of the experiment named after the project, made on first use.

    In a local sqlite store its artifacts are proxied (local_store.py): the step containers
    reach them through the tracking server the pipeline serves the store with. A tracking
    server chooses its experiments' artifact location itself.
    A deleted experiment of that name is an error naming the way back: MLflow cannot start
    runs in it, and quietly using another experiment would scatter the project's runs.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(PROJECT_NAME)
    if experiment is None:
        location = proxied_location(PROJECT_NAME) if is_sqlite_store(uri) else None
        try:
            return client.create_experiment(PROJECT_NAME, artifact_location=location)
        except MlflowException:
            # Another pipeline started at the same moment made it first.
            experiment = client.get_experiment_by_name(PROJECT_NAME)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise RuntimeError(
            f"experiment {PROJECT_NAME!r} (ID {experiment.experiment_id}) is deleted: restore it with "
            f"`mlflow experiments restore --experiment-id {experiment.experiment_id}`, or choose another "
            "with --experiment-name or MLFLOW_EXPERIMENT_NAME"
        )
    return str(experiment.experiment_id)


class ProjectExperimentProvider:
    """MLflow's default experiment while working in this project: the project's own."""

    def in_context(self) -> bool:
        try:
            return is_project_dir(Path.cwd())
        except FileNotFoundError:  # the working directory was removed
            return False

    def get_experiment_id(self) -> str:
        return project_experiment_id()


def main(argv: list[str] | None = None) -> None:
    """Print the tracking UI's address of the project's runs (`make ui`)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    experiment_id = project_experiment_id(args.tracking_uri)
    # MLflow 3's UI opens an experiment in its GenAI view unless told the workflow type.
    url = f"http://127.0.0.1:{args.port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    sys.stdout.write(f"pipeline runs: {url}\n")


if __name__ == "__main__":
    main()
