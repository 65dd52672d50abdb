"""What one training iteration costs: `-P until=train` against the whole pipeline, for a
change of a training setting (here the number of epochs).

    make setup && PIPELINE_BASE_IMAGE=$(cat .build/base-image) \\
      PIPELINE_PIP_FIND_LINKS=$(cat .build/wheelhouse-url) python -m bench.train_iteration
    python -m bench.train_iteration --epochs 6

In a copy of the project (its own store; the step images come from Docker's cache), it
runs the digits pipeline once to fill the store, then times, in the same session:
  baseline  `mlflow run . -P epochs=<E+1>`: train and every step after it run
  until     `mlflow run . -P epochs=<E+2> -P until=train`: train runs, then it stops
and prints both wall times, which steps ran, and the ratio until / baseline.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.edit_rerun import COPY_IGNORE, ROOT, pipeline, report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=4, help="the first run's; the timed runs add 1 and 2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="train-iteration-") as work:
        project = Path(work) / "project"
        shutil.copytree(ROOT, project, ignore=COPY_IGNORE)
        pipeline(project, "source=digits", f"epochs={args.epochs}")  # fills the store: fetch to reuse
        baseline, baseline_ran = pipeline(project, "source=digits", f"epochs={args.epochs + 1}")
        until, until_ran = pipeline(project, "source=digits", f"epochs={args.epochs + 2}", "until=train")
    rows = [
        (f"baseline: epochs={args.epochs + 1}, whole pipeline", baseline, baseline_ran),
        (f"until=train: epochs={args.epochs + 2}", until, until_ran),
    ]
    report(rows, "until")


if __name__ == "__main__":
    main()
