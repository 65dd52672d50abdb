"""The promote step's hooks: its settings checked before anything runs (promotion off when
no registered model is named), the champion it will be compared with (a parameter and an
input of its key, read as the pipeline plans and again as the step starts), the key its
decision also stands under, and the promotion verdict."""

from __future__ import annotations

import logging
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_pipeline import names
from cifar_pipeline.orchestrator.hooks import HookContext, Resolved, StepHooks
from cifar_pipeline.orchestrator.planning.cache import StepKey
from cifar_pipeline.orchestrator.planning.plan import PipelineError
from cifar_pipeline.orchestrator.reporting.report import StepResult, Verdict
from cifar_pipeline.promotion import registry
from cifar_pipeline.promotion.policy import ALREADY_CHAMPION, FORCED, PROMOTED, Policy, PolicyError
from cifar_pipeline.tracking import TRAIN, UpstreamError, require_step_run

log = logging.getLogger(__name__)

OFF = "off: promote.registered_model is empty, nothing registered"


def check_settings(settings: DictConfig) -> bool:
    """Refuse bad `promote.*` values, naming the key; False when promotion is off."""
    try:
        Policy.parse(settings)
    except PolicyError as exc:
        raise PipelineError(str(exc)) from None
    if not settings.registered_model:
        return False
    for key in ("alias", "previous_alias"):
        if not settings.get(key):
            raise PipelineError(f"promote.{key}={settings.get(key)!r}: expected an alias name")
    if settings.alias == settings.previous_alias:
        raise PipelineError(
            f"promote.previous_alias={settings.previous_alias!r}: must differ from promote.alias"
        )
    return True


def champion(client: MlflowClient, settings: DictConfig) -> registry.Champion | None:
    """The champion now; one whose model cannot be loaded stops the pipeline, naming the version."""
    try:
        current = registry.champion(client, settings.registered_model, settings.alias)
    except MlflowException as exc:
        raise PipelineError(f"promote: the registry cannot be read: {exc}") from exc
    if current is None:
        return None
    try:
        require_step_run(current.run_id, TRAIN, client)
    except UpstreamError as exc:
        raise PipelineError(
            f"promote: {settings.registered_model}@{settings.alias} names version {current.version}, "
            f"whose model cannot be loaded ({exc}); point the alias at a loadable version or delete it"
        ) from None
    return current


def champion_inputs(current: registry.Champion | None) -> tuple[str, dict[str, str]]:
    """The step's `champion_version` parameter, and the champion as an input of its key."""
    if current is None:
        return registry.NO_CHAMPION, {"champion": registry.NO_CHAMPION}
    return current.version, {"champion": current.identity}


def key_after(key: StepKey | None, promote_run: Any) -> StepKey | None:
    """The key a promote run's decision also stands under: with the champion it left."""
    after = promote_run.data.tags.get(registry.CHAMPION_AFTER_TAG)
    if key is None or not after:
        return None
    return key.with_input("champion", after)


def summary_line(client: MlflowClient, promote_run_id: str) -> str:
    """ "promoted: cifar-classifier version 4 is @champion (candidate 0.94 vs champion 0.93 ...)"."""
    tags = client.get_run(promote_run_id).data.tags
    outcome = tags.get(registry.OUTCOME_TAG, "")
    name, version = tags.get(names.REGISTERED_MODEL_TAG, ""), tags.get(names.REGISTERED_VERSION_TAG, "")
    verdict = {PROMOTED: "promoted", FORCED: "promoted", ALREADY_CHAMPION: "unchanged"}.get(
        outcome, "not promoted"
    )
    compared = tags.get(registry.COMPARED_WITH_TAG, "")
    detail = f"{outcome}, compared with version {compared}" if compared else outcome
    return f"{verdict}: {name} version {version} ({detail}): {tags.get(registry.REASON_TAG, '')}"


def planned_champion(ctx: HookContext) -> registry.Champion | None:
    """The champion as the pipeline plans, read once (None: none yet, or promotion is off)."""
    if "champion" not in ctx.shared:
        on = check_settings(ctx.cfg.promote)
        ctx.shared["champion"] = champion(ctx.client, ctx.cfg.promote) if on else None
    current: registry.Champion | None = ctx.shared["champion"]
    return current


class PromoteHooks(StepHooks):
    def check(self, planned: list[str]) -> str:
        if not check_settings(self.ctx.cfg.promote):
            self.ctx.report.verdicts["promotion"] = Verdict(
                "promotion", [OFF], names.PROMOTION_VERDICT_TAG, True
            )
            return OFF
        if self.declaration.name in planned:
            planned_champion(self.ctx)  # a broken champion stops the pipeline before training
        return ""

    def resolve(self, upstream: dict[str, str]) -> Resolved:
        # the champion as it is now, after training and testing
        version, inputs = champion_inputs(champion(self.ctx.client, self.ctx.cfg.promote))
        params = {"champion_version": version, "force": str(self.ctx.cfg.promote.force).lower()}
        return Resolved(params, inputs)

    def after(self, result: StepResult, goes_on: bool) -> None:
        if result.status not in (names.FINISHED, "REUSED"):
            return
        line = summary_line(self.ctx.client, result.run_id)
        log.info("promotion: %s", line)
        self.ctx.report.verdicts["promotion"] = Verdict(
            "promotion", [line], names.PROMOTION_VERDICT_TAG, True
        )

    def key_after(self, key: StepKey, run: Run) -> StepKey | None:
        return key_after(key, run)

    def output_gone(self, run: Run) -> str:
        name, version = (
            run.data.tags.get(names.REGISTERED_MODEL_TAG, ""),
            run.data.tags.get(names.REGISTERED_VERSION_TAG, ""),
        )
        try:
            self.ctx.client.get_model_version(name, version)
        except MlflowException:
            return f"the version it registered ({name} {version}) is gone"
        return ""
