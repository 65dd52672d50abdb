"""End to end, bad input and data: every refusal names the problem and leaves no run running and no
container; one step alone on an image folder; an empty class; test images leaked into training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.running.step_containers import STEP_IMAGE_TAG
from cifar_pipeline.sources import cifar10
from cifar_pipeline.tracking import FETCH, require_step_run
from tests.e2e.helpers import (
    children,
    in_project,
    leftover_containers,
    mlflow_run,
    pipeline_runs,
    subprocess_env,
    watching_step_containers,
)
from tests.helpers import CLASS_NAMES, md5_spec, noise_image, write_cifar_tarball

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


@pytest.mark.parametrize(
    ("params", "env", "message"),
    [
        (["source=digits", "data_run_id=0123456789abcdef0123456789abcdef"], {}, "no such run"),
        (["source=imagenet"], {}, "data/imagenet"),
        (["source=digits", "overrides=train.no_such_key=1"], {}, "no_such_key"),
        (["source=digits", "cache=maybe"], {}, "cache.enabled='maybe': expected true or false"),
        (["source=digits", "rerun=trian"], {}, "cache.rerun='trian': unknown step trian"),
        (
            ["source=digits", "overrides=promote.policy=sometimes"],
            {},
            "promote.policy='sometimes': expected one of not_worse, significantly_better",
        ),
        (
            ["source=digits", "overrides=promote.tolerance=-0.1"],
            {},
            "promote.tolerance=-0.1: expected a number",
        ),
        (
            ["source=digits", "overrides=validation.max_pixel_divergence=1.5"],
            {},
            "validation.max_pixel_divergence=1.5: expected a number from 0 to 1",
        ),
        (
            ["source=digits", "overrides=validation.reference=0123456789abcdef0123456789abcdef"],
            {},
            "validation.reference='0123456789abcdef0123456789abcdef': no such run",
        ),
        (
            ["resume=0123456789abcdef0123456789abcdef"],
            {},
            "resume='0123456789abcdef0123456789abcdef': no such run",
        ),
        (["source=imagefolder", "data_url=/nonexistent/pets"], {}, "'/nonexistent/pets': no such file"),
        (["source=digits"], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "Docker engine unreachable"),
    ],
)
def test_bad_input_fails_cleanly(
    project: Path, local_store: MlflowClient, params: list[str], env: dict[str, str], message: str
) -> None:
    everywhere = [e.experiment_id for e in local_store.search_experiments()]
    before = {r.info.run_id for r in local_store.search_runs(everywhere)}
    result = mlflow_run(project, *params, **env)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    new_runs = [r for r in local_store.search_runs(in_project(local_store)) if r.info.run_id not in before]
    assert new_runs, "the main entry point's run should exist"
    assert all(r.info.status == "FAILED" for r in new_runs)
    assert leftover_containers() == []


def write_pets(root: Path, empty_class: str = "") -> Path:
    """A small image folder of random pixels: PNG and JPEG of mixed sizes, one greyscale, one RGBA."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            noise_image(rng, (20 + 7 * i, 24)).save(root / name / f"{i}.png")
        noise_image(rng, (50, 40), "L").save(root / name / "grey.jpg")
        noise_image(rng, (33, 33), "RGBA").save(root / name / "alpha.png")
    if empty_class:
        (root / empty_class).mkdir()
    return root


def test_fetch_step_alone_on_an_image_folder(project: Path, first_run: Run, tmp_path: Path) -> None:
    """One step alone against the default local store, with the README's one command: no store
    mounted by hand, the local folder mounted read-only by the command."""
    pets = write_pets(tmp_path / "my pets")
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    # The image the pipeline built, not the user's `:latest` (`make images`): a test leaves that alone.
    image = children(client, first_run)["fetch"].data.tags[STEP_IMAGE_TAG]
    with watching_step_containers() as seen:
        result = subprocess.run(
            [sys.executable, "-m", "cifar_pipeline.orchestrator.run_step", "fetch", "--image", image,
             "-P", "source=imagefolder", "-P", f"data_url={pets}", "-P", "test_fraction=0.2"],
            cwd=project, env=subprocess_env(), capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = result.stdout.split("fetch run ")[1].split(":")[0]
    run = client.get_run(run_id)
    assert run.info.experiment_id == in_project(client)[0]
    assert run.info.run_name == FETCH
    require_step_run(run.info.run_id, FETCH, client)
    assert run.data.params["num_classes"] == "2"
    assert run.data.params["num_train"] == "12"
    assert run.data.params["num_test"] == "2"
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/samples.png", "plots/class_balance.png"}
    [container] = seen
    assert container.mounts == [str(pets)]
    assert container.env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert leftover_containers() == []


def test_pipeline_refuses_an_empty_class_naming_it(
    project: Path, local_store: MlflowClient, tmp_path: Path
) -> None:
    pets = write_pets(tmp_path / "pets", empty_class="bird")
    result = mlflow_run(project, "source=imagefolder", f"data_url={pets}")
    assert result.returncode != 0
    assert "'bird'" in result.stdout + result.stderr
    parent = pipeline_runs(local_store)[0]
    assert parent.info.status == "FAILED"
    fetch = children(local_store, parent)[FETCH]
    assert fetch.info.status == "FAILED"
    assert {a.path for a in local_store.list_artifacts(fetch.info.run_id)} == {"logs"}  # nothing partial
    assert leftover_containers() == []


def test_a_test_image_in_the_training_split_stops_the_pipeline_before_training(
    project: Path, local_store: MlflowClient, tmp_path: Path
) -> None:
    train, test = write_cifar_tarball(tmp_path / "cifar.tar.gz", count=150)
    train.images[[0, 7, 8]] = test.images[[3, 5, 5]]  # two test images leak, one into train twice
    tarball = tmp_path / "leaky.tar.gz"
    cifar10.write_archive(tarball, train, test, CLASS_NAMES)
    result = mlflow_run(
        project, "source=cifar10", f"data_url={tarball}", f"data_checksum={md5_spec(tarball)}",
        "overrides=validation.reference=none",
    )  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "stopping before training: error: leakage: 2 test images also in the training split" in output
    parent = pipeline_runs(local_store)[0]
    assert parent.info.status == "FAILED"
    steps = children(local_store, parent)
    assert set(steps) == {FETCH}  # no training run was started
    fetch = steps[FETCH]
    assert fetch.info.status == "FAILED"
    assert {a.path for a in local_store.list_artifacts(fetch.info.run_id)} == {"logs", "validation"}
    summary = Path(
        local_store.download_artifacts(parent.info.run_id, "summary.txt", str(tmp_path))
    ).read_text()
    assert "data validation: error: leakage: 2 test images" in summary
    assert (
        parent.data.tags["pipeline.validation"]
        == "failed against no reference (validation.reference=none): 1 anomaly"
    )
    assert leftover_containers() == []
