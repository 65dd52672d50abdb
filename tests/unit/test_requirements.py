"""Each step image's requirements resolve against the one pinned set; only train has torch."""

from pathlib import Path

import pytest

from cifar_pipeline.orchestrator.running.requirement_sets import (
    RequirementsError,
    pinned_requirements,
    read_pins,
)
from cifar_pipeline.orchestrator.running.step_images import requirement_build_args
from cifar_pipeline.tracking import STEPS

ROOT = Path(__file__).resolve().parents[2]


def test_every_step_resolves_to_pinned_versions() -> None:
    pins = {name: version for name, version in read_pins(ROOT / "requirements").values()}
    for step in STEPS:
        resolved = pinned_requirements(ROOT / "requirements", step)
        assert resolved, step
        assert all(pins[name] == version for name, version in resolved.items()), step


def test_only_the_train_image_has_torch() -> None:
    with_torch = [s for s in STEPS if "torch" in pinned_requirements(ROOT / "requirements", s)]
    assert with_torch == ["train"]
    assert "torch" not in pinned_requirements(ROOT / "requirements", "serve")


def test_step_images_carry_the_tracking_client_not_the_server() -> None:
    """The steps reach every store through a tracking server: mlflow-skinny, not MLflow's
    server, database and UI dependencies; the orchestrator serves a local store with those."""
    for step in STEPS:
        resolved = pinned_requirements(ROOT / "requirements", step)
        assert "mlflow-skinny" in resolved, step
        assert "mlflow" not in resolved, step
    assert "mlflow" in pinned_requirements(ROOT / "requirements", "orchestrator")


def test_build_args_carry_each_stage_pins_and_build_records_the_served_ones() -> None:
    args, packages = requirement_build_args()
    stages = ("common", "fetch", "train", "build", "systemtest", "promote", "serve")
    assert set(args) == {f"{stage.upper()}_REQUIREMENTS" for stage in stages}
    assert "torch==" in args["TRAIN_REQUIREMENTS"]
    assert "torch" not in args["FETCH_REQUIREMENTS"]
    # the build step's environment includes the inference image's wheels, so a bump there re-runs build
    assert packages["build"]["serve:fastapi"] == packages["serve"]["fastapi"]


def test_an_unpinned_requirement_is_refused_naming_file_and_package(tmp_path: Path) -> None:
    (tmp_path / "pins.txt").write_text("numpy==2.4.6\n")
    (tmp_path / "fetch.txt").write_text("-c pins.txt\nnumpy\nleftpad  # not pinned\n")
    with pytest.raises(RequirementsError, match=r"fetch\.txt: leftpad has no version in .*pins\.txt"):
        pinned_requirements(tmp_path, "fetch")


def test_includes_are_followed(tmp_path: Path) -> None:
    (tmp_path / "pins.txt").write_text("numpy==2.4.6\nPillow==13.0.0\n")
    (tmp_path / "base.txt").write_text("numpy\n")
    (tmp_path / "fetch.txt").write_text("-r base.txt\npillow\n")
    assert pinned_requirements(tmp_path, "fetch") == {"Pillow": "13.0.0", "numpy": "2.4.6"}
