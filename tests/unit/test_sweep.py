"""Which keys a multirun sweeps, and how a point is labelled."""

import pytest
from omegaconf import OmegaConf

from cifar_pipeline.orchestrator.sweep import parallelism, point_label, point_status, swept_keys


def test_swept_keys_are_the_sweep_overrides_only() -> None:
    arguments = ["data=digits", "train.epochs=1", "-m", "optim.lr=0.02,0.05", "seed=range(0,2)", "data_url="]
    assert swept_keys(arguments) == ["optim.lr", "seed"]


def test_point_label_names_each_swept_value() -> None:
    cfg = OmegaConf.create({"optim": {"lr": 0.05}, "seed": 1})
    assert point_label(cfg, ["optim.lr", "seed"]) == "optim.lr=0.05 seed=1"


def test_parallelism_is_a_whole_number_of_points() -> None:
    assert parallelism(OmegaConf.create({"sweep": {"parallel": 3}})) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=rf"^sweep.parallel={bad!r}: expected a whole number"):
            parallelism(OmegaConf.create({"sweep": {"parallel": bad}}))


@pytest.mark.parametrize(
    ("code", "status"), [(0, "FINISHED"), (1, "FAILED"), (130, "KILLED"), (143, "KILLED")]
)
def test_a_points_status_follows_its_exit_code(code: int, status: str) -> None:
    assert point_status(code) == status
