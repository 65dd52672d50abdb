"""A step's settings have one default wherever they are written: its MLproject parameters
(what `mlflow run steps/<step>` uses), the composed Hydra config (what the pipeline passes)
and the step's argparse flags (what `python -m steps.<step>.step` uses)."""

import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from mlflow.projects._project_spec import EntryPoint, load_project
from omegaconf import DictConfig, OmegaConf

from steps.build import step as build_step
from steps.fetch import step as fetch_step
from steps.promote import step as promote_step
from steps.systemtest import step as systemtest_step
from steps.train import step as train_step

ROOT = Path(__file__).resolve().parents[2]
STEPS = sorted(path.parent.name for path in (ROOT / "steps").glob("*/MLproject"))
PARSERS: dict[str, ModuleType] = {
    "fetch": fetch_step,
    "train": train_step,
    "build": build_step,
    "systemtest": systemtest_step,
    "promote": promote_step,
}
# Where each step's parameters are set in configs/: "group.*" is any key of the group.
CONFIG_KEYS = {
    "fetch": ("data.*", "validation.*"),
    "train": ("model.*", "optim.*", "train.*", "seed"),
    "build": ("serve.image_repo", "serve.base_image", "serve.registry"),
    "systemtest": ("systemtest.*",),
    "promote": ("promote.*",),
}
# Run IDs of upstream (or resumed) runs and values the pipeline resolves as the step starts
# (the validation reference, the champion version): no config key holds a default for them.
RESOLVED_AT_RUN_TIME = {
    "data_run_id",
    "model_run_id",
    "image_run_id",
    "systemtest_run_id",
    "resume_run_id",
    "reference_run_id",
    "champion_version",
}


@pytest.fixture(scope="module")
def cfg() -> DictConfig:
    """The default pipeline's config (data=cifar10, as MLproject's `source` default), with the
    environment variables that override docker.base_image unset: the defaults as written."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("PIPELINE_BASE_IMAGE", raising=False)
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            composed = compose(config_name="config")
        OmegaConf.resolve(composed)  # ${docker.base_image} -> ${oc.env:...}, while env is unset
    return composed


def entry_point(step: str) -> EntryPoint:
    return load_project(str(ROOT / "steps" / step)).get_entry_point("main")


def config_value(cfg: DictConfig, step: str, name: str) -> Any:
    """The one config value that a parameter takes by default (fails on none or several)."""
    keys = [
        f"{pattern[:-2]}.{name}" if pattern.endswith(".*") else pattern
        for pattern in CONFIG_KEYS[step]
        if (pattern.endswith(".*") and name in cfg[pattern[:-2]]) or pattern.split(".")[-1] == name
    ]
    assert len(keys) == 1, f"{step}: parameter {name} maps onto config keys {keys}, expected one"
    return OmegaConf.select(cfg, keys[0])


def same(declared: Any, configured: Any) -> bool:
    """An MLproject default against a config value: MLproject has booleans as "true"/"false"
    strings and numbers as `type: float` (5 and 5.0 are one value)."""
    if isinstance(configured, bool):
        return declared == str(configured).lower()
    if isinstance(configured, int | float):
        return isinstance(declared, int | float) and float(declared) == float(configured)
    return bool(declared == configured)


def test_every_step_with_parameters_is_checked() -> None:
    assert set(STEPS) == set(PARSERS) == set(CONFIG_KEYS)


@pytest.mark.parametrize("step", STEPS)
def test_mlproject_defaults_are_the_config_values(step: str, cfg: DictConfig) -> None:
    mismatches = {}
    for name, parameter in entry_point(step).parameters.items():
        if name in RESOLVED_AT_RUN_TIME:
            continue
        assert parameter.default is not None, f"{step}: parameter {name} has no default"
        configured = config_value(cfg, step, name)
        if not same(parameter.default, configured):
            mismatches[name] = {"MLproject": parameter.default, "config": configured}
    assert mismatches == {}, f"{step}: MLproject defaults that are not the config's: {mismatches}"


@pytest.mark.parametrize("step", STEPS)
def test_mlproject_defaults_are_the_argparse_defaults(step: str) -> None:
    """The step's command line as MLflow writes it from the defaults (run IDs given), parsed by
    the step's own parser, gives what the step would use with no flags at all."""
    entry = entry_point(step)
    unused = [name for name in entry.parameters if f"{{{name}}}" not in entry.command]
    assert unused == [], f"{step}: parameters that never reach the command line"
    run_ids = {name: "0" * 32 for name, parameter in entry.parameters.items() if parameter.default is None}
    command = shlex.split(entry.compute_command(run_ids, storage_dir=None))
    assert command[:3] == ["python", "-m", f"steps.{step}.step"]
    parser = PARSERS[step].build_parser()
    given = vars(parser.parse_args(command[3:]))
    # A required flag (a run ID, fetch's source) has no argparse default: None.
    defaults = {dest: parser.get_default(dest) for dest in given}
    mismatches = {
        dest: {"MLproject": value, "argparse": defaults[dest]}
        for dest, value in given.items()
        if defaults[dest] is not None and value != defaults[dest]
    }
    assert mismatches == {}, f"{step}: MLproject defaults that are not argparse's: {mismatches}"
