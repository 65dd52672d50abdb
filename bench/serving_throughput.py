"""Our inference image against `mlflow models serve` of the same model, same machine, same load.

    python -m bench.serving_throughput                      # the latest FINISHED build run
    python -m bench.serving_throughput --build-run-id <id> --seconds 20 --output serving.json

Both servers serve the train run's ONNX model (`models:/<its LoggedModel ID>`, what the
registry's alias points at) with ONNX Runtime on this machine's CPUs, one server at a
time, both on the host network (no port proxy in front of either). MLflow's scoring
server gets one worker per CPU, the default of the images `mlflow models build-docker`
makes (`mlflow models serve` itself defaults to one).

The load generator is wrk, the same for both: batch-1 requests (one 32x32 image as JSON
pixel arrays, in each server's own request format) over 1 and over 8 connections, each
sending its next request as soon as the last is answered. Our server is also measured on
its Open Inference Protocol route, with the image as a JSON tensor (`ours-v2-json`) and
as binary tensor data, the logits coming back binary too (`ours-v2-binary`): what
Triton's and KServe's clients send by default. After a warm-up, each level
runs for --seconds. Prints requests/s and latency p50/p95/p99, and our server's ratio to
MLflow's; then ONNX Runtime's own images/s on this model with the server's settings and
no HTTP at all (batch 1, and batch = each concurrency): the ceiling for any server.

Needs a Docker engine, wrk (`apt install wrk`, `brew install wrk`) and the tracking
store the pipeline wrote to (MLFLOW_TRACKING_URI, default ./mlflow.db).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import requests
from mlflow.tracking import MlflowClient

from cifar_pipeline import docker_utils, names
from cifar_pipeline.processes import free_port, stop_process_group
from cifar_pipeline.promotion.registry import logged_model_uri
from cifar_pipeline.serving.app import available_cpus, load_model
from cifar_pipeline.tracking import BUILD, STEP_TAG

log = logging.getLogger("bench.serving_throughput")
WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")


@dataclass
class Load:
    server: str
    concurrency: int
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def latest_build_run(client: MlflowClient) -> str:
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        f"tags.`{STEP_TAG}` = '{BUILD}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise SystemExit("no FINISHED build run in this tracking store: run the pipeline first (make demo)")
    return str(runs[0].info.run_id)


def wait_until_answering(url: str, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise SystemExit(f"the server behind {url} exited while starting")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def our_server(image: str, port: int) -> Iterator[str]:
    client = docker_utils.connect()
    name = f"cifar-bench-{uuid.uuid4().hex[:8]}"
    container = client.containers.run(
        image, name=name, detach=True, network_mode="host", environment={"PORT": str(port)}
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def alive() -> bool:
            container.reload()
            return str(container.status) in {"created", "running"}

        wait_until_answering(f"{url}/ready", 120, alive)
        yield url
    finally:
        container.remove(force=True)


@contextmanager
def mlflow_server(model_uri: str, port: int, workers: int, log_file: Path) -> Iterator[str]:
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "-h", "127.0.0.1",
        "-p", str(port), "--env-manager", "local", "--workers", str(workers),
    ]  # fmt: skip
    # MLflow starts `uvicorn` by name: the one beside this interpreter, even if its
    # environment is not activated.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log_file.open("w") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(f"{url}/ping", 300, lambda: server.poll() is None)
        except SystemExit as exc:
            raise SystemExit(f"{exc}; its log:\n{log_file.read_text()[-3000:]}") from None
        yield url
    finally:
        stop_process_group(server, timeout=20)


@dataclass(frozen=True)
class Body:
    path: Path
    header_length: int | None = None  # a binary Open Inference Protocol request's JSON length

    def headers(self) -> dict[str, str]:
        if self.header_length is None:
            return {"Content-Type": "application/json"}
        return {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(self.header_length),
        }


def wrk(url: str, body: Body, connections: int, seconds: float) -> dict[str, Any]:
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), url, "--", str(body.path),
    ]  # fmt: skip
    if body.header_length is not None:
        command.append(str(body.header_length))
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    report: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    if report["non_2xx"] or report["socket_errors"]:
        errors = f"{report['non_2xx']} non-2xx answers, {report['socket_errors']} socket errors"
        raise SystemExit(f"{url}: {errors}")
    return report


def measure(server: str, url: str, body: Body, levels: list[int], seconds: float) -> list[Load]:
    wrk(url, body, max(levels), min(seconds, 3))  # warm-up: arenas, caches, worker processes
    rows = []
    for connections in levels:
        report = wrk(url, body, connections, seconds)
        rows.append(
            Load(
                server=server,
                concurrency=connections,
                requests_per_second=report["requests"] / report["seconds"],
                p50_ms=report["p50_ms"],
                p95_ms=report["p95_ms"],
                p99_ms=report["p99_ms"],
            )
        )
        row = rows[-1]
        log.info("%s c%d: %.0f req/s, p99 %.1f ms", server, connections, row.requests_per_second, row.p99_ms)
    return rows


def model_ceiling(
    model_run_id: str, work: Path, batch_sizes: list[int], seconds: float = 3.0
) -> dict[int, float]:
    """Images/s of ONNX Runtime alone, with the server's session settings: what any server could reach."""
    model_dir = Path(
        mlflow.artifacts.download_artifacts(run_id=model_run_id, artifact_path="onnx", dst_path=str(work))
    )
    model = load_model(model_dir, available_cpus())
    ceiling = {}
    for batch_size in batch_sizes:
        images = np.zeros((batch_size, 32, 32, 3), dtype=np.uint8)
        model.logits(images)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model.logits(images)
            calls += 1
        ceiling[batch_size] = calls * batch_size / (time.perf_counter() - started)
    return ceiling


