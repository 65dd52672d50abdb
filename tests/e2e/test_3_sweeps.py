"""End to end, sweeps: a multirun's points share one fetch run, and run at once with sweep.parallel."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.sweep import POINT_TAG
from cifar_pipeline.tracking import STEP_TAG
from tests.e2e.helpers import in_project, leftover_containers, mlflow_run, summary_steps

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


def test_two_point_sweep_shares_one_fetch_run(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    # until train: the points differ in training only; the parallel sweep below builds and tests them
    params = ("source=digits", "epochs=1", "until=train", "overrides=-m optim.lr=0.02,0.05")
    result = mlflow_run(project, *params)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = local_store.search_runs(
        in_project(local_store), f"tags.`{STEP_TAG}` = 'sweep'", order_by=["start_time DESC"]
    )[0]
    assert sweep.info.status == "FINISHED"
    assert sweep.data.params["sweep.keys"] == "optim.lr"
    points = local_store.search_runs(
        in_project(local_store), f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'"
    )
    assert sorted(p.data.tags[POINT_TAG] for p in points) == ["optim.lr=0.02", "optim.lr=0.05"]
    assert sorted(p.data.params["optim.lr"] for p in points) == ["0.02", "0.05"]  # for the compare view
    assert all(p.info.status == "FINISHED" and p.data.tags[STEP_TAG] == "pipeline" for p in points)
    summaries = [summary_steps(local_store, point, tmp_path / point.info.run_id) for point in points]
    assert len({s["fetch"]["run_id"] for s in summaries}) == 1  # one fetch, shared through the cache
    assert len({s["train"]["run_id"] for s in summaries}) == 2
    assert all(s["train"]["action"] == "ran" for s in summaries)
    listing = Path(local_store.download_artifacts(sweep.info.run_id, "sweep.txt", str(tmp_path))).read_text()
    assert all(f"FINISHED  {p.info.run_id}  {p.data.tags[POINT_TAG]}" in listing for p in points)


def test_a_parallel_sweep_runs_its_points_at_once(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    """The points of the sweep above, each in a process of its own at the same time: each
    reuses its training, then builds and tests its model (a container per point at once)."""
    result = mlflow_run(
        project, "source=digits", "epochs=1", "until=systemtest",
        "overrides=-m optim.lr=0.02,0.05 sweep.parallel=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = local_store.search_runs(
        in_project(local_store), f"tags.`{STEP_TAG}` = 'sweep'", order_by=["start_time DESC"]
    )[0]
    assert sweep.info.status == "FINISHED"
    points = local_store.search_runs(
        in_project(local_store), f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'"
    )
    assert sorted(p.data.tags[POINT_TAG] for p in points) == ["optim.lr=0.02", "optim.lr=0.05"]
    assert all(p.info.status == "FINISHED" for p in points)
    first, second = sorted(points, key=lambda p: p.info.start_time)
    assert second.info.start_time < first.info.end_time  # the two ran at the same time
    summaries = [summary_steps(local_store, point, tmp_path / point.info.run_id) for point in points]
    assert all(s["train"]["action"] == "reused" for s in summaries)  # the sweep above's
    assert all(s[step]["action"] == "ran" for s in summaries for step in ("build", "systemtest"))
    assert len({s["systemtest"]["run_id"] for s in summaries}) == 2
    assert leftover_containers() == []
