"""The real Hydra config composes, and MLproject/conda.yaml agree with it."""

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.hooks import HookContext, load_hooks
from cifar_pipeline.orchestrator.hooks import fetch as fetch_hooks
from cifar_pipeline.orchestrator.overrides import expand_overrides
from cifar_pipeline.orchestrator.planning.plan import PipelineError, local_data_path, step_parameters
from cifar_pipeline.orchestrator.reporting.report import PipelineReport
from cifar_pipeline.orchestrator.running.docker_args import step_docker_args
from cifar_pipeline.orchestrator.running.step_images import repository
from cifar_pipeline.step_declarations import PIPELINE_STEPS
from cifar_pipeline.tracking import STEPS

ROOT = Path(__file__).resolve().parents[2]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_default_config_composes_to_cifar10() -> None:
    cfg = _compose([])
    assert cfg.data.source == "cifar10"
    assert cfg.train.device == "auto"


@pytest.mark.parametrize("source", ["cifar10", "digits", "imagefolder"])
def test_step_parameters_match_each_step_mlproject(source: str, tmp_path: Path) -> None:
    cfg = _compose([f"data={source}", f"data.data_url={tmp_path}" if source == "imagefolder" else "seed=0"])
    upstream = {"data_run_id": "d", "model_run_id": "m", "image_run_id": "i", "systemtest_run_id": "s"}
    upstream["resume_run_id"] = "r"
    resolved = {  # what the pipeline resolves as the step starts
        "fetch": {**fetch_hooks.settings(cfg.validation), "reference_run_id": "f"},
        "train": {"resume_run_id": "r"},
        "promote": {"champion_version": "1", "force": "false"},
    }
    for step in STEPS:
        declared = yaml.safe_load((ROOT / "steps" / step / "MLproject").read_text())
        accepted = set(declared["entry_points"]["main"]["parameters"])
        params = step_parameters(PIPELINE_STEPS[step], cfg, upstream, resolved.get(step))
        assert set(params) <= accepted, step
        assert declared["docker_env"]["image"] == f"{repository(step)}:latest"


def test_fetch_mlproject_defaults_are_the_validation_defaults() -> None:
    """Running the fetch step alone validates as the pipeline does by default."""
    declared = yaml.safe_load((ROOT / "steps" / "fetch" / "MLproject").read_text())
    parameters = declared["entry_points"]["main"]["parameters"]
    defaults = fetch_hooks.settings(_compose([]).validation)
    assert {name: parameters[name]["default"] for name in defaults} == defaults


def test_unknown_source_names_the_choices() -> None:
    with pytest.raises(MissingConfigException, match="data/imagenet"):
        _compose(["data=imagenet"])


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigCompositionException, match=r"train\.learning_rate"):
        _compose(["train.learning_rate=0.1"])


def test_overrides_parameter_is_split_into_hydra_overrides() -> None:
    argv = ["main.py", "data=digits", "overrides=optim.lr=0.1 'serve.image_repo=my repo'", "x=1"]
    assert expand_overrides(argv) == [
        "main.py",
        "data=digits",
        "optim.lr=0.1",
        "serve.image_repo=my repo",
        "x=1",
    ]
    assert expand_overrides(["main.py", "overrides="]) == ["main.py"]
    # a multirun flag goes before the overrides, where Hydra's parser accepts it
    sweep = expand_overrides(["main.py", "data=digits", "overrides=-m optim.lr=0.1,0.2"])
    assert sweep == ["main.py", "-m", "data=digits", "optim.lr=0.1,0.2"]


def test_every_data_config_has_the_same_keys() -> None:
    keys = {source: set(_compose([f"data={source}"]).data) for source in ("cifar10", "digits", "imagefolder")}
    assert keys["cifar10"] == keys["digits"] == keys["imagefolder"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/a/b.tar.gz?x=1&y=2", "/data/my pets/it's.zip", "C:\\x\\", "sha256:ab"]
)
def test_literal_parameters_reach_the_config_unchanged(url: str) -> None:
    overrides = expand_overrides(["data=imagefolder", f"data_url={url}", f"data_checksum={url}"])
    cfg = _compose(overrides)
    assert cfg.data.data_url == url
    assert cfg.data.data_checksum == url


