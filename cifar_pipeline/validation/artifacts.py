"""Where a fetch run keeps its validation: artifact names and tags. No numpy, no plotting:
the orchestrator reads these too."""

FOLDER = "validation"
STATISTICS = "statistics.json"
SCHEMA = "schema.json"
REPORT = "report.json"
FIGURE = "report.png"

STATUS_TAG = "validation.status"  # passed, warned or failed
ANOMALIES_TAG = "validation.anomalies"
ERRORS_TAG = "validation.errors"
REFERENCE_TAG = "validation.reference"  # the reference fetch run, or "none"
SUMMARY_TAG = "validation.summary"  # one line per anomaly, for the pipeline's summary
