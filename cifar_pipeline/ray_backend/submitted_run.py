"""A project run that is a Ray job: MLflow's `SubmittedRun`, answered from Ray's job records.

`wait`, `get_status` and `cancel` map onto the job's; when the job has ended, its log goes
to the run's `logs/` artifact, the run is tagged with the node the job ran on, and a run
its container could not end (killed, crashed) gets the job's outcome as its status.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.projects.submitted_run import SubmittedRun
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus

from cifar_pipeline import names

log = logging.getLogger(__name__)

# Ray's job statuses -> MLflow's run statuses
RUN_STATUS = {
    JobStatus.PENDING: "SCHEDULED",
    JobStatus.RUNNING: names.RUNNING,
    JobStatus.SUCCEEDED: names.FINISHED,
    JobStatus.FAILED: names.FAILED,
    JobStatus.STOPPED: names.KILLED,
}
ENDED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED})
JOB_LOG_ARTIFACT = "ray-job.log"  # under logs/


def run_status(job_status: JobStatus | str) -> str:
    """The MLflow run status of a Ray job status."""
    try:
        return RUN_STATUS[JobStatus(job_status)]
    except ValueError:
        raise ValueError(
            f"unknown Ray job status {job_status!r}; expected one of {', '.join(s.value for s in JobStatus)}"
        ) from None


class RaySubmittedRun(SubmittedRun):
    def __init__(
        self,
        run_id: str,
        submission_id: str,
        jobs: Any,  # ray.job_submission.JobSubmissionClient
        tracking: MlflowClient,
        poll_seconds: float = 1.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self._run_id = run_id
        self.submission_id = submission_id
        self.jobs = jobs
        self.tracking = tracking
        self.poll_seconds = poll_seconds
        self.stop_timeout = stop_timeout
        self._finished = False
        self._node_tagged = False

    @property
    def run_id(self) -> str:
        return self._run_id

    def _job_status(self) -> JobStatus:
        return JobStatus(self.jobs.get_job_status(self.submission_id))

    def get_status(self) -> str:
        status = self._job_status()
        if status != JobStatus.PENDING:
            self._tag_node()
        return run_status(status)

    def wait(self) -> bool:
        """Until the job ends; True if it succeeded."""
        while (status := self._job_status()) not in ENDED:
            if status == JobStatus.RUNNING:
                self._tag_node()
            time.sleep(self.poll_seconds)
        self._finish(status)
        return status == JobStatus.SUCCEEDED

    def cancel(self) -> None:
        """Stop the job (its container gets SIGTERM, then its grace period) and wait for its end."""
        if self._job_status() not in ENDED:
            self.jobs.stop_job(self.submission_id)
        deadline = time.monotonic() + self.stop_timeout
        while (status := self._job_status()) not in ENDED:
            if time.monotonic() > deadline:
                log.warning("Ray job %s did not stop within %.0f s", self.submission_id, self.stop_timeout)
                return
            time.sleep(self.poll_seconds)
        self._finish(status)

    def _tag_node(self) -> None:
        if self._node_tagged:
            return
        node = getattr(self.jobs.get_job_info(self.submission_id), "driver_node_id", None)
        if node:
            self.tracking.set_tag(self._run_id, names.RAY_NODE_TAG, node)
            self._node_tagged = True

    def _finish(self, job_status: JobStatus) -> None:
        """Once: the job's log on the run, its node, and a status for a run left RUNNING."""
        if self._finished:
            return
        self._finished = True
        self._tag_node()
        with tempfile.TemporaryDirectory(prefix="ray-job-") as folder:
            path = Path(folder) / JOB_LOG_ARTIFACT
            path.write_text(self.jobs.get_job_logs(self.submission_id))
            self.tracking.log_artifact(self._run_id, str(path), "logs")
        run = self.tracking.get_run(self._run_id)
        if run.info.status in (names.RUNNING, RUN_STATUS[JobStatus.PENDING]):
            # the container ended without ending its run (killed, or it never started MLflow)
            self.tracking.set_terminated(self._run_id, run_status(job_status))