def test_empty_literal_parameter_keeps_the_config_default() -> None:
    assert expand_overrides(["data=cifar10", "data_url=", "data_checksum=", "registry="]) == ["data=cifar10"]
    assert _compose([]).serve.registry == ""


@pytest.mark.parametrize("registry", ["127.0.0.1:5000", "registry.example.com:443/team/ml"])
def test_registry_reaches_the_build_step(registry: str) -> None:
    cfg = _compose(expand_overrides([f"registry={registry}"]))
    params = step_parameters(PIPELINE_STEPS["build"], cfg, {"model_run_id": "m1"})
    assert params["registry"] == registry


def test_local_data_path_is_made_absolute_and_checked(mlflow_store, tmp_path: Path) -> None:
    (tmp_path / "pets").mkdir()  # mlflow_store made tmp_path the working directory
    cfg = _compose(["data=imagefolder", "data.data_url=pets", "validation.reference=none"])
    assert local_data_path(cfg.data) == tmp_path / "pets"
    hooks = load_hooks(PIPELINE_STEPS["fetch"], HookContext(cfg, MlflowClient(), PipelineReport()))
    assert hooks.check(["fetch"]) == ""
    resolved = hooks.resolve({})
    assert resolved.params["data_url"] == str(tmp_path / "pets")
    assert resolved.mounts == [tmp_path / "pets"]
    assert step_parameters(PIPELINE_STEPS["fetch"], cfg, {}, resolved.params)["data_url"] == str(
        tmp_path / "pets"
    )
    assert local_data_path(_compose(["data=cifar10", "data.data_url='http://m/c.tgz'"]).data) is None
    with pytest.raises(PipelineError, match=r"data\.data_url='absent': no such file or directory"):
        local_data_path(_compose(["data=imagefolder", "data.data_url=absent"]).data)
    with pytest.raises(PipelineError, match=r"data\.data_url is required for source=imagefolder"):
        local_data_path(_compose(["data=imagefolder"]).data)


def test_local_data_is_mounted_read_only_into_fetch_only() -> None:
    args = step_docker_args(PIPELINE_STEPS["fetch"], None, False, [Path("/data/my,pets")])
    assert args["mount"] == 'type=bind,"source=/data/my,pets","target=/data/my,pets",readonly'
    assert "mount" not in step_docker_args(PIPELINE_STEPS["train"], None, False)


def test_docker_flags_follow_each_steps_declared_resources() -> None:
    train = step_docker_args(PIPELINE_STEPS["train"], None, gpus=True)
    assert (train["shm-size"], train["gpus"], train["network"]) == ("2g", "all", "host")
    assert "gpus" not in step_docker_args(PIPELINE_STEPS["train"], None, gpus=False)
    assert "gpus" not in step_docker_args(PIPELINE_STEPS["fetch"], None, gpus=True)  # declares no GPU
    sockets = {step: "v" in step_docker_args(PIPELINE_STEPS[step], None, False) for step in STEPS}
    assert sockets == {"fetch": False, "train": False, "build": True, "systemtest": True, "promote": False}


def test_conda_env_installs_the_pinned_orchestrator_requirements() -> None:
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_section = next(d for d in conda["dependencies"] if isinstance(d, dict))["pip"]
    assert pip_section == ["-r requirements/orchestrator.txt"]
    pins = {
        line.split("==")[0]
        for line in (ROOT / "requirements/pins.txt").read_text().splitlines()
        if "==" in line
    }
    for name in (*STEPS, "serve", "orchestrator", "dev", "kserve-client"):
        for line in (ROOT / f"requirements/{name}.txt").read_text().splitlines():
            if line and not line.startswith(("#", "-")):
                package = line.split("[")[0]  # extras (`tritonclient[http]`) pick parts of a pinned package
                assert package in pins, f"{name}.txt: {line} has no pin in pins.txt"


def test_cache_parameters_reach_the_config() -> None:
    cfg = _compose(expand_overrides(["cache.enabled=false", "rerun=train,build"]))
    assert cfg.cache.enabled is False
    assert cfg.cache.rerun == "train,build"
    assert _compose([]).cache.enabled is True
