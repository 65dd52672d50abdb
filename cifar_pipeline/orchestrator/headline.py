"""The headline results of a pipeline's steps, carried by the pipeline run as metrics and tags.

Selecting pipeline runs in MLflow's compare view then lines up what matters (accuracy,
served agreement, latency, image, promotion) without opening each child run. A reused
step contributes the results of the run it reused: they are the pipeline's results too.

Every headline value is a copy of one step run's own metric, parameter or tag, under a
name that says what it is on the pipeline run (the step's own names are kept in the
step runs).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient

from cifar_pipeline.tracking import BUILD, FETCH, PROMOTE, SYSTEMTEST, TRAIN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Headline:
    """Which of a step run's values the pipeline run carries, and under which names."""

    metrics: dict[str, str] = field(default_factory=dict)  # step metric -> pipeline metric
    numeric_params: dict[str, str] = field(default_factory=dict)  # step param -> pipeline metric
    tags: dict[str, str] = field(default_factory=dict)  # step tag -> pipeline tag


HEADLINES: dict[str, Headline] = {
    FETCH: Headline(
        numeric_params={"num_train": "data.train_images", "num_test": "data.test_images"},
        tags={"data.digest": "data.digest", "validation.status": "data.validation"},
    ),
    TRAIN: Headline(
        metrics={
            "final_test_accuracy": "train.test_accuracy",
            "final_test_accuracy_flip_tta": "train.test_accuracy_flip_tta",
        },
        tags={"model.digest": "model.digest", "quality_gate": "model.quality_gate"},
    ),
    BUILD: Headline(
        metrics={"image_size_mb": "image.size_mb"},
        tags={"image.tag": "image.tag"},
    ),
    SYSTEMTEST: Headline(
        metrics={
            "test_accuracy": "served.test_accuracy",
            "top1_agreement": "served.top1_agreement",
            "max_logit_diff": "served.max_logit_diff",
            "c1_latency_p50_ms": "served.latency_p50_ms",
            "c1_latency_p99_ms": "served.latency_p99_ms",
            "c8_requests_per_second": "served.requests_per_second_c8",
        },
        tags={"systemtest.passed": "served.passed"},
    ),
    PROMOTE: Headline(
        metrics={"promoted": "promoted", "accuracy_difference": "promotion.accuracy_difference"},
        tags={"promotion.outcome": "promotion.outcome", "registered_version": "promotion.version"},
    ),
}


def headline_values(step: str, run: Run) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) the pipeline run carries for `step`, taken from its `run`.

    A value the run does not have (an older run, a failed step) is left out, not invented.
    """
    spec = HEADLINES.get(step, Headline())
    data = run.data
    metrics = {name: data.metrics[key] for key, name in spec.metrics.items() if key in data.metrics}
    for key, name in spec.numeric_params.items():
        try:
            value = float(data.params[key])
        except (KeyError, ValueError):
            continue
        if math.isfinite(value):
            metrics[name] = value
    tags = {name: data.tags[key] for key, name in spec.tags.items() if key in data.tags}
    return metrics, tags


def record_headline(client: MlflowClient, pipeline_run_id: str, step: str, step_run_id: str) -> None:
    """Copy `step`'s headline values from `step_run_id` onto the pipeline run, in one batch."""
    metrics, tags = headline_values(step, client.get_run(step_run_id))
    now = int(time.time() * 1000)
    client.log_batch(
        pipeline_run_id,
        metrics=[Metric(name, value, now, 0) for name, value in metrics.items()],
        tags=[RunTag(name, value) for name, value in tags.items()],
    )
    log.debug("pipeline run %s carries %s's %s", pipeline_run_id, step, sorted(metrics) + sorted(tags))