def first_prediction(url: str, body: Body) -> np.ndarray:
    """The logits of one answer, from any of the servers' response formats."""
    answer = requests.post(url, data=body.path.read_bytes(), headers=body.headers(), timeout=30)
    answer.raise_for_status()
    if header := answer.headers.get("Inference-Header-Content-Length"):  # binary tensor data
        outputs = json.loads(answer.content[: int(header)])["outputs"]
        offset = int(header)
        for output in outputs:
            size = output["parameters"]["binary_data_size"]
            if output["name"] == "logits":
                return np.frombuffer(answer.content[offset : offset + size], dtype="<f4")[:10]
            offset += size
    payload = answer.json()
    if "outputs" in payload:  # the Open Inference Protocol's JSON tensors
        logits = next(o for o in payload["outputs"] if o["name"] == "logits")
        return np.asarray(logits["data"][: logits["shape"][1]], dtype=np.float32)
    if "predictions" in payload and isinstance(payload["predictions"], list) and payload["predictions"]:
        first = payload["predictions"][0]
        return np.asarray(first["logits"] if isinstance(first, dict) else first, dtype=np.float32)
    predictions = payload["predictions"]  # MLflow with a named ONNX output: {name: [[...]]}
    return np.asarray(next(iter(predictions.values()))[0], dtype=np.float32)


def report(rows: list[Load], levels: list[int]) -> tuple[list[str], dict[str, float]]:
    """A markdown table of the rows, then our ratio to MLflow at each level."""
    lines = ["| server | concurrency | requests/s | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r.server} | {r.concurrency} | {r.requests_per_second:,.0f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | "
        f"{r.p99_ms:.1f} |"
        for r in rows
    ]
    by_key = {(row.server, row.concurrency): row for row in rows}
    ratios = {}
    for server in dict.fromkeys(row.server for row in rows if row.server != "mlflow"):
        prefix = "" if server == "ours" else f"{server.removeprefix('ours-').replace('-', '_')}_"
        for level in levels:
            ours, theirs = by_key[(server, level)], by_key[("mlflow", level)]
            ratio = ours.requests_per_second / theirs.requests_per_second
            throughput = ratios[f"{prefix}c{level}_throughput_ratio"] = ratio
            p99 = ratios[f"{prefix}c{level}_p99_ratio"] = theirs.p99_ms / ours.p99_ms
            lines.append(
                f"concurrency {level}: {server}/mlflow throughput {throughput:.2f}x; p99 {p99:.2f}x lower"
            )
    return lines, ratios


