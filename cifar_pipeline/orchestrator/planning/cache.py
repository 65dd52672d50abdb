"""Content-addressed step caching that says why a step ran or was reused.

A step's key hashes what decides its output, besides its code:
- the step's name and its project file (steps/<step>/MLproject: its command line);
- its environment: the ID of its `<step>-env` image (base image + the step's pinned
  dependencies; Docker's image ID is a digest of the content), with the pinned packages
  recorded beside it to explain a change;
- the step's parameters, without the upstream run IDs;
- the content digests of its inputs: the data's digest (`data.digest` of the fetch run),
  the model's (`model.digest` of the train run), the inference image's ID (`image.id` of the
  build run); for fetch, the data source's checksum or, for local files, a fingerprint;
  also the data digest of the reference its data is validated against ("none" without one);
  for promote, the candidate's model, data and image, and the champion it is compared
  with (registry version and model digest).

Its code is what it loaded: every step run records the project files it loaded with
their digests (code_trace.py). A FINISHED run with the same key is reused only if every
file it loaded is unchanged in this checkout, so a change to a module that only the system
test imports re-runs only the system test. Because inputs are keyed by content, a step
that re-runs and makes byte-identical output lets the steps after it be reused.

Each run records its key (tag `pipeline.step_key`) and the components
(`step_key.json`), so a later run can say which of them changed. A promote run that moved
the alias also records the key it would have with the champion it left behind
(`pipeline.step_key_after`): its decision stands while the registry is in the state it
saw or the state it made, so an unchanged re-run after a promotion reuses it. Likewise a
fetch run validated without a reference stands for validation against its own data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline import names
from cifar_pipeline.code_trace import PROJECT_DIR, changed_entries, file_sha256
from cifar_pipeline.orchestrator.running.step_images import Environment
from cifar_pipeline.step_declarations import PIPELINE_STEPS, StepDeclaration, StepGraph
from cifar_pipeline.tracking import (
    CODE_TRACE_ARTIFACT,
    STEP_TAG,
    UpstreamError,
    lineage,
    require_step_run,
)

log = logging.getLogger(__name__)

STEP_KEY_TAG = names.STEP_KEY_TAG
STEP_KEY_AFTER_TAG = names.STEP_KEY_AFTER_TAG
STEP_KEY_ARTIFACT = names.STEP_KEY_ARTIFACT
# On the record run the pipeline makes for a reused step (it is not a step run itself).
REUSED_FROM_TAG = names.REUSED_FROM_TAG
REUSED_STEP_TAG = names.REUSED_STEP_TAG


@dataclass(frozen=True)
class StepKey:
    step: str
    environment: str  # the <step>-env image ID
    project: str  # digest of steps/<step>/MLproject
    params: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)  # the environment's pins, to explain

    @property
    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def components(self) -> dict[str, Any]:
        return {"key": self.digest, **asdict(self)}

    def with_input(self, name: str, value: str) -> StepKey:
        """The same key with one input set otherwise (a key the output also stands under)."""
        return replace(self, inputs={**self.inputs, name: value})


@dataclass
class Decision:
    key: StepKey | None  # None: this step cannot be cached (the reason says why)
    reuse: Run | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        return "reused" if self.reuse else "ran"


def upstream_digests(
    client: MlflowClient, step: StepDeclaration, upstream: dict[str, str], graph: StepGraph
) -> dict[str, str]:
    """The content digests of the upstream outputs the step's key names, by input name.

    The consumed run is read directly; other inputs (promote: the candidate's model, data
    and image) through that run's lineage. A run from before digests were recorded, or an
    output without one, stands by its run ID: still a correct key.
    """
    inputs: dict[str, str] = {}
    links: dict[str, str] | None = None
    for param in step.inputs_for_key:
        if param == step.consumes:
            run_id = upstream[param]
        else:
            links = links if links is not None else lineage(client.get_run(upstream[step.consumes]))
            run_id = links[param]
        output = graph.output(param)
        digest = client.get_run(run_id).data.tags.get(output.digest_tag) if output.digest_tag else None
        inputs[output.name] = digest or f"run:{run_id}"
    return inputs


def project_digest(step: StepDeclaration) -> str:
    return file_sha256(step.project / "MLproject")


def step_key(
    client: MlflowClient,
    step: StepDeclaration,
    environment: Environment,
    params: dict[str, Any],
    upstream: dict[str, str],
    extra_inputs: dict[str, str] | None = None,
    graph: StepGraph = PIPELINE_STEPS,
) -> StepKey:
    """The step's key. `extra_inputs`: inputs that are not upstream runs (promote: the
    champion; fetch: its validation reference, a local input's fingerprint)."""
    inputs = {**upstream_digests(client, step, upstream, graph), **(extra_inputs or {})}
    # Run IDs are not content: the inputs stand for them.
    unkeyed = {*graph.producer_of, *step.unkeyed_params}
    return StepKey(
        step=step.name,
        environment=environment.image_id,
        project=project_digest(step),
        params={k: v for k, v in params.items() if k not in unkeyed},
        inputs=inputs,
        packages=environment.packages,
    )


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


