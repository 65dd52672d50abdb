"""The orchestrator's loop, without Docker: the real planner, cache, hooks and report, with
a step runner that makes each step's MLflow run itself (what a container would log)."""

from __future__ import annotations

import hashlib
import json
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_pipeline.cancellation import Cancelled
from cifar_pipeline.orchestrator.hooks import Resolved
from cifar_pipeline.orchestrator.pipeline import Pipeline
from cifar_pipeline.orchestrator.reporting.report import PipelineReport, StepResult
from cifar_pipeline.orchestrator.running.step_images import Environment
from cifar_pipeline.step_declarations import PIPELINE_STEPS, StepDeclaration, StepGraph
from cifar_pipeline.tracking import CODE_TRACE_ARTIFACT, STEP_TAG, lineage, upstream_tag

ROOT = Path(__file__).resolve().parents[2]


def config(*overrides: str) -> DictConfig:
    """The real configuration, for digits on the CPU, promotion off unless asked for."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(
            "config",
            ["data=digits", "train.device=cpu", "promote.registered_model=", *overrides],
        )


class FakeRunner:
    """Runs a step by making the run its container would make: a child of the pipeline run,
    tagged with its step and lineage, with its required artifacts and digest, FINISHED,
    unless `outcome` says otherwise ("FAILED", or "cancel" to be cancelled)."""

    def __init__(self, graph: StepGraph = PIPELINE_STEPS, **outcome: str) -> None:
        self.graph = graph
        self.outcome = outcome
        self.tags: dict[str, dict[str, str]] = {}  # further tags a step's run gets
        self.ran: list[tuple[str, dict[str, Any]]] = []
        self.started = False
        self.killed: StepResult | None = None

    def start(self, experiment_id: str) -> None:
        self.started = True

    def environment(self, step: StepDeclaration) -> Environment:
        return Environment(step.name, f"sha256:{step.name}-env", {"numpy": "2.4.6"})

    def image_present(self, image_id: str) -> bool:
        return True

    def run(self, step: StepDeclaration, params: dict[str, Any], resolved: Resolved) -> StepResult:
        self.ran.append((step.name, params))
        client = MlflowClient()
        parent = mlflow.active_run()
        assert parent is not None
        tags = {"mlflow.parentRunId": parent.info.run_id, STEP_TAG: step.name}
        if step.consumes:
            consumed = params[step.consumes]
            tags |= {upstream_tag(step.consumes): consumed}
            tags |= {upstream_tag(k): v for k, v in lineage(client.get_run(consumed)).items()}
        if step.produces and step.produces.digest_tag:
            # content follows from the parameters and the input's content
            unkeyed = {*self.graph.producer_of, *step.unkeyed_params}
            content = {k: v for k, v in params.items() if k not in unkeyed}
            if step.consumes:
                consumed_output = self.graph.output(step.consumes)
                content["input"] = client.get_run(params[step.consumes]).data.tags.get(
                    consumed_output.digest_tag
                )
            tags[step.produces.digest_tag] = hashlib.sha256(
                json.dumps(content, sort_keys=True).encode()
            ).hexdigest()
        run = client.create_run(parent.info.experiment_id, tags=tags | self.tags.get(step.name, {}))
        run_id = run.info.run_id
        for path in step.required_artifacts:
            client.log_text(run_id, "x", path)
        client.log_text(run_id, json.dumps({}), CODE_TRACE_ARTIFACT)
        outcome = self.outcome.get(step.name, "FINISHED")
        if outcome == "cancel":
            client.set_terminated(run_id, "KILLED")
            self.killed = StepResult(step.name, run_id, "KILLED", 0.1, reasons=["cancelled by SIGINT"])
            raise Cancelled(signal.SIGINT)
        client.set_terminated(run_id, outcome)
        return StepResult(step.name, run_id, outcome, 0.1)

    def hurry(self, signum: int) -> None:
        pass

    def close(self) -> None:
        pass

    def names(self) -> list[str]:
        return [name for name, _ in self.ran]


def run_pipeline(
    cfg: DictConfig, runner: FakeRunner, graph: StepGraph = PIPELINE_STEPS
) -> tuple[PipelineReport, str]:
    """The loop in a pipeline run of its own, as `mlflow run .` gives it one; ended as the report says."""
    with mlflow.start_run(tags={STEP_TAG: "pipeline"}) as parent:
        report = Pipeline(cfg, runner, MlflowClient(), graph).run()
        mlflow.end_run(report.status)
    return report, parent.info.run_id


def actions(report: PipelineReport) -> list[tuple[str, str, str]]:
    return [(r.step, r.status, r.action) for r in report.results]


def test_every_step_runs_in_order_and_passes_its_output_on(mlflow_store: str) -> None:
    runner = FakeRunner()
    report, pipeline = run_pipeline(config(), runner)
    assert (report.status, report.exit_code, report.error) == ("FINISHED", 0, "")
    assert runner.started
    assert runner.names() == ["fetch", "train", "build", "systemtest"]  # promotion is off
    params = dict(runner.ran)
    fetch, train, build, _ = report.results
    assert params["train"]["data_run_id"] == fetch.run_id
    assert params["build"]["model_run_id"] == train.run_id
    assert params["systemtest"]["image_run_id"] == build.run_id
    assert "seed" not in params["fetch"]  # the split has its own seed: data.split_seed
    assert params["fetch"]["split_seed"] == 0
    tags = MlflowClient().get_run(pipeline).data.tags
    assert tags["pipeline.model_run_id"] == train.run_id
    assert report.verdicts["promotion"].lines == [
        "off: promote.registered_model is empty, nothing registered"
    ]


def test_an_unchanged_pipeline_reuses_every_step_and_says_why(mlflow_store: str) -> None:
    first, _ = run_pipeline(config(), FakeRunner())
    runner = FakeRunner()
    again, _ = run_pipeline(config(), runner)
    assert runner.ran == []
    assert actions(again) == [(s, "FINISHED", "reused") for s in ("fetch", "train", "build", "systemtest")]
    assert [r.run_id for r in again.results] == [r.run_id for r in first.results]
    assert again.results[1].reasons == [f"same key as run {first.results[1].run_id}"]


def test_a_training_change_reruns_train_and_what_follows_only(mlflow_store: str) -> None:
    run_pipeline(config(), FakeRunner())
    runner = FakeRunner()
    report, _ = run_pipeline(config("train.epochs=11"), runner)
    assert runner.names() == ["train", "build", "systemtest"]
    assert "params: epochs 10→11" in report.results[1].reasons[0]


def test_a_new_training_seed_keeps_the_data(mlflow_store: str) -> None:
    run_pipeline(config(), FakeRunner())
    runner = FakeRunner()
    run_pipeline(config("seed=7"), runner)
    assert runner.names()[0] == "train"  # fetch reused: same split, same data digest
    runner = FakeRunner()
    run_pipeline(config("data.split_seed=7"), runner)
    assert runner.names()[0] == "fetch"


def test_a_failed_step_stops_the_pipeline_naming_it(mlflow_store: str) -> None:
    runner = FakeRunner(train="FAILED")
    report, _ = run_pipeline(config(), runner)
    assert runner.names() == ["fetch", "train"]
    assert (report.status, report.exit_code) == ("FAILED", 1)
    fetch, train = report.results
    assert report.error == (
        f"step train FAILED (run {train.run_id}, data_run_id={fetch.run_id}); "
        "its log is in the run's logs/ artifact"
    )


def test_a_cancelled_step_ends_the_pipeline_killed_with_the_signals_exit_code(mlflow_store: str) -> None:
    runner = FakeRunner(build="cancel")
    report, pipeline = run_pipeline(config(), runner)
    assert (report.status, report.exit_code, report.error) == ("KILLED", 130, "cancelled by SIGINT")
    assert actions(report)[-1] == ("build", "KILLED", "ran")
    assert MlflowClient().get_run(pipeline).info.status == "KILLED"


def test_until_stops_after_that_step_and_reports_the_rest_left_out(mlflow_store: str) -> None:
    runner = FakeRunner()
    report, _ = run_pipeline(config("stop_after=train"), runner)
    assert runner.names() == ["fetch", "train"]
    assert report.status == "FINISHED"
    assert report.left_out == ["build", "systemtest", "promote"]


def test_a_bad_setting_is_refused_before_the_runner_starts(mlflow_store: str) -> None:
    runner = FakeRunner()
    report, _ = run_pipeline(config("cache.rerun=trian"), runner)
    assert report.status == "FAILED"
    assert "cache.rerun='trian': unknown step trian" in report.error
    assert not runner.started
    assert runner.ran == []


def test_the_quality_gate_stops_before_build_unless_the_pipeline_ends_at_train(mlflow_store: str) -> None:
    runner = FakeRunner()
    runner.tags["train"] = {"quality_gate": "failed"}
    report, _ = run_pipeline(config("train.min_accuracy=0.9"), runner)
    assert runner.names() == ["fetch", "train"]
    assert "the model is not blessed, stopping before build" in report.error
    runner = FakeRunner()
    runner.tags["train"] = {"quality_gate": "failed"}
    report, _ = run_pipeline(config("train.min_accuracy=0.9", "stop_after=train", "train.epochs=3"), runner)
    assert report.status == "FINISHED"


def test_refused_data_stops_before_training_with_the_verdict(mlflow_store: str) -> None:
    runner = FakeRunner()
    runner.tags["fetch"] = {
        "validation.status": "failed",
        "validation.summary": "error: leakage: 3 test images",
    }
    report, _ = run_pipeline(config(), runner)
    assert runner.names() == ["fetch"]
    assert "data validation failed" in report.error
    assert "error: leakage: 3 test images" in report.error
    assert report.verdicts["validation"].lines[1] == "error: leakage: 3 test images"


def test_resuming_a_failed_pipeline_reuses_its_finished_steps_and_continues_training(
    mlflow_store: str,
) -> None:
    failed, failed_run = run_pipeline(config(), FakeRunner(train="FAILED"))
    killed_train = failed.results[1].run_id
    MlflowClient().log_text(killed_train, "checkpoint", "checkpoints/last.pt")
    runner = FakeRunner()
    report, _ = run_pipeline(config(f"resume.pipeline_run_id={failed_run}"), runner)
    assert report.status == "FINISHED"
    assert actions(report)[0] == ("fetch", "FINISHED", "reused")
    assert report.results[0].reasons == [f"finished in pipeline {failed_run}"]
    assert runner.names() == ["train", "build", "systemtest"]
    assert dict(runner.ran)["train"]["resume_run_id"] == killed_train
    assert "not cacheable: continues the interrupted train run" in report.results[1].reasons[0]


def test_a_step_declared_once_runs_through_planner_cache_and_loop(mlflow_store: str, tmp_path: Path) -> None:
    """Adding a step is one declaration: no table elsewhere names it."""
    project = tmp_path / "explain"
    project.mkdir()
    (project / "MLproject").write_text("name: explain\n")
    explain = StepDeclaration(
        name="explain",
        consumes="model_run_id",
        required_artifacts=("explain/saliency.npz",),
        config_keys=("seed",),
        project_dir=project,
    )
    graph = StepGraph((*PIPELINE_STEPS.declarations, explain))
    runner = FakeRunner(graph)
    report, _ = run_pipeline(config(), runner, graph)
    assert runner.names() == ["fetch", "train", "build", "systemtest", "explain"]
    train = report.results[1].run_id
    assert dict(runner.ran)["explain"] == {"model_run_id": train, "seed": 0}
    # cached like any step: an unchanged run reuses it, a new model re-runs it
    runner = FakeRunner(graph)
    report, _ = run_pipeline(config(), runner, graph)
    assert runner.ran == []
    runner = FakeRunner(graph)
    report, _ = run_pipeline(config("train.epochs=2"), runner, graph)
    assert runner.names() == ["train", "build", "systemtest", "explain"]
    assert "upstream model changed" in report.results[-1].reasons[0]
    # and resumable from its input, and a stop point
    runner = FakeRunner(graph)
    report, _ = run_pipeline(config(f"resume.model_run_id={train}", "stop_after=build"), runner, graph)
    assert runner.ran == []  # build: the same key as the first pipeline's
    assert actions(report) == [("train", "REUSED", "given"), ("build", "FINISHED", "reused")]
    assert report.left_out == ["systemtest", "promote", "explain"]


def test_a_declaration_that_consumes_what_no_step_produces_is_refused() -> None:
    orphan = replace(PIPELINE_STEPS["promote"], name="audit", consumes="report_run_id")
    with pytest.raises(ValueError, match="step audit consumes report_run_id: no step produces it"):
        StepGraph((*PIPELINE_STEPS.declarations, orphan))
