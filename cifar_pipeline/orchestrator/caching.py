"""Content-addressed step caching that says why a step ran or was reused.

A step's key hashes what decides its output:
- the step's name;
- the step image's ID: the code and its dependencies (Docker's image ID is a digest of the
  image's content, so a code change gives a new ID, and an unchanged rebuild the same one);
- the step's parameters, without the upstream run IDs;
- the content digests of its inputs: the data's digest (`data.digest` of the fetch run),
  the model's (`model.digest` of the train run), the inference image's ID (`image.id` of the
  build run); for fetch, the data source's checksum or, for local files, a fingerprint.

Before a step runs, a FINISHED run with the same key whose artifacts still exist is
reused. Each run records its key (tag `pipeline.step_key`) and the components
(`step_key.json`), so a later run can say which of them changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline.tracking import (
    BUILD,
    FETCH,
    STEP_TAG,
    SYSTEMTEST,
    TRAIN,
    UPSTREAM_PARAM,
    find_reusable_run,
)

log = logging.getLogger(__name__)

STEP_KEY_TAG = "pipeline.step_key"
STEP_KEY_ARTIFACT = "step_key.json"
# On the record run the pipeline makes for a reused step (it is not a step run itself).
REUSED_FROM_TAG = "pipeline.reused_from"
REUSED_STEP_TAG = "pipeline.reused_step"

# Each step's input by name, and the tag of the upstream run holding its content digest.
UPSTREAM_DIGEST_TAG = {
    TRAIN: ("data", "data.digest"),
    BUILD: ("model", "model.digest"),
    SYSTEMTEST: ("image", "image.id"),
}
NOT_KEY_PARAMS = {*UPSTREAM_PARAM.values(), "resume_run_id"}


@dataclass(frozen=True)
class StepKey:
    step: str
    image: str
    params: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def components(self) -> dict[str, Any]:
        return {"key": self.digest, **asdict(self)}


@dataclass
class Decision:
    key: StepKey | None  # None: this step cannot be cached (the reason says why)
    reuse: Run | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        return "reused" if self.reuse else "ran"


def local_fingerprint(path: Path) -> str:
    """Sizes and modification times of a local file or every file under a folder: cheap, and
    it changes when the data does (the fetch step still verifies content)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0{stat.st_size}\0".encode())
        digest.update(f"{stat.st_mtime_ns}\n".encode())
    return f"files:{digest.hexdigest()}"


def fetch_input(params: dict[str, Any]) -> tuple[str | None, str]:
    """What identifies the fetch step's input beyond its parameters; (None, why) if nothing does."""
    url, checksum = str(params.get("data_url") or ""), str(params.get("data_checksum") or "")
    # The parameters pin the content: a checksum, the built-in digits, or CIFAR-10 (any
    # copy of it is verified against the official checksum).
    if checksum or params.get("source") in ("digits", "cifar10"):
        return "", ""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None, f"data_url {url} has no data_checksum: its content is only known after downloading it"
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else url)
    return (local_fingerprint(path), "") if path.exists() else (None, f"data_url {url} does not exist")


def upstream_digest(client: MlflowClient, step: str, upstream: dict[str, str]) -> dict[str, str]:
    if step not in UPSTREAM_DIGEST_TAG:
        return {}
    name, tag = UPSTREAM_DIGEST_TAG[step]
    run_id = upstream[UPSTREAM_PARAM[step]]
    # Runs from before digests were recorded fall back to their run ID: still a correct key.
    return {name: client.get_run(run_id).data.tags.get(tag) or f"run:{run_id}"}


def step_key(
    client: MlflowClient, step: str, image_id: str, params: dict[str, Any], upstream: dict[str, str]
) -> tuple[StepKey | None, str]:
    """The step's key, or (None, why it cannot be cached)."""
    if params.get("resume_run_id"):
        return None, f"continues the interrupted train run {params['resume_run_id']}"
    inputs = upstream_digest(client, step, upstream)
    if step == FETCH:
        fingerprint, why = fetch_input(params)
        if fingerprint is None:
            return None, why
        if fingerprint:
            inputs["data_source"] = fingerprint
    key_params = {k: v for k, v in params.items() if k not in NOT_KEY_PARAMS}
    return StepKey(step=step, image=image_id, params=key_params, inputs=inputs), ""


