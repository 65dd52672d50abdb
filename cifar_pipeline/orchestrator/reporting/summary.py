"""What a pipeline run says about itself when it ends, whatever ended it.

From its report (report.py): the summary table (one line per step: run ID, status, ran /
reused / given, seconds, and why), its JSON twin, the verdicts of the judging steps (data
validation, promotion) as tags, the steps left out on purpose, and the headline results
of every step that finished (headline.py), and all of it as Markdown for a person in the
UI (markdown.py), logged on the pipeline run.
"""

from __future__ import annotations

import logging

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline import names
from cifar_pipeline.orchestrator.reporting.headline import record_headline
from cifar_pipeline.orchestrator.reporting.markdown import Headlines, render
from cifar_pipeline.orchestrator.reporting.report import PipelineReport

log = logging.getLogger(__name__)

TAG_LIMIT = 5000  # MLflow's tag values are bounded; the full text is in summary.txt
HEADLINE_STATUSES = (names.FINISHED, "REUSED")


def write_summary(summary: PipelineReport, run_id: str, client: MlflowClient) -> None:
    """Log the report on the active pipeline run `run_id` (before it is ended)."""
    for verdict in summary.verdicts.values():
        # e.g. pipeline.validation "warned against the data of champion version 3: 1 anomaly"
        if verdict.lines:
            mlflow.set_tag(verdict.tag, verdict.lines[0][:TAG_LIMIT])
    if summary.left_out:
        mlflow.set_tag(names.LEFT_OUT_TAG, ",".join(summary.left_out))
    table = summary.table()
    log.info("pipeline %s (run %s)\n%s", summary.status, run_id, table)
    mlflow.log_text(table + "\n", names.SUMMARY_TEXT_ARTIFACT)
    mlflow.log_dict(summary.as_dict(), names.SUMMARY_JSON_ARTIFACT)
    headlines: Headlines = {}
    for result in summary.results:
        mlflow.log_metric(f"seconds_{result.step}", result.seconds)
        if result.status in HEADLINE_STATUSES:
            try:
                headlines[result.step] = record_headline(client, run_id, result.step, result.run_id)
            except MlflowException as exc:  # the summary must still be written, and the run ended
                log.warning("pipeline run %s lacks %s's headline results: %s", run_id, result.step, exc)
    experiment_id = client.get_run(run_id).info.experiment_id
    mlflow.log_text(render(summary, experiment_id, headlines), names.REPORT_ARTIFACT)
