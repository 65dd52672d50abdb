"""How pipeline runs present themselves in MLflow: names, headline results, part of a pipeline."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cifar_pipeline.orchestrator.planning.plan import PipelineError, stop_after
from cifar_pipeline.orchestrator.reporting.headline import HEADLINES, headline_values
from cifar_pipeline.orchestrator.reporting.naming import pipeline_run_name
from cifar_pipeline.orchestrator.reporting.report import PipelineReport, StepResult
from cifar_pipeline.orchestrator.reporting.summary import write_summary
from cifar_pipeline.tracking import STEPS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("overrides", "point", "name"),
    [
        (["data=digits", "train.epochs=3"], "", "digits vgg11_bn 3 epochs"),
        (["data=digits", "train.epochs=1"], "", "digits vgg11_bn 1 epoch"),
        (["train.epochs=2.5", "model.arch=vgg16", "model.batch_norm=false"], "", "cifar10 vgg16 2.5 epochs"),
        (["data=digits", "train.epochs=3", "stop_after=train"], "", "digits vgg11_bn 3 epochs · until train"),
        (["data=digits"], "optim.lr=0.05", "digits vgg11_bn 10 epochs · optim.lr=0.05"),
        (["resume.model_run_id=2ed1a78bdcd14b47bd8983592609a799"], "", "from model 2ed1a78b"),
        (["resume.data_run_id=a08e0d6bb7dd4677b027439bb9670cd3"], "",
         "from data a08e0d6b · vgg11_bn 10 epochs"),
        (["data=digits", "resume.pipeline_run_id=8d681abba1a74d2c9b7dc8be3d60cdb3"], "",
         "digits vgg11_bn 10 epochs · resumed 8d681abb"),
    ],
)  # fmt: skip
def test_a_pipeline_run_is_named_from_what_distinguishes_it(
    overrides: list[str], point: str, name: str
) -> None:
    assert pipeline_run_name(config(*overrides), point) == name


@pytest.mark.parametrize(
    ("until", "steps", "left_out"),
    [
        ("", list(STEPS), []),
        ("fetch", ["fetch"], ["train", "build", "systemtest", "promote"]),
        ("train", ["fetch", "train"], ["build", "systemtest", "promote"]),
        ("promote", list(STEPS), []),
    ],
)
def test_stop_after_cuts_the_plan_after_that_step(until: str, steps: list[str], left_out: list[str]) -> None:
    assert stop_after(list(STEPS), until) == (steps, left_out)


def test_stop_after_combines_with_a_resume_point() -> None:
    planned = ["build", "systemtest", "promote"]
    assert stop_after(planned, "systemtest") == (["build", "systemtest"], ["promote"])


@pytest.mark.parametrize(
    ("planned", "until", "message"),
    [
        (list(STEPS), "trian", "until='trian': expected one of fetch, train, build, systemtest, promote"),
        (["build", "systemtest", "promote"], "train",
         "until='train': this pipeline runs build, systemtest, promote"),
    ],
)  # fmt: skip
def test_stop_after_refuses_a_step_it_cannot_stop_at(planned: list[str], until: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        stop_after(planned, until)


def step_run(step: str, metrics: dict[str, float], params: dict[str, str], tags: dict[str, str]) -> str:
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics)
        mlflow.log_params(params)
        mlflow.set_tags({"pipeline.step": step, **tags})
    return run.info.run_id


def test_every_headline_value_is_the_step_runs_own(mlflow_store: str) -> None:
    """Each mapped metric, numeric param and tag arrives under its headline name, unchanged."""
    client = mlflow.MlflowClient()
    for step, spec in HEADLINES.items():
        metrics = {key: 0.5 + i for i, key in enumerate(spec.metrics)}
        params = {key: str(100 + i) for i, key in enumerate(spec.numeric_params)}
        tags = {key: f"value of {key}" for key in spec.tags}
        run = client.get_run(step_run(step, metrics | {"unrelated": 1.0}, params, tags))
        got_metrics, got_tags = headline_values(step, run)
        expected = {spec.metrics[k]: v for k, v in metrics.items()}
        expected |= {spec.numeric_params[k]: float(v) for k, v in params.items()}
        assert got_metrics == expected, step
        assert got_tags == {spec.tags[k]: v for k, v in tags.items()}, step


def test_a_value_the_step_run_lacks_is_left_out_not_invented(mlflow_store: str) -> None:
    client = mlflow.MlflowClient()
    run = client.get_run(step_run("train", {"final_test_accuracy": 0.75}, {}, {}))
    assert headline_values("train", run) == ({"train.test_accuracy": 0.75}, {})
    fetch = client.get_run(step_run("fetch", {}, {"num_train": "not a number"}, {}))
    assert headline_values("fetch", fetch) == ({}, {})


def test_the_summary_carries_finished_and_reused_steps_headlines_not_failed_ones(mlflow_store: str) -> None:
    client = mlflow.MlflowClient()
    fetch = step_run("fetch", {}, {"num_train": "1437", "num_test": "360"}, {"data.digest": "d4f5"})
    train = step_run("train", {"final_test_accuracy": 0.9583}, {}, {})
    failed = step_run("build", {"image_size_mb": 345.8}, {}, {"image.tag": "broken"})
    results = [
        StepResult("fetch", fetch, "REUSED", 0.0, "given"),
        StepResult("train", train, "FINISHED", 12.0, "reused", ["same key as run x"]),
        StepResult("build", failed, "FAILED", 3.0),
    ]
    summary = PipelineReport("FAILED", "step build FAILED", results, left_out=["promote"], until="systemtest")
    with mlflow.start_run() as pipeline:
        write_summary(summary, pipeline.info.run_id, client)
    data = client.get_run(pipeline.info.run_id).data
    assert data.metrics == {
        "data.train_images": 1437.0,
        "data.test_images": 360.0,
        "train.test_accuracy": 0.9583,
        "seconds_fetch": 0.0,
        "seconds_train": 12.0,
        "seconds_build": 3.0,
    }
    assert data.tags["data.digest"] == "d4f5"
    assert "image.tag" not in data.tags
    assert data.tags["pipeline.left_out"] == "promote"
    assert "left out on purpose (until=systemtest): promote" in summary.table()