def previous_components(client: MlflowClient, step: str) -> tuple[str, dict[str, Any]] | None:
    """The components of the newest earlier FINISHED run of `step` that recorded a key."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{STEP_TAG}` = '{step}' and attributes.status = 'FINISHED'"
    for run in client.search_runs(
        experiments, query, order_by=["attributes.start_time DESC"], max_results=20
    ):
        if STEP_KEY_TAG not in run.data.tags:
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="step-key-") as work:
                path = client.download_artifacts(run.info.run_id, STEP_KEY_ARTIFACT, work)
                return run.info.run_id, json.loads(Path(path).read_text())
        except (MlflowException, OSError, ValueError):
            continue
    return None


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:12] + "…"


def differences(current: StepKey, previous: dict[str, Any]) -> list[str]:
    """What changed from `previous` (an earlier run's components) to `current`, in words."""
    changes = []
    if previous.get("image") != current.image:
        changes.append("step image changed (code or dependencies)")
    old_params: dict[str, Any] = previous.get("params", {})
    changed = [
        f"{name} {_short(old_params.get(name, '(unset)'))}→{_short(current.params.get(name, '(unset)'))}"
        for name in sorted(set(old_params) | set(current.params))
        if old_params.get(name) != current.params.get(name)
    ]
    if changed:
        changes.append("params: " + ", ".join(changed))
    old_inputs: dict[str, str] = previous.get("inputs", {})
    for name in sorted(set(old_inputs) | set(current.inputs)):
        if old_inputs.get(name) != current.inputs.get(name):
            changes.append(f"upstream {name.replace('_', ' ')} changed")
    return changes


class StepCache:
    """Decides, step by step, whether to reuse an earlier run, and explains the decision."""

    def __init__(
        self,
        client: MlflowClient,
        enabled: bool,
        rerun: set[str],
        image_exists: Callable[[str], bool],
    ) -> None:
        self.client = client
        self.enabled = enabled
        self.rerun = rerun
        self.image_exists = image_exists

    def decide(self, step: str, image_id: str, params: dict[str, Any], upstream: dict[str, str]) -> Decision:
        key, why_not = step_key(self.client, step, image_id, params, upstream)
        if key is None:
            return Decision(None, reasons=[f"not cacheable: {why_not}"])
        if not self.enabled:
            return Decision(key, reasons=["cache disabled (cache=false)"])
        if step in self.rerun:
            return Decision(key, reasons=[f"rerun requested (rerun={','.join(sorted(self.rerun))})"])
        hit = find_reusable_run(step, STEP_KEY_TAG, key.digest)
        if hit is not None and step == BUILD and not self.image_exists(hit.data.tags.get("image.id", "")):
            reason = (
                f"build run {hit.info.run_id} has this key, but its image is no longer in the Docker engine"
            )
            return Decision(key, reasons=[reason])
        if hit is not None:
            return Decision(key, reuse=hit, reasons=[f"same key as run {hit.info.run_id}"])
        return Decision(key, reasons=self.explain_miss(step, key))

    def explain_miss(self, step: str, key: StepKey) -> list[str]:
        previous = previous_components(self.client, step)
        if previous is None:
            return ["no earlier run of this step"]
        run_id, components = previous
        if components.get("key") == key.digest:
            return [f"earlier run {run_id} has this key, but its artifacts are gone"]
        changes = differences(key, components)
        return [f"vs run {run_id}: " + "; ".join(changes or ["key differs"])]

    def record(self, run_id: str, key: StepKey) -> None:
        """Tag a finished step run with its key and log the components next to it."""
        self.client.set_tag(run_id, STEP_KEY_TAG, key.digest)
        self.client.log_dict(run_id, key.components(), STEP_KEY_ARTIFACT)


def parse_rerun(value: str, steps: tuple[str, ...]) -> set[str]:
    names = {name.strip() for name in str(value or "").split(",") if name.strip()}
    unknown = sorted(names - set(steps))
    if unknown:
        expected = ", ".join(steps)
        raise ValueError(
            f"cache.rerun={value!r}: unknown step {', '.join(unknown)}; expected some of {expected}"
        )
    return names
