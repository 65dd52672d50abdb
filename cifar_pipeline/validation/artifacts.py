"""Where a fetch run keeps its validation: artifact names and tags. No numpy, no plotting:
the orchestrator reads these too."""

from cifar_pipeline import names

FOLDER = "validation"
STATISTICS = "statistics.json"
SCHEMA = "schema.json"
REPORT = "report.json"
FIGURE = "report.png"

STATUS_TAG = names.VALIDATION_STATUS_TAG  # passed, warned or failed
ANOMALIES_TAG = names.VALIDATION_ANOMALIES_TAG
ERRORS_TAG = names.VALIDATION_ERRORS_TAG
REFERENCE_TAG = names.VALIDATION_REFERENCE_TAG  # the reference fetch run, or "none"
SUMMARY_TAG = names.VALIDATION_SUMMARY_TAG  # one line per anomaly, for the pipeline's summary
