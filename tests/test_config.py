"""The real Hydra config composes, and MLproject/conda.yaml agree with it."""

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException

from cifar_pipeline.orchestrator.cli import expand_overrides
from cifar_pipeline.orchestrator.pipeline import step_parameters
from cifar_pipeline.tracking import STEPS

ROOT = Path(__file__).resolve().parents[1]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_default_config_composes_to_cifar10() -> None:
    cfg = _compose([])
    assert cfg.data.source == "cifar10"
    assert cfg.train.device == "auto"


def test_step_parameters_match_each_step_mlproject() -> None:
    cfg = _compose(["data=digits"])
    upstream = {"data_run_id": "d", "model_run_id": "m", "image_run_id": "i"}
    for step in STEPS:
        declared = yaml.safe_load((ROOT / "steps" / step / "MLproject").read_text())
        accepted = set(declared["entry_points"]["main"]["parameters"])
        assert set(step_parameters(step, cfg, upstream)) <= accepted, step
        assert declared["docker_env"]["image"] == cfg.docker.step_image


def test_unknown_source_names_the_choices() -> None:
    with pytest.raises(MissingConfigException, match="data/imagenet"):
        _compose(["data=imagenet"])


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigCompositionException, match=r"train\.learning_rate"):
        _compose(["train.learning_rate=0.1"])


def test_overrides_parameter_is_split_into_hydra_overrides() -> None:
    argv = ["main.py", "data=digits", "overrides=train.lr=0.1 'serve.image_repo=my repo'", "x=1"]
    assert expand_overrides(argv) == [
        "main.py",
        "data=digits",
        "train.lr=0.1",
        "serve.image_repo=my repo",
        "x=1",
    ]
    assert expand_overrides(["main.py", "overrides="]) == ["main.py"]


def test_conda_env_installs_the_pinned_orchestrator_requirements() -> None:
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_section = next(d for d in conda["dependencies"] if isinstance(d, dict))["pip"]
    assert pip_section == ["-r requirements/orchestrator.txt"]
    pins = {
        line.split("==")[0]
        for line in (ROOT / "requirements/pins.txt").read_text().splitlines()
        if "==" in line
    }
    for name in ("step", "serve", "orchestrator", "dev"):
        for line in (ROOT / f"requirements/{name}.txt").read_text().splitlines():
            if line and not line.startswith(("#", "-")):
                assert line in pins, f"{name}.txt: {line} has no pin in pins.txt"
