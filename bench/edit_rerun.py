"""What a one-file edit costs: the pipeline re-run after editing a module, against re-running
every step (what any code edit cost while every step's key held one shared step image).

    make setup && PIPELINE_BASE_IMAGE=$(cat .build/base-image) \\
      PIPELINE_PIP_FIND_LINKS=$(cat .build/wheelhouse-url) python -m bench.edit_rerun
    python -m bench.edit_rerun --file cifar_pipeline/serving/app.py --epochs 4

In a copy of the project (its own store; the step images come from Docker's cache), it
runs the digits pipeline once to fill the store, then times, in the same session:
  baseline  `mlflow run . -P cache=false`: every step runs
  edit      `mlflow run .` after appending a comment to --file: only the steps that load it
and prints both wall times, which steps ran, and the ratio edit / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLFLOW = Path(sys.executable).parent / "mlflow"
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".wheelhouse", ".build", "mlruns", "mlartifacts", "mlflow.db", "outputs", "__pycache__"
)


def pipeline(project: Path, *params: str) -> tuple[float, list[str]]:
    """Run the pipeline; its wall time and the steps it ran (not reused)."""
    args = [str(MLFLOW), "run", ".", "--env-manager", "local"]
    for param in params:
        args += ["-P", param]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    started = time.monotonic()
    result = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"pipeline failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    summaries = sorted(project.glob("mlruns/*/*/artifacts/summary.json"), key=lambda p: p.stat().st_mtime)
    steps = json.loads(summaries[-1].read_text())["steps"]
    return seconds, [step["step"] for step in steps if step["action"] == "ran"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--file", default="cifar_pipeline/probes.py", help="the file to edit, from the root")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    params = ("source=digits", f"epochs={args.epochs}")
    with tempfile.TemporaryDirectory(prefix="edit-rerun-") as work:
        project = Path(work) / "project"
        shutil.copytree(ROOT, project, ignore=COPY_IGNORE)
        pipeline(project, *params)  # fills the store: the runs an edit could reuse
        baseline, baseline_ran = pipeline(project, *params, "cache=false")
        edited = project / args.file
        edited.write_text(edited.read_text() + "\n# an edit that changes nothing the code does\n")
        after_edit, edit_ran = pipeline(project, *params)
    rows = [
        ("baseline: every step runs", baseline, baseline_ran),
        (f"edit {args.file}", after_edit, edit_ran),
    ]
    report(rows, "edit")


def report(rows: list[tuple[str, float, list[str]]], measured: str) -> None:
    """Each timed pipeline (label, seconds, steps that ran), then the last against the first."""
    for label, seconds, ran in rows:
        sys.stdout.write(f"{label:<45} {seconds:7.1f} s   ran: {', '.join(ran) or '(none)'}\n")
    sys.stdout.write(f"ratio {measured} / baseline: {rows[-1][1] / rows[0][1]:.2f}\n")


if __name__ == "__main__":
    main()
