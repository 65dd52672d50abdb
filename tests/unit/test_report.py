"""The report a person reads in the UI: report.md on the pipeline run, made from the report."""

from __future__ import annotations

from pathlib import Path

import mlflow

from cifar_pipeline import names
from cifar_pipeline.orchestrator.reporting.report import PipelineReport, StepResult, Verdict
from cifar_pipeline.orchestrator.reporting.summary import write_summary
from cifar_pipeline.tracking import STEP_TAG


def step_run(step: str, metrics: dict[str, float], tags: dict[str, str]) -> str:
    with mlflow.start_run(nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({STEP_TAG: step, **tags})
        mlflow.log_metrics(metrics)
    return run.info.run_id


def test_the_pipeline_run_carries_a_readable_report(mlflow_store: str, tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    fetch = step_run("fetch", {}, {names.DATA_DIGEST_TAG: "d4f5"})
    train = step_run("train", {"final_test_accuracy": 0.95833}, {names.QUALITY_GATE_TAG: "passed"})
    build = step_run("build", {}, {})
    report = PipelineReport(
        "FAILED",
        f"step build FAILED (run {build}); its log is in the run's logs/ artifact",
        [
            StepResult("fetch", fetch, "FINISHED", 0.0, "reused", [f"same key as run {fetch}"]),
            StepResult("train", train, "FINISHED", 48.2, "ran", ["vs run abc: params: epochs 3→4 | lr"]),
            StepResult("build", build, "FAILED", 3.1, "ran", ["no earlier run of this step"]),
        ],
        {"validation": Verdict("data validation", ["passed against no reference: no anomalies"], "x")},
        left_out=["promote"],
        until="systemtest",
    )
    with mlflow.start_run() as pipeline:
        write_summary(report, pipeline.info.run_id, client)
    experiment = pipeline.info.experiment_id
    text = Path(
        client.download_artifacts(pipeline.info.run_id, names.REPORT_ARTIFACT, str(tmp_path))
    ).read_text()
    lines = text.splitlines()
    assert lines[0] == "# Pipeline FAILED"
    assert f"**Why it stopped:** step build FAILED (run {build})" in text
    # one row per step, linked to its run in the UI, with why it ran or was reused
    assert (
        f"| fetch | [`{fetch[:8]}`](#/experiments/{experiment}/runs/{fetch}) | FINISHED | reused | 0.0 "
        f"| same key as run {fetch} |"
    ) in lines
    assert (
        f"| train | [`{train[:8]}`](#/experiments/{experiment}/runs/{train}) | FINISHED | ran | 48.2 " in text
    )
    assert "params: epochs 3→4 \\| lr |" in text  # a | in a reason does not break the table
    assert "Left out on purpose (until=systemtest): promote." in lines
    assert lines[lines.index("## Data validation") + 2] == "- passed against no reference: no anomalies"
    # the headline results of the steps that finished, not of the failed one
    assert "| train.test_accuracy | 0.9583 | train |" in lines
    assert "| model.quality_gate | passed | train |" in lines
    assert "| data.digest | d4f5 | fetch |" in lines
    assert not any(line.endswith("| build |") for line in lines)
