"""A Ray cluster of the tests' own, on 127.0.0.1: a head with no GPU, and a worker that declares a
logical GPU and the `docker` resource (an operator's mark for a node with a Docker engine).

`python -m tests.ray_cluster` starts it, prints one JSON line (the Jobs API address, each
node's ID) and keeps it up until its standard input closes or it gets SIGTERM. The tests run it
in a session of its own and end it by its process group: never `ray stop`, which would end
every Ray process on the machine. Ray advertises the machine's outward address unless told
otherwise; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in every Ray process's and client's
environment (and `ray.cluster_utils`, which the `ray start` CLI cannot replace for a second
node under that setting) keeps every node on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from cifar_pipeline.processes import free_port

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # the jobs pass nothing through it
WORKER_RESOURCES = {"docker": 1.0}


@dataclass(frozen=True)
class LocalRayCluster:
    address: str  # the dashboard's: what RAY_ADDRESS holds for the Jobs API
    head_node_id: str
    worker_node_id: str


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1, "num_gpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(), "object_store_memory": OBJECT_STORE_BYTES,
        },
    )  # fmt: skip
    worker = {"num_cpus": 1, "num_gpus": 1, "resources": WORKER_RESOURCES}
    cluster.add_node(**worker, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    context = ray.init(address=cluster.address)
    nodes = [node for node in ray.nodes() if node["Alive"]]
    ray.shutdown()
    [worker] = [node["NodeID"] for node in nodes if node["Resources"].get("GPU")]
    [head] = [node["NodeID"] for node in nodes if node["NodeID"] != worker]
    sys.stdout.write(json.dumps({
        "address": f"http://{context.dashboard_url}", "head_node_id": head, "worker_node_id": worker,
    }) + "\n")  # fmt: skip
    sys.stdout.flush()
    ended = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: ended.set())
    threading.Thread(target=lambda: (sys.stdin.read(), ended.set()), daemon=True).start()
    ended.wait()
    cluster.shutdown()


@contextmanager
def local_ray_cluster(timeout: float = 180) -> Iterator[LocalRayCluster]:
    """The cluster, up; on the way out, every process it started is ended."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ray_cluster"],
        env=os.environ | LOOPBACK_ENV,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = _first_line(process, timeout)
        yield LocalRayCluster(**json.loads(line))
    finally:
        if process.stdin:
            process.stdin.close()  # a clean shutdown first
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of Ray's is left in the group
        process.wait()


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0].strip():
        raise RuntimeError(
            f"the local Ray cluster did not start within {timeout:.0f} s (exit {process.poll()})"
        )
    return lines[0]


if __name__ == "__main__":
    main()
