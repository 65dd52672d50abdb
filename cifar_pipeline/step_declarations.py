"""Each pipeline step, declared once: what it consumes and produces, what a run of it must
leave to count as finished, where its parameters come from, what it needs to run, which of
its results the pipeline run carries, and what its cache key adds.

Planner, cache, resume, summary and the engine that runs a step read these declarations;
no other module lists the steps or their order. Adding a step is one `StepDeclaration`
(and, if the orchestrator must do something particular for it, one hooks module).

This module imports nothing but the standard library: every step image imports it (through
tracking.py) to check its upstream run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cifar_pipeline import names

PROJECT_DIR = Path(__file__).resolve().parents[1]
STEPS_DIR = PROJECT_DIR / "steps"


@dataclass(frozen=True)
class Output:
    """What a step passes on: the run ID parameter its consumer takes, and the tag of the run
    that holds its content digest (a consumer's cache key names the content, not the run)."""

    param: str  # e.g. "data_run_id": the next step's parameter, and the pipeline's resume key
    name: str  # the input's name in a consumer's key, e.g. "data"
    digest_tag: str = ""  # e.g. "data.digest"; "": the run ID stands for the content


@dataclass(frozen=True)
class Resources:
    """What the step's container needs from the machine it runs on."""

    gpu: bool = False  # may use the GPUs (the step's hooks decide whether it asks for them)
    shm_size: str = ""  # /dev/shm size, e.g. "2g" (DataLoader workers, NCCL)
    docker_socket: bool = False  # drives the Docker engine (builds or runs images)
    host_network: bool = True  # reaches a tracking server, or a container it started, on loopback


@dataclass(frozen=True)
class Headline:
    """Which of a step run's values the pipeline run carries, and under which names."""

    metrics: dict[str, str] = field(default_factory=dict)  # step metric -> pipeline metric
    numeric_params: dict[str, str] = field(default_factory=dict)  # step param -> pipeline metric
    tags: dict[str, str] = field(default_factory=dict)  # step tag -> pipeline tag


@dataclass(frozen=True)
class StepDeclaration:
    name: str
    # The upstream run ID parameter it takes ("": none, it starts the pipeline).
    consumes: str = ""
    produces: Output | None = None
    # What a FINISHED run must have logged for the next step (or a resume) to use it.
    required_artifacts: tuple[str, ...] = ()
    # Its parameters: these config groups' keys, and these top-level config keys.
    config_groups: tuple[str, ...] = ()
    config_keys: tuple[str, ...] = ()
    # Parameters that may name a host path: mounted read-only into the container.
    local_path_params: tuple[str, ...] = ()
    resources: Resources = Resources()
    headline: Headline = Headline()
    # Upstream outputs whose digests enter the key, by parameter. The consumed one is read
    # from the upstream run, the others from its lineage (default: the consumed one).
    key_inputs: tuple[str, ...] | None = None
    # Parameters left out of the key because an input stands for them, or they do not
    # change the output (run IDs are always left out: their content digest is the input).
    unkeyed_params: tuple[str, ...] = ()
    # An artifact that lets a FAILED or KILLED run of this step be continued (a checkpoint).
    continue_from: str = ""
    # Further requirement sets its image installs (requirements/<name>.txt), beyond its own.
    extra_requirements: tuple[str, ...] = ()
    # "module:Class" of the orchestrator's hooks for this step ("": none needed).
    hooks: str = ""
    # The step's MLflow project (default steps/<name>); its MLproject is part of the key.
    project_dir: Path | None = None

    @property
    def project(self) -> Path:
        return self.project_dir or STEPS_DIR / self.name

    @property
    def inputs_for_key(self) -> tuple[str, ...]:
        if self.key_inputs is not None:
            return self.key_inputs
        return (self.consumes,) if self.consumes else ()


class StepGraph:
    """The steps in order, and every table the orchestrator needs, derived from them."""

    def __init__(self, declarations: tuple[StepDeclaration, ...]) -> None:
        names = [d.name for d in declarations]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique: {names}")
        self.declarations = declarations
        self.by_name = {d.name: d for d in declarations}
        self.names: tuple[str, ...] = tuple(names)
        self.producer_of = {d.produces.param: d for d in declarations if d.produces}
        for declaration in declarations:
            if declaration.consumes and declaration.consumes not in self.producer_of:
                raise ValueError(
                    f"step {declaration.name} consumes {declaration.consumes}: no step produces it"
                )

    def __getitem__(self, name: str) -> StepDeclaration:
        return self.by_name[name]

    def __iter__(self) -> Iterator[StepDeclaration]:
        return iter(self.declarations)

    def after(self, name: str) -> tuple[str, ...]:
        """`name` and every step after it."""
        return self.names[self.names.index(name) :]

    def resume_keys(self) -> tuple[tuple[str, str], ...]:
        """(upstream parameter, the first step that consumes it: where a pipeline given that
        run ID starts), most downstream first."""
        first: dict[str, str] = {}
        for declaration in self.declarations:
            if declaration.consumes:
                first.setdefault(declaration.consumes, declaration.name)
        return tuple(reversed(first.items()))

    def output_param(self, name: str) -> str:
        """The run ID parameter that passes `name`'s output on."""
        produces = self.by_name[name].produces
        if produces is None:
            raise ValueError(f"step {name} produces nothing a later step consumes")
        return produces.param

    def output(self, param: str) -> Output:
        produces = self.producer_of[param].produces
        assert produces is not None
        return produces


PIPELINE_STEPS = StepGraph(
    (
        StepDeclaration(
            name="fetch",
            produces=Output("data_run_id", "data", names.DATA_DIGEST_TAG),
            required_artifacts=(
                "data/manifest.json",
                "data/train_images.npy",
                "data/train_labels.npy",
                "data/test_images.npy",
                "data/test_labels.npy",
            ),
            config_groups=("data",),
            local_path_params=("data_url",),
            headline=Headline(
                numeric_params={"num_train": "data.train_images", "num_test": "data.test_images"},
                tags={
                    names.DATA_DIGEST_TAG: names.DATA_DIGEST_TAG,
                    names.VALIDATION_STATUS_TAG: "data.validation",
                },
            ),
            # its validation reference is a key input (the reference's data digest)
            unkeyed_params=("reference_run_id",),
            hooks="cifar_pipeline.orchestrator.hooks.fetch:FetchHooks",
        ),
        StepDeclaration(
            name="train",
            consumes="data_run_id",
            produces=Output("model_run_id", "model", names.MODEL_DIGEST_TAG),
            required_artifacts=("onnx/model.onnx", "onnx/metadata.json", "reference/predictions.npz"),
            config_groups=("model", "optim", "train"),
            config_keys=("seed",),
            resources=Resources(gpu=True, shm_size="2g"),
            headline=Headline(
                metrics={
                    "final_test_accuracy": "train.test_accuracy",
                    "final_test_accuracy_flip_tta": "train.test_accuracy_flip_tta",
                },
                tags={
                    names.MODEL_DIGEST_TAG: names.MODEL_DIGEST_TAG,
                    names.QUALITY_GATE_TAG: "model.quality_gate",
                },
            ),
            unkeyed_params=("resume_run_id",),
            continue_from=names.CHECKPOINT_ARTIFACT,
            hooks="cifar_pipeline.orchestrator.hooks.train:TrainHooks",
        ),
        StepDeclaration(
            name="build",
            consumes="model_run_id",
            produces=Output("image_run_id", "image", names.IMAGE_ID_TAG),
            required_artifacts=("image/image.json",),
            config_groups=("serve",),
            resources=Resources(docker_socket=True),
            headline=Headline(
                metrics={"image_size_mb": "image.size_mb"}, tags={names.IMAGE_REF_TAG: names.IMAGE_REF_TAG}
            ),
            extra_requirements=("serve",),
            hooks="cifar_pipeline.orchestrator.hooks.build:BuildHooks",
        ),
        StepDeclaration(
            name="systemtest",
            consumes="image_run_id",
            produces=Output("systemtest_run_id", "systemtest"),
            required_artifacts=("systemtest/report.json",),
            config_groups=("systemtest",),
            resources=Resources(docker_socket=True),
            headline=Headline(
                metrics={
                    "test_accuracy": "served.test_accuracy",
                    "top1_agreement": "served.top1_agreement",
                    "max_logit_diff": "served.max_logit_diff",
                    "c1_latency_p50_ms": "served.latency_p50_ms",
                    "c1_latency_p99_ms": "served.latency_p99_ms",
                    "c8_requests_per_second": "served.requests_per_second_c8",
                },
                tags={names.SYSTEMTEST_PASSED_TAG: "served.passed"},
            ),
        ),
        StepDeclaration(
            name="promote",
            consumes="systemtest_run_id",
            required_artifacts=("promotion/report.json",),
            config_groups=("promote",),
            headline=Headline(
                metrics={"promoted": "promoted", "accuracy_difference": "promotion.accuracy_difference"},
                tags={
                    names.OUTCOME_TAG: names.OUTCOME_TAG,
                    names.REGISTERED_VERSION_TAG: "promotion.version",
                },
            ),
            # the candidate the system test passed: its model, data and image
            key_inputs=("model_run_id", "data_run_id", "image_run_id"),
            # the champion is a key input (its identity), not a parameter
            unkeyed_params=("champion_version",),
            hooks="cifar_pipeline.orchestrator.hooks.promote:PromoteHooks",
        ),
    )
)
