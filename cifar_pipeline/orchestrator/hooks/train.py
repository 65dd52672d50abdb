"""The train step's hooks: the GPU request checked before anything runs, continuing an
interrupted run (not cacheable), and the quality gate that stops a pipeline going on to
build with a model below `train.min_accuracy`."""

from __future__ import annotations

from cifar_pipeline import names
from cifar_pipeline.orchestrator.hooks import Resolved, StepHooks
from cifar_pipeline.orchestrator.planning.plan import PipelineError
from cifar_pipeline.orchestrator.reporting.report import StepResult
from cifar_pipeline.orchestrator.running.docker_args import host_has_nvidia_gpu
from cifar_pipeline.tracking import QUALITY_GATE_TAG


class TrainHooks(StepHooks):
    gpus = False

    def check(self, planned: list[str]) -> str:
        if self.declaration.name not in planned:
            return ""
        device = self.ctx.cfg.train.device
        if device == "cpu":
            return ""
        self.gpus = host_has_nvidia_gpu()
        if device == "cuda" and not self.gpus:
            raise PipelineError("train.device=cuda but no NVIDIA GPU on this host (nvidia-smi -L)")
        return ""

    def resolve(self, upstream: dict[str, str]) -> Resolved:
        if resume := upstream.get("resume_run_id", ""):
            return Resolved(
                {"resume_run_id": resume},
                gpus=self.gpus,
                uncacheable=f"continues the interrupted train run {resume}",
            )
        return Resolved(gpus=self.gpus)

    def after(self, result: StepResult, goes_on: bool) -> None:
        if not goes_on or result.status not in (names.FINISHED, "REUSED"):
            return
        run = self.ctx.client.get_run(result.run_id)
        if run.data.tags.get(QUALITY_GATE_TAG) == "failed":
            accuracy = run.data.metrics.get("final_test_accuracy", float("nan"))
            raise PipelineError(
                f"train run {result.run_id}: test accuracy {accuracy:.4f} is below "
                f"train.min_accuracy={self.ctx.cfg.train.min_accuracy}; the model is not blessed, "
                "stopping before build"
            )
