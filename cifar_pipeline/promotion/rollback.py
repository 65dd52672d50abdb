"""Roll the champion back: `python -m cifar_pipeline.promotion.rollback`.

Points `<model>@champion` at the version `<model>@previous` names (the champion the last
promotion replaced), tags the version it leaves `promotion.rolled_back`, and removes
`@previous`. Uses MLFLOW_TRACKING_URI like every MLflow client.
"""

from __future__ import annotations

import argparse
import logging
import sys

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline.cli import configure_logging
from cifar_pipeline.promotion.registry import rollback

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="cifar-classifier", help="the registered model")
    parser.add_argument("--alias", default="champion", help="the alias to move back")
    parser.add_argument("--previous-alias", default="previous", help="the alias of the champion before it")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        left, restored = rollback(MlflowClient(), args.model, args.alias, args.previous_alias)
    except (ValueError, MlflowException) as exc:
        log.error("rollback refused: %s", exc)
        return 2
    log.info(
        "%s@%s: version %s -> version %s (rolled back, in %s)",
        args.model, args.alias, left or "(none)", restored, mlflow.get_tracking_uri(),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
