"""The train/test split follows `data.split_seed` alone: a sweep over training's `seed` keeps
one test set, so fetch is reused and promote compares every candidate on the same images."""

import shlex
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from mlflow.projects._project_spec import load_project

from cifar_pipeline.dataset import Split
from cifar_pipeline.orchestrator.planning.plan import step_parameters
from cifar_pipeline.step_declarations import PIPELINE_STEPS
from steps.fetch import step

ROOT = Path(__file__).resolve().parents[2]


def digits_test_split(overrides: list[str], work_dir: Path) -> Split:
    """The test split a pipeline run with these overrides gets, along the real path: the
    composed config, fetch's parameters as the orchestrator builds them, its command line as
    MLflow writes it, the step's parser and request, the digits source's split."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=digits", *overrides])
    entry_point = load_project(str(ROOT / "steps" / "fetch")).get_entry_point("main")
    params = step_parameters(PIPELINE_STEPS["fetch"], cfg, {})
    assert "seed" not in params, "training's seed reaches the fetch step"
    command = shlex.split(entry_point.compute_command(params, None))
    assert command[:3] == ["python", "-m", "steps.fetch.step"]
    _, test, _, _ = step.fetch_request(step.parse_args(command[3:])).load(work_dir)
    return test


def test_training_seed_leaves_the_split_alone_and_split_seed_moves_it(tmp_path: Path) -> None:
    first = digits_test_split(["seed=0", "data.split_seed=0"], tmp_path)
    other_training_seed = digits_test_split(["seed=1", "data.split_seed=0"], tmp_path)
    np.testing.assert_array_equal(other_training_seed.images, first.images)
    np.testing.assert_array_equal(other_training_seed.labels, first.labels)
    other_split_seed = digits_test_split(["seed=0", "data.split_seed=1"], tmp_path)
    assert len(other_split_seed.labels) == len(first.labels)  # the same fraction, other images
    assert not np.array_equal(other_split_seed.images, first.images)