def oip_bodies(work: Path, picture: np.ndarray, input_name: str) -> tuple[Body, Body]:
    """One image as an Open Inference Protocol request: a JSON tensor, and binary tensor data
    with every output asked for as binary (Triton's client's default request)."""
    tensor = {"name": input_name, "shape": [1, *picture.shape], "datatype": "UINT8"}
    as_json = Path(work, "v2.json")
    as_json.write_text(json.dumps({"inputs": [{**tensor, "data": picture.ravel().tolist()}]}))
    raw = picture.astype(np.uint8).tobytes()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    as_binary = Path(work, "v2.bin")
    as_binary.write_bytes(header + raw)
    return Body(as_json), Body(as_binary, len(header))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--build-run-id", default="", help="a FINISHED build run (default: the latest)")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each load level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--mlflow-workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--output", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt install wrk (Debian/Ubuntu) or brew install wrk")

    client = MlflowClient()
    build_run_id = args.build_run_id or latest_build_run(client)
    build = client.get_run(build_run_id)
    image = build.data.tags[names.IMAGE_REF_TAG]
    model_run_id = build.data.tags["pipeline.upstream.model_run_id"]
    model_uri = logged_model_uri(client, model_run_id)
    log.info("build run %s: image %s, model %s", build_run_id, image, model_uri)

    picture = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as work:
        ours_body, mlflow_body = Body(Path(work, "ours.json")), Body(Path(work, "mlflow.json"))
        ours_body.path.write_text(json.dumps({"images": [picture.tolist()]}))
        mlflow_body.path.write_text(json.dumps({"inputs": [picture.tolist()]}))
        answers: dict[str, np.ndarray] = {}
        with our_server(image, free_port()) as url:
            metadata = requests.get(f"{url}/metadata", timeout=10).json()
            infer_url = f"{url}/v2/models/{metadata['model_name']}/infer"
            v2_json, v2_binary = oip_bodies(Path(work), picture, metadata["input"]["name"])
            rows = []
            for server, route, body in (
                ("ours", f"{url}/predict", ours_body),
                ("ours-v2-json", infer_url, v2_json),
                ("ours-v2-binary", infer_url, v2_binary),
            ):
                answers[server] = first_prediction(route, body)
                rows += measure(server, route, body, args.concurrency, args.seconds)
        with mlflow_server(model_uri, free_port(), args.mlflow_workers, Path(work, "mlflow.log")) as url:
            mlflow_logits = first_prediction(f"{url}/invocations", mlflow_body)
            rows += measure("mlflow", f"{url}/invocations", mlflow_body, args.concurrency, args.seconds)
        ceiling = model_ceiling(model_run_id, Path(work), [1, *args.concurrency])

    # The comparison means something only if every route served the same model.
    difference = max(float(np.abs(logits - mlflow_logits).max()) for logits in answers.values())
    if difference > 1e-3:
        raise SystemExit(f"the two servers disagree: max logit difference {difference:.3g}")
    lines, ratios = report(rows, args.concurrency)
    header = [
        f"build run {build_run_id}; {len(os.sched_getaffinity(0))} CPUs; wrk, {args.seconds:g} s per level; "
        f"MLflow workers: {args.mlflow_workers}",
        f"every route gives the same answer (max logit difference {difference:.2g})",
        "",
    ]
    ceiling_line = ", ".join(f"batch {b}: {rate:,.0f} images/s" for b, rate in ceiling.items())
    lines.append(f"ONNX Runtime alone, same settings, no HTTP (the ceiling for any server): {ceiling_line}")
    sys.stdout.write("\n".join(["", *header, *lines]) + "\n")
    if args.output:
        results = {
            "build_run_id": build_run_id,
            "rows": [asdict(r) for r in rows],
            "onnxruntime_images_per_second": ceiling,
            **ratios,
        }
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
