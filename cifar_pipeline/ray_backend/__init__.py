"""An MLflow Projects execution backend that runs a project's docker_env container as a Ray job:
`mlflow run <project> --backend ray --backend-config <json or file>` (registered in pyproject.toml
as the `ray` entry point of `mlflow.project_backend`)."""

from cifar_pipeline.ray_backend.backend import RayBackend

__all__ = ["RayBackend"]
