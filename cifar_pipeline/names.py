"""The names other runs read: tags, artifact paths and run statuses, in one place.

A step writes a tag or an artifact that another step, the orchestrator, the cache or a
person filtering runs in the UI reads; both sides take its name from here, the way MLflow
keeps its own in `mlflow/utils/mlflow_tags.py`. tests/unit/test_names.py fails on any of
these values written as a literal elsewhere in the project.

Standard library only: every step image imports it.
"""

from __future__ import annotations

# Run statuses (MLflow's names, as run.info.status gives them).
FINISHED = "FINISHED"
FAILED = "FAILED"
KILLED = "KILLED"
RUNNING = "RUNNING"

# Every run of the pipeline.
STEP_TAG = "pipeline.step"  # the step a run is a run of ("pipeline", "sweep" for the parents)
PIPELINE_TAG = "pipeline.name"
PIPELINE_NAME = "cifar-pipeline"
UPSTREAM_PREFIX = "pipeline.upstream."  # + the run ID parameter: a step run's lineage
CODE_TRACE_ARTIFACT = "step_code.json"  # the project files a step run loaded, with digests

# What a step run's output is: content digests a consumer's cache key names.
DATA_DIGEST_TAG = "data.digest"
MODEL_DIGEST_TAG = "model.digest"
IMAGE_ID_TAG = "image.id"
IMAGE_REF_TAG = "image.tag"  # the inference image's repository:tag

# fetch
DATA_INPUT_KEY_TAG = "data.input_key"
DATA_REUSED_FROM_TAG = "data.reused_from"
VALIDATION_STATUS_TAG = "validation.status"  # passed, warned or failed
VALIDATION_ANOMALIES_TAG = "validation.anomalies"
VALIDATION_ERRORS_TAG = "validation.errors"
VALIDATION_REFERENCE_TAG = "validation.reference"  # the reference fetch run, or "none"
VALIDATION_SUMMARY_TAG = "validation.summary"  # one line per anomaly, for the pipeline's summary

# train
QUALITY_GATE_TAG = "quality_gate"  # passed / failed
BLESSED_TAG = "model.blessed"
RESUMED_FROM_TAG = "train.resumed_from"
CHECKPOINT_ARTIFACT = "checkpoints/last.pt"  # replaced every epoch

# systemtest
SYSTEMTEST_PASSED_TAG = "systemtest.passed"

# promote, and the registry's model versions
REGISTERED_MODEL_TAG = "registered_model"
REGISTERED_VERSION_TAG = "registered_version"
OUTCOME_TAG = "promotion.outcome"
REASON_TAG = "promotion.reason"
DECIDED_BY_TAG = "promotion.run_id"  # the promote run that decided
COMPARED_WITH_TAG = "promotion.compared_with"  # the champion version it was compared with
ROLLED_BACK_TAG = "promotion.rolled_back"  # when a rollback took the alias away from it
CHAMPION_AFTER_TAG = "promotion.champion_after"

# The orchestrator's, on step runs.
STEP_KEY_TAG = "pipeline.step_key"
STEP_KEY_AFTER_TAG = "pipeline.step_key_after"
STEP_KEY_ARTIFACT = "step_key.json"
STEP_IMAGE_TAG = "pipeline.step_image"  # the exact image a step run ran
LAUNCHER_TAG = "pipeline.step_launcher"
KILLED_REASON_TAG = "pipeline.killed"
# The Ray project backend's, on a run it submitted as a Ray job.
RAY_SUBMISSION_TAG = "ray.submission_id"
RAY_NODE_TAG = "ray.node_id"  # the node the job's entrypoint ran on (Ray's driver_node_id)
# On the record run the pipeline makes for a reused step (it is not a step run itself).
REUSED_FROM_TAG = "pipeline.reused_from"
REUSED_STEP_TAG = "pipeline.reused_step"

# The orchestrator's, on pipeline runs.
OWNER_TAG = "pipeline.orchestrator"  # host/pid/start time of the orchestrator process
ERROR_TAG = "pipeline.error"
LEFT_OUT_TAG = "pipeline.left_out"
VALIDATION_VERDICT_TAG = "pipeline.validation"
PROMOTION_VERDICT_TAG = "pipeline.promotion"
SWEEP_POINT_TAG = "pipeline.sweep_point"
CONFIG_ARTIFACT = "config.yaml"
SUMMARY_TEXT_ARTIFACT = "summary.txt"
SUMMARY_JSON_ARTIFACT = "summary.json"
REPORT_ARTIFACT = "report.md"


def output_tag(param: str) -> str:
    """The pipeline run's tag recording a step's output, e.g. `pipeline.model_run_id`."""
    return f"pipeline.{param}"


def upstream_tag(param: str) -> str:
    """A step run's tag naming the upstream run it used, e.g. `pipeline.upstream.data_run_id`."""
    return UPSTREAM_PREFIX + param