def package_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return [
        f"{name} {old.get(name, '(none)')}→{new.get(name, '(none)')}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def differences(current: StepKey, previous: dict[str, Any]) -> list[str]:
    """What changed from `previous` (an earlier run's components) to `current`, in words."""
    changes = []
    if previous.get("environment") != current.environment:
        packages = package_changes(previous.get("packages", {}), current.packages)
        changes.append(
            "environment changed: " + (", ".join(packages) or "base image or dependency layers rebuilt")
        )
    if previous.get("project") != current.project:
        changes.append(f"code changed: steps/{current.step}/MLproject")
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
        output_gone: Callable[[str, Run], str] = lambda step, run: "",
        root: Path = PROJECT_DIR,
        graph: StepGraph = PIPELINE_STEPS,
    ) -> None:
        self.client = client
        self.enabled = enabled
        self.rerun = rerun
        # What a run's output outside MLflow lacks now ("" if nothing): the Docker image a
        # build made, the registry version a promotion registered (the step's hooks say).
        self.output_gone = output_gone
        self.root = root  # the checkout whose code the steps run
        self.graph = graph

    def decide(
        self,
        declaration: StepDeclaration,
        environment: Environment,
        params: dict[str, Any],
        upstream: dict[str, str],
        extra_inputs: dict[str, str] | None = None,
        uncacheable: str = "",
    ) -> Decision:
        """`uncacheable`: why this run cannot be cached, if it cannot (its hooks say)."""
        if uncacheable:
            return Decision(None, reasons=[f"not cacheable: {uncacheable}"])
        step = declaration.name
        key = step_key(self.client, declaration, environment, params, upstream, extra_inputs, self.graph)
        if not self.enabled:
            return Decision(key, reasons=["cache disabled (cache=false)"])
        if step in self.rerun:
            return Decision(key, reasons=[f"rerun requested (rerun={','.join(sorted(self.rerun))})"])
        code_changed: tuple[str, list[str]] | None = None
        for hit in self.runs_with_key(step, key.digest):
            run_id = hit.info.run_id
            changes = self.code_changes(run_id)
            if changes is None:
                continue
            if changes:
                # explain against the closest earlier run: the fewest changed files
                if code_changed is None or len(changes) < len(code_changed[1]):
                    code_changed = (run_id, changes)
                continue
            if gone := self.output_gone(step, hit):
                return Decision(key, reasons=[f"{step} run {run_id} has this key, but {gone}"])
            return Decision(key, reuse=hit, reasons=[f"same key as run {run_id}"])
        if code_changed is not None:
            run_id, changes = code_changed
            return Decision(key, reasons=[f"vs run {run_id}: code changed: {', '.join(changes)}"])
        return Decision(key, reasons=self.explain_miss(step, key))

    def runs_with_key(self, step: str, digest: str, limit: int = 20) -> list[Run]:
        """FINISHED runs of `step` with this key whose artifacts exist, newest first."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        found: dict[str, Run] = {}
        for tag in (STEP_KEY_TAG, STEP_KEY_AFTER_TAG):
            query = (
                f"tags.`{STEP_TAG}` = '{step}' and tags.`{tag}` = '{digest}' "
                "and attributes.status = 'FINISHED'"
            )
            for run in self.client.search_runs(
                experiments, query, order_by=["attributes.start_time DESC"], max_results=limit
            ):
                found[run.info.run_id] = run
        runs = []
        for run in sorted(found.values(), key=lambda r: r.info.start_time, reverse=True):
            try:
                runs.append(require_step_run(run.info.run_id, step, self.client, graph=self.graph))
            except UpstreamError as exc:
                log.info("cannot reuse %s: %s", run.info.run_id, exc)
        return runs

    def code_changes(self, run_id: str) -> list[str] | None:
        """The project files `run_id` loaded that changed since; None if it recorded none.

        A recorded file that cannot be read now raises CodeIdentityError, naming it.
        """
        try:
            with tempfile.TemporaryDirectory(prefix="step-code-") as work:
                path = self.client.download_artifacts(run_id, CODE_TRACE_ARTIFACT, work)
                recorded = json.loads(Path(path).read_text())
        except (MlflowException, OSError, ValueError) as exc:
            log.info("cannot reuse %s: no record of the code it loaded (%s)", run_id, exc)
            return None
        return changed_entries(recorded, self.root)

    def explain_miss(self, step: str, key: StepKey) -> list[str]:
        previous = previous_components(self.client, step)
        if previous is None:
            return ["no earlier run of this step"]
        run_id, components = previous
        changes = differences(key, components)
        if code := self.code_changes(run_id):
            changes.append("code changed: " + ", ".join(code))
        if components.get("key") == key.digest and not changes:
            return [f"earlier run {run_id} has this key, but its artifacts are gone"]
        return [f"vs run {run_id}: " + "; ".join(changes or ["key differs"])]

    def record(self, run_id: str, key: StepKey, after: StepKey | None = None) -> None:
        """Tag a finished step run with its key and log the components next to it; `after`:
        the key under which its output also stands (promote: with the champion it made)."""
        self.client.set_tag(run_id, STEP_KEY_TAG, key.digest)
        if after is not None and after.digest != key.digest:
            self.client.set_tag(run_id, STEP_KEY_AFTER_TAG, after.digest)
        self.client.log_dict(run_id, key.components(), STEP_KEY_ARTIFACT)


def parse_rerun(value: str, steps: tuple[str, ...]) -> set[str]:
    """`cache.rerun`: step names, comma separated; an unknown one is refused, naming it."""
    names = {name.strip() for name in str(value or "").split(",") if name.strip()}
    unknown = sorted(names - set(steps))
    if unknown:
        expected = ", ".join(steps)
        raise ValueError(
            f"cache.rerun={value!r}: unknown step {', '.join(unknown)}; expected some of {expected}"
        )
    return names
