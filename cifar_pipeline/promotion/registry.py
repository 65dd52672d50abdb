"""The model registry's side of promotion: who the champion is, registering a candidate,
moving the alias (keeping the one it leaves under `previous`), and rolling back.

Every candidate that passed its system test becomes a version, tagged with its outcome,
so the registry shows the whole history; only a promotion moves the alias. MLflow has no
compare-and-set on aliases, so the alias is re-read just before it moves, and a champion
that changed since the comparison stops the promotion instead of being overwritten.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from cifar_pipeline import names

log = logging.getLogger(__name__)

# Version tags other runs (and people) read.
OUTCOME_TAG = names.OUTCOME_TAG
REASON_TAG = names.REASON_TAG
DECIDED_BY_TAG = names.DECIDED_BY_TAG  # the promote run that decided
COMPARED_WITH_TAG = names.COMPARED_WITH_TAG  # the champion version it was compared with
ROLLED_BACK_TAG = names.ROLLED_BACK_TAG  # when a rollback took the alias away from it
# On the promote run: the champion the registry has after it (Champion.identity, or NO_CHAMPION).
CHAMPION_AFTER_TAG = names.CHAMPION_AFTER_TAG
MODEL_DIGEST_TAG = names.MODEL_DIGEST_TAG
DATA_DIGEST_TAG = names.DATA_DIGEST_TAG
IMAGE_TAG = "image"
NO_CHAMPION = "none"  # the alias names no version (a parameter, a tag and a key input say so)
LOGGED_MODEL_NAME = "model"  # the train step's ONNX model (mlflow.onnx.log_model(name=...))


class ChampionMoved(RuntimeError):
    """The alias changed between the comparison and the promotion."""


@dataclass(frozen=True)
class Champion:
    """The version an alias points at, and the content digest of its model."""

    name: str
    alias: str
    version: str
    run_id: str  # the train run that produced it
    model_digest: str

    @property
    def identity(self) -> str:
        """What a comparison with this champion depends on: which version, which model bytes."""
        return f"{self.name}/{self.version}:{self.model_digest}"


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    try:
        return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return {}
        raise


def aliased_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    version = _aliases(client, name).get(alias)
    return client.get_model_version(name, version) if version else None


def champion(client: MlflowClient, name: str, alias: str) -> Champion | None:
    """The version `name@alias` names now, or None if there is none."""
    version = aliased_version(client, name, alias)
    if version is None:
        return None
    digest = version.tags.get(MODEL_DIGEST_TAG, "")
    if not digest and version.run_id:
        try:
            digest = client.get_run(version.run_id).data.tags.get(MODEL_DIGEST_TAG, "")
        except MlflowException:
            digest = ""
    return Champion(
        name, alias, str(version.version), version.run_id or "", digest or f"version:{version.version}"
    )


def logged_model_uri(client: MlflowClient, run_id: str, name: str = LOGGED_MODEL_NAME) -> str:
    """`models:/<model_id>` of the train run's LoggedModel `name` (default: the ONNX model it
    serves; "pytorch_model" for the PyTorch one). MLflow 3 addresses models by ID."""
    run = client.get_run(run_id)
    for output in run.outputs.model_outputs if run.outputs else []:
        if client.get_logged_model(output.model_id).name == name:
            return f"models:/{output.model_id}"
    raise ValueError(f"train run {run_id} logged no model named {name!r}")


def register(client: MlflowClient, name: str, run_id: str, model_digest: str, tags: dict[str, str]) -> str:
    """The version of `name` holding this model (registered now unless one already does),
    tagged with `tags`: the latest decision about it."""
    # By content: a train run that re-made the same bytes makes no second version.
    for existing in client.search_model_versions(
        f"name = '{name}' and tags.`{MODEL_DIGEST_TAG}` = '{model_digest}'"
    ):
        version = str(existing.version)
        log.info("%s version %s already holds this model", name, version)
        break
    else:
        registered = mlflow.register_model(logged_model_uri(client, run_id), name)
        version = str(registered.version)
        log.info("registered %s version %s", name, version)
    for key, value in {**tags, MODEL_DIGEST_TAG: model_digest}.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def promote(
    client: MlflowClient, name: str, alias: str, previous_alias: str, version: str, expected: Champion | None
) -> None:
    """Point `alias` at `version`; the champion it replaces keeps `previous_alias`.

    Refuses (ChampionMoved) when the alias no longer names `expected`, the champion the
    candidate was compared with.
    """
    now = champion(client, name, alias)
    if now is not None and now.version == version:
        log.info("%s@%s already names version %s (another pipeline promoted it)", name, alias, version)
        return
    if (now.version if now else None) != (expected.version if expected else None):
        raise ChampionMoved(
            f"{name}@{alias} moved during the comparison: it named "
            f"{f'version {expected.version}' if expected else 'no version'} and now names "
            f"{f'version {now.version}' if now else 'none'}; run the pipeline again to compare "
            "with the new champion"
        )
    if expected is not None and expected.version != version:
        client.set_registered_model_alias(name, previous_alias, expected.version)
    client.set_registered_model_alias(name, alias, version)
    log.info(
        "%s@%s -> version %s%s", name, alias, version,
        f" (version {expected.version} is now @{previous_alias})" if expected else "",
    )  # fmt: skip


def rollback(client: MlflowClient, name: str, alias: str, previous_alias: str) -> tuple[str, str]:
    """Point `alias` back at the version `previous_alias` names; return (from, to) versions.

    The version rolled back from is tagged `promotion.rolled_back`, and `previous_alias`
    is removed: a second rollback does not undo the first by accident.
    """
    aliases = _aliases(client, name)
    if previous_alias not in aliases:
        raise ValueError(
            f"{name}@{previous_alias} does not exist: there is no earlier champion to roll back to"
        )
    target, current = aliases[previous_alias], aliases.get(alias, "")
    client.set_registered_model_alias(name, alias, target)
    client.delete_registered_model_alias(name, previous_alias)
    if current:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        client.set_model_version_tag(name, current, ROLLED_BACK_TAG, stamp)
    return current, target
