"""The build step's hooks: a build run can only be reused while its image is still in
the Docker engine the steps run on."""

from __future__ import annotations

from mlflow.entities import Run

from cifar_pipeline import names
from cifar_pipeline.orchestrator.hooks import StepHooks


class BuildHooks(StepHooks):
    def output_gone(self, run: Run) -> str:
        engine = self.ctx.engine
        if engine is not None and not engine.image_present(run.data.tags.get(names.IMAGE_ID_TAG, "")):
            return "its image is no longer in the Docker engine"
        return ""
