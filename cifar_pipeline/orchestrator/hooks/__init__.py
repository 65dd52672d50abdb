"""What the orchestrator does particularly for one step, behind one small interface.

A step's declaration (step_declarations.py) names its hooks class, if it needs one; the
loop calls every step's hooks at the same points and never names a step:

- `check`: before anything runs (no container, no image): refuse bad settings, naming the
  key; return a reason to leave the step out of this pipeline ("" to keep it).
- `resolve`: as the step starts: parameters known only now (a champion, a reference),
  inputs of its cache key that are not upstream runs, read-only mounts, GPUs.
- `after`: once the step has a run (ran or reused): verdicts for the report, and a
  PipelineError to stop the pipeline (a refused data set, a model below the gate).
- `key_after`: a second key the finished run's output also stands under.
- `output_gone`: what a reusable run's output outside MLflow lacks now.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_pipeline.orchestrator.planning.cache import StepKey
from cifar_pipeline.orchestrator.reporting.report import PipelineReport, StepResult
from cifar_pipeline.step_declarations import StepDeclaration


class ImageCheck(Protocol):
    def image_present(self, image_id: str) -> bool: ...


@dataclass
class HookContext:
    cfg: DictConfig
    client: MlflowClient
    report: PipelineReport
    engine: ImageCheck | None = None  # set once the step runner is ready
    shared: dict[str, Any] = field(default_factory=dict)  # what hooks read once and share


@dataclass
class Resolved:
    params: dict[str, Any] = field(default_factory=dict)  # added to, or replacing, the config's
    key_inputs: dict[str, str] = field(default_factory=dict)
    mounts: list[Path] = field(default_factory=list)  # host paths, mounted read-only
    gpus: bool = False
    uncacheable: str = ""  # why this run cannot be cached ("": it can)


class StepHooks:
    """The default: nothing particular. Subclasses override what their step needs."""

    def __init__(self, declaration: StepDeclaration, ctx: HookContext) -> None:
        self.declaration = declaration
        self.ctx = ctx

    def check(self, planned: list[str]) -> str:
        return ""

    def resolve(self, upstream: dict[str, str]) -> Resolved:
        return Resolved()

    def after(self, result: StepResult, goes_on: bool) -> None:
        return None

    def key_after(self, key: StepKey, run: Run) -> StepKey | None:
        return None

    def output_gone(self, run: Run) -> str:
        return ""


def load_hooks(declaration: StepDeclaration, ctx: HookContext) -> StepHooks:
    """The hooks the declaration names ("module:Class"), or the default."""
    if not declaration.hooks:
        return StepHooks(declaration, ctx)
    module, _, name = declaration.hooks.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, StepHooks)):
        raise TypeError(f"step {declaration.name}: hooks {declaration.hooks!r} is not a StepHooks class")
    hooks: StepHooks = cls(declaration, ctx)
    return hooks
