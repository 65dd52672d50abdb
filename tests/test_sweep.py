"""Which keys a multirun sweeps, and how a point is labelled."""

from omegaconf import OmegaConf

from cifar_pipeline.orchestrator.sweep import point_label, swept_keys


def test_swept_keys_are_the_sweep_overrides_only() -> None:
    arguments = ["data=digits", "train.epochs=1", "-m", "optim.lr=0.02,0.05", "seed=range(0,2)", "data_url="]
    assert swept_keys(arguments) == ["optim.lr", "seed"]


def test_point_label_names_each_swept_value() -> None:
    cfg = OmegaConf.create({"optim": {"lr": 0.05}, "seed": 1})
    assert point_label(cfg, ["optim.lr", "seed"]) == "optim.lr=0.05 seed=1"
