"""What a pipeline run says about itself when it ends, whatever ended it.

The summary table (one line per step: run ID, status, ran / reused / given, seconds, and
why), its JSON twin, the verdict lines of data validation and promotion, the steps left
out on purpose, and the headline results of every step that finished (headline.py), all
logged on the pipeline run.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.headline import record_headline
from cifar_pipeline.orchestrator.step_container import StepResult

log = logging.getLogger(__name__)

TAG_LIMIT = 5000  # MLflow's tag values are bounded; the full text is in summary.txt
HEADLINE_STATUSES = ("FINISHED", "REUSED")


@dataclass
class Summary:
    status: str
    error: str
    results: list[StepResult]
    validation: list[str] = field(default_factory=list)  # the verdict, then one line per anomaly
    promotion: str = ""
    left_out: list[str] = field(default_factory=list)
    until: str = ""

    def table(self) -> str:
        lines = [f"{'step':<11}{'run id':<34}{'status':<10}{'action':<8}{'seconds':>8}"]
        for r in self.results:
            lines.append(f"{r.step:<11}{r.run_id:<34}{r.status:<10}{r.action:<8}{r.seconds:>8.1f}")
            lines += [f"{'':<11}why: {reason}" for reason in r.reasons]
        if self.left_out:
            lines.append(f"left out on purpose (until={self.until}): {', '.join(self.left_out)}")
        lines += [f"data validation: {line}" for line in self.validation]
        if self.promotion:
            lines.append(f"promotion: {self.promotion}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "error": self.error,
            "steps": [asdict(r) for r in self.results],
            "left_out": self.left_out,
            "promotion": self.promotion,
            "validation": self.validation,
        }


def write_summary(summary: Summary, run_id: str, client: MlflowClient) -> None:
    """Log the summary on the active pipeline run `run_id` (before it is ended)."""
    if summary.validation:  # e.g. "warned against the data of champion version 3: 1 anomaly"
        mlflow.set_tag("pipeline.validation", summary.validation[0][:TAG_LIMIT])
    if summary.promotion:
        mlflow.set_tag("pipeline.promotion", summary.promotion[:TAG_LIMIT])
    if summary.left_out:
        mlflow.set_tag("pipeline.left_out", ",".join(summary.left_out))
    table = summary.table()
    log.info("pipeline %s (run %s)\n%s", summary.status, run_id, table)
    mlflow.log_text(table + "\n", "summary.txt")
    mlflow.log_dict(summary.as_dict(), "summary.json")
    for result in summary.results:
        mlflow.log_metric(f"seconds_{result.step}", result.seconds)
        if result.status in HEADLINE_STATUSES:
            try:
                record_headline(client, run_id, result.step, result.run_id)
            except MlflowException as exc:  # the summary must still be written, and the run ended
                log.warning("pipeline run %s lacks %s's headline results: %s", run_id, result.step, exc)
