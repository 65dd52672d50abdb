"""The Ray project backend without a cluster: its config, the job's entrypoint, the status mapping."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.exceptions import ExecutionException
from mlflow.projects.utils import PROJECT_DOCKER_ARGS, PROJECT_STORAGE_DIR, PROJECT_SYNCHRONOUS

from cifar_pipeline.ray_backend.config import parse_config
from cifar_pipeline.ray_backend.entrypoint import (
    docker_flags,
    docker_run,
    job_entrypoint,
    remote_tracking_uri,
    stop_wait_seconds,
)
from cifar_pipeline.ray_backend.submitted_run import run_status

ADDRESS = {"address": "http://127.0.0.1:8265"}


def test_a_full_config_becomes_the_jobs_placement(tmp_path: Path) -> None:
    given = {
        **ADDRESS, "num_cpus": 2, "num_gpus": 1, "memory": 8_000_000_000, "resources": {"docker": 1},
        "docker_args": {"shm-size": "2g", "network": "host"}, "stop_grace_seconds": 20,
    }  # fmt: skip
    path = tmp_path / "ray.json"
    path.write_text(json.dumps(given))
    for config in (parse_config(given), parse_config(str(path))):
        assert config.submit_resources() == {
            "entrypoint_num_cpus": 2.0, "entrypoint_num_gpus": 1.0, "entrypoint_memory": 8_000_000_000,
            "entrypoint_resources": {"docker": 1.0},
        }  # fmt: skip
        assert config.docker_args == {"shm-size": "2g", "network": "host"}
        assert config.stop_grace_seconds == 20


def test_the_address_defaults_to_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    config = parse_config(None)
    assert config.address == "http://head:8265"
    assert config.submit_resources() == {}  # Ray's own defaults
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(ExecutionException, match="no Ray address: set RAY_ADDRESS"):
        parse_config({})


def test_mlflows_own_keys_are_accepted_and_dash_a_flags_win() -> None:
    config = parse_config({
        **ADDRESS, "docker_args": {"network": "bridge", "privileged": True},
        PROJECT_DOCKER_ARGS: {"network": "host"}, PROJECT_SYNCHRONOUS: False, PROJECT_STORAGE_DIR: None,
    })  # fmt: skip
    assert config.docker_args == {"network": "host", "privileged": True}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"num_gpu": 1}, "unknown key(s) num_gpu; expected some of address, "),
        ({"num_gpus": "one"}, "num_gpus='one': expected a number >= 0"),
        ({"num_cpus": -1}, "num_cpus=-1: expected a number >= 0"),
        ({"num_cpus": True}, "num_cpus=True: expected a number >= 0"),
        ({"memory": 1.5}, "memory=1.5: expected a whole number >= 0"),
        ({"resources": ["docker"]}, "resources=['docker']: expected an object of resource name -> amount"),
        ({"resources": {"docker": "yes"}}, "resources.docker='yes': expected a number >= 0"),
        (
            {"docker_args": "--network host"},
            "docker_args='--network host': expected an object of flag -> value",
        ),
        ({"docker_args": {"--network": "host"}}, "flag '--network': expected a name without dashes"),
        ({"docker_args": {"cpus": 2}}, "docker_args.cpus=2: expected a string, or true for a bare flag"),
        ({"stop_grace_seconds": 7200}, "stop_grace_seconds=7200: expected at most 3600"),
    ],
)
def test_a_bad_config_is_refused_naming_key_value_and_expectation(given: dict, message: str) -> None:
    with pytest.raises(ExecutionException) as raised:
        parse_config({**ADDRESS, **given})
    assert message in str(raised.value)


def test_a_config_file_that_is_not_a_json_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ray.json"
    path.write_text("[1, 2]")
    with pytest.raises(ExecutionException, match="expected a JSON object"):
        parse_config(str(path))
    with pytest.raises(ExecutionException, match="No such file"):
        parse_config(str(tmp_path / "missing.json"))


def test_docker_flags_are_spelled_as_mlflows_local_backend_spells_them() -> None:
    assert docker_flags({"network": "host", "e": "A=1", "privileged": True}) == [
        "--network", "host", "-e", "A=1", "--privileged",
    ]  # fmt: skip


def test_only_a_tracking_server_is_handed_to_a_node() -> None:
    assert remote_tracking_uri("http://tracking:5000") == "http://tracking:5000"
    for local in ("sqlite:///mlflow.db", "file:///tmp/mlruns", "/tmp/mlruns"):
        with pytest.raises(ExecutionException, match="needs a tracking server that every node reaches"):
            remote_tracking_uri(local)


def test_the_container_is_named_labelled_and_gets_the_runs_environment() -> None:
    command = docker_run(
        "repo/step@sha256:abc", "mlflow-ray-1234", {"MLFLOW_RUN_ID": "1234"},
        {"network": "host", "name": "ignored", "rm": True}, "1234", volumes=["/shared:/shared:ro"],
    )  # fmt: skip
    assert command == [
        "docker", "run", "--rm", "--name", "mlflow-ray-1234", "--label", "mlflow.run_id=1234",
        "--network", "host", "-v", "/shared:/shared:ro", "-e", "MLFLOW_RUN_ID=1234", "repo/step@sha256:abc",
    ]  # fmt: skip


def fake_docker(tmp_path: Path, run_seconds: float) -> Path:
    """A `docker` on PATH that records its calls: `run` is a container that exits 3 after
    `run_seconds`, or 143 once `stop` has sent it SIGTERM."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        'if [ "$1" = run ]; then\n'
        f"  echo $$ > {tmp_path}/container; sleep {run_seconds} & s=$!\n"
        '  trap "kill $s; exit 143" TERM; wait $s; exit 3\n'
        "fi\n"
        f'if [ "$1" = stop ]; then kill -TERM "$(cat {tmp_path}/container)"; fi\n'
    )
    script.chmod(0o755)
    return folder


