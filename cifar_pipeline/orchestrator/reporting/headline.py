"""The headline results of a pipeline's steps, carried by the pipeline run as metrics and tags.

Selecting pipeline runs in MLflow's compare view then lines up what matters (accuracy,
served agreement, latency, image, promotion) without opening each child run. A reused
step contributes the results of the run it reused: they are the pipeline's results too.

Every headline value is a copy of one step run's own metric, parameter or tag, under a
name that says what it is on the pipeline run (the step's own names are kept in the
step runs). Each step declares its own (step_declarations.py).
"""

from __future__ import annotations

import logging
import math
import time

from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient

from cifar_pipeline.step_declarations import PIPELINE_STEPS, Headline

log = logging.getLogger(__name__)


HEADLINES: dict[str, Headline] = {d.name: d.headline for d in PIPELINE_STEPS}


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


def record_headline(
    client: MlflowClient, pipeline_run_id: str, step: str, step_run_id: str
) -> tuple[dict[str, float], dict[str, str]]:
    """Copy `step`'s headline values from `step_run_id` onto the pipeline run, in one batch;
    return them."""
    metrics, tags = headline_values(step, client.get_run(step_run_id))
    now = int(time.time() * 1000)
    client.log_batch(
        pipeline_run_id,
        metrics=[Metric(name, value, now, 0) for name, value in metrics.items()],
        tags=[RunTag(name, value) for name, value in tags.items()],
    )
    log.debug("pipeline run %s carries %s's %s", pipeline_run_id, step, sorted(metrics) + sorted(tags))
    return metrics, tags
