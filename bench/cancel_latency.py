"""How long a cancelled pipeline takes to stop: Ctrl-C (or SIGTERM) during training.

    make setup && PIPELINE_BASE_IMAGE=$(cat .build/base-image) \\
      PIPELINE_PIP_FIND_LINKS=$(cat .build/wheelhouse-url) python -m bench.cancel_latency
    python -m bench.cancel_latency --signal TERM --project /path/to/another/checkout

In a copy of the project (its own store), it starts the digits pipeline in a process
group of its own, waits for the first training epoch, then signals it as a terminal does
(SIGINT to the whole group) or as `kill` does (SIGTERM to `mlflow run` only), and prints
the seconds until `mlflow run` exited and until the last container of the pipeline was
gone, and the status each run ended with. Pointed (--project) at an older checkout it
measures that version the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
from mlflow.tracking import MlflowClient

from bench.edit_rerun import COPY_IGNORE, MLFLOW, ROOT
from cifar_pipeline import names
from cifar_pipeline.orchestrator.experiment import project_experiment_id

TIMEOUT = 900.0


def start(project: Path, epochs: int) -> tuple[subprocess.Popen[str], list[str]]:
    args = [
        str(MLFLOW),
        "run",
        ".",
        "--env-manager",
        "local",
        "-P",
        "source=digits",
        "-P",
        f"epochs={epochs}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    process = subprocess.Popen(
        args,
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    stream = process.stdout
    threading.Thread(target=lambda: lines.extend(stream), daemon=True).start()
    return process, lines


def step_containers() -> list[str]:
    engine = docker.from_env()
    return [c.name for c in engine.containers.list(all=True) if c.name.startswith("cifar-pipeline-train-")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signal", choices=["INT", "TERM"], default="INT")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--project", type=Path, default=ROOT, help="the checkout to measure (copied)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cancel-latency-") as work:
        project = Path(work) / "project"
        shutil.copytree(args.project, project, ignore=COPY_IGNORE)
        process, lines = start(project, args.epochs)
        deadline = time.monotonic() + TIMEOUT
        while not any("epoch 1/" in line for line in lines):
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit("the pipeline did not reach its first epoch:\n" + "".join(lines[-30:]))
            time.sleep(0.2)
        signalled = time.monotonic()
        if args.signal == "INT":
            os.killpg(process.pid, signal.SIGINT)  # what a terminal sends its foreground job
        else:
            process.send_signal(signal.SIGTERM)  # `mlflow run` alone
        process.wait(timeout=TIMEOUT)
        exited = time.monotonic() - signalled
        while step_containers() and time.monotonic() - signalled < TIMEOUT:
            time.sleep(0.2)
        gone = time.monotonic() - signalled
        time.sleep(3)  # anything that outlived the signal has written by now
        client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
        experiment_id = project_experiment_id(client.tracking_uri)
        runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=3)
        report = [
            f"SIG{args.signal} after epoch 1 of {args.epochs}",
            f"  mlflow run exited after          {exited:6.1f} s (exit code {process.returncode})",
            f"  last step container gone after   {gone:6.1f} s",
        ]
        report += [
            f"  {r.data.tags.get(names.STEP_TAG, '?'):<10} run {r.info.run_id}  {r.info.status}" for r in runs
        ]
        sys.stdout.write("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