def test_the_entrypoint_keeps_the_containers_exit_code(tmp_path: Path) -> None:
    folder = fake_docker(tmp_path, run_seconds=0)
    entrypoint = job_entrypoint(["docker", "run", "img"], "echo 'a b'", "c1", 30)
    done = subprocess.run(["sh", "-c", entrypoint], env={"PATH": f"{folder}:/usr/bin:/bin"}, timeout=30)
    assert done.returncode == 3
    assert (tmp_path / "calls").read_text().splitlines() == ["run img echo a b"]


def test_the_entrypoint_stops_its_container_with_the_grace_period_on_sigterm(tmp_path: Path) -> None:
    folder = fake_docker(tmp_path, run_seconds=60)
    entrypoint = job_entrypoint(["docker", "run", "img"], "train", "c1", 25)
    # as Ray's job supervisor starts an entrypoint: a shell in a session of its own
    job = subprocess.Popen(
        ["sh", "-c", entrypoint], env={"PATH": f"{folder}:/usr/bin:/bin"}, start_new_session=True
    )
    calls = tmp_path / "calls"
    for _ in range(200):
        if (tmp_path / "container").exists():
            break
        time.sleep(0.05)
    job.terminate()  # Ray's SIGTERM to the entrypoint's shell
    assert job.wait(timeout=30) == 143  # the container's own exit code, after its stop
    assert calls.read_text().splitlines()[1:] == ["stop --time 25 c1", "rm --force c1"]
    assert stop_wait_seconds(25) > 25  # Ray waits past the grace before its SIGKILL
    assert "docker run img train &" in entrypoint


@pytest.mark.parametrize(
    ("job", "run"),
    [("PENDING", "SCHEDULED"), ("RUNNING", "RUNNING"), ("SUCCEEDED", "FINISHED"), ("FAILED", "FAILED"),
     ("STOPPED", "KILLED")],
)  # fmt: skip
def test_ray_job_statuses_map_onto_run_statuses(job: str, run: str) -> None:
    assert run_status(job) == run


def test_an_unknown_job_status_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown Ray job status 'LOST'"):
        run_status("LOST")
