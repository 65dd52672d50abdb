"""The local tracking store (sqlite, the MLflow 3 default) with proxied artifacts.

The project's experiment in a local sqlite store keeps its artifacts at an
`mlflow-artifacts:` location, as an MLflow tracking server with proxied artifacts would
give it. Step containers then reach runs, models and artifacts over HTTP alone, through
the tracking server the orchestrator serves the store with (tracking_server.py): they
never open the sqlite file nor write into the artifact folder.

On the host, without a server, `mlflow-artifacts:` URIs resolve to the same folder the
server serves them from (`artifacts_destination`): this module's `artifact_repository`
replaces MLflow's repository for that scheme (an `mlflow.artifact_repository` plugin,
registered in pyproject.toml), so local scripts, the tests and the orchestrator read and
write artifacts directly, as they do with a file location. With an http(s) tracking URI
it is MLflow's own repository, unchanged.

MLflow loads its artifact repository plugins while `import mlflow` runs, so this module
imports MLflow only inside its functions (see experiment.py for the same reason).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

PROXIED_SCHEME = "mlflow-artifacts"
# The artifacts folder beside a sqlite store: `./mlruns` of MLflow's default store
# (`sqlite:///mlflow.db` in the working directory), where its file locations point too.
ARTIFACTS_FOLDER = "mlruns"


def is_local_store(tracking_uri: str) -> bool:
    """A store this process opens itself (sqlite or files), not a tracking server's."""
    return urlparse(tracking_uri).scheme in ("", "file", "sqlite")


def absolute_tracking_uri(uri: str) -> str:
    """Make a relative sqlite/file store absolute: the same store from any working directory
    (the tracking server's, a sweep point's)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and not parsed.path.startswith("//"):
        return f"sqlite:///{Path(parsed.path.lstrip('/')).resolve()}"
    if parsed.scheme in ("", "file") and not parsed.netloc:
        return Path(parsed.path).resolve().as_uri()
    return uri


def is_sqlite_store(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme == "sqlite"


def sqlite_path(tracking_uri: str) -> Path:
    """The database file of a `sqlite:///relative` or `sqlite:////absolute` URI."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        raise ValueError(f"tracking URI {tracking_uri!r}: expected sqlite:///<file>")
    # sqlite:///x.db has the path /x.db (relative), sqlite:////abs/x.db has //abs/x.db
    return Path(unquote(parsed.path)[1:]).resolve()


def artifacts_destination(tracking_uri: str) -> Path:
    """Where a sqlite store's proxied artifacts are kept: MLFLOW_ARTIFACTS_DESTINATION (the
    tracking server's own setting) when it names a local folder, else `mlruns/` beside the
    database file."""
    configured = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    parsed = urlparse(configured)
    if configured and parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme == "file" else configured).resolve()
    return sqlite_path(tracking_uri).parent / ARTIFACTS_FOLDER


def proxied_location(name: str) -> str:
    """An experiment's artifact location that the tracking server proxies."""
    return f"{PROXIED_SCHEME}:/{name}"


def proxied_path(artifact_uri: str) -> str:
    """The path of an `mlflow-artifacts:` URI below the artifacts destination.

    `mlflow-artifacts:/a/b` and `mlflow-artifacts://host:port/a/b` both name `a/b`.
    """
    path = unquote(urlparse(artifact_uri).path).lstrip("/")
    if any(part == ".." for part in Path(path).parts):
        raise ValueError(f"artifact URI {artifact_uri!r}: a path that leaves the artifacts folder")
    return path


def artifact_repository(
    artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
) -> Any:
    """MLflow's repository for `mlflow-artifacts:` URIs, or with a local sqlite store the
    folder that a tracking server of that store serves them from."""
    import mlflow
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    tracking = tracking_uri or mlflow.get_tracking_uri()
    if is_sqlite_store(tracking):
        folder = artifacts_destination(tracking) / proxied_path(artifact_uri)
        return LocalArtifactRepository(folder.as_uri(), tracking_uri=tracking_uri, registry_uri=registry_uri)
    return MlflowArtifactsRepository(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)


def ensure_registered() -> None:
    """Make `artifact_repository` MLflow's for `mlflow-artifacts:` in this process.

    The entry point does that where the project is installed; the orchestrator may run
    where it is not (`mlflow run .` in the environment conda.yaml describes) and must still
    read and write the artifacts of the project's experiment that `mlflow run` chose.
    MLflow's plugin loading has no public call for this: its registry's `register` is what
    the entry point reaches too.
    """
    from mlflow.store.artifact import artifact_repository_registry as registry

    if registry.get_registered_artifact_repositories().get(PROXIED_SCHEME) is not artifact_repository:
        registry._artifact_repository_registry.register(PROXIED_SCHEME, artifact_repository)
