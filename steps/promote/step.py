"""promote: champion/challenger. Compare the tested candidate with the registry's champion
on the same images, register the candidate, and move the alias only if the policy says so.

Both models are run with ONNX Runtime from the ONNX files their inference images serve,
image by image on the candidate's test split; the report gives both accuracies, per-class
accuracy, the paired counts and McNemar's exact p-value. The candidate is registered as a
version of the registered model whatever the outcome, tagged with it; when it is promoted
the champion it replaces keeps the `previous` alias. Not promoting is a normal outcome:
the run finishes.

Artifacts: promotion/report.json, promotion/per_class_accuracy.png (when compared).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from cifar_pipeline import names
from cifar_pipeline.cli import parse_bool, run_main
from cifar_pipeline.dataset import read_dataset
from cifar_pipeline.promotion import registry
from cifar_pipeline.promotion.comparison import Comparison, compare, per_class_figure
from cifar_pipeline.promotion.models import ServedModel, load_served_model, why_not_comparable
from cifar_pipeline.promotion.policy import ALREADY_CHAMPION, NOT_PROMOTED, Policy, Verdict, decide
from cifar_pipeline.tracking import (
    PROMOTE,
    SYSTEMTEST,
    UpstreamError,
    download,
    lineage,
    require_step_run,
    step_run,
)

log = logging.getLogger(__name__)

CURRENT = "current"  # --champion-version: whatever the alias names when the step starts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--systemtest-run-id", required=True)
    parser.add_argument("--registered-model", default="cifar-classifier")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--previous-alias", default="previous")
    parser.add_argument("--policy", default="not_worse")
    parser.add_argument("--tolerance", type=float, default=0.0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--force", type=parse_bool, default=False)
    parser.add_argument(
        "--champion-version",
        default=CURRENT,
        help="the champion the pipeline planned with ('none': no champion); refused if the alias moved",
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def expected_champion(client: MlflowClient, args: argparse.Namespace) -> registry.Champion | None:
    """The champion now, checked against the one the pipeline planned with."""
    now = registry.champion(client, args.registered_model, args.alias)
    if (
        args.champion_version != CURRENT
        and (now.version if now else registry.NO_CHAMPION) != args.champion_version
    ):
        named = f"version {now.version}" if now else "no version"
        raise registry.ChampionMoved(
            f"{args.registered_model}@{args.alias} names {named}, "
            f"the pipeline planned with champion_version={args.champion_version}; run it again"
        )
    return now


def evaluate(
    client: MlflowClient,
    candidate: ServedModel,
    champion: registry.Champion,
    data_run_id: str,
    data_digest: str,
    work_dir: Path,
) -> tuple[Comparison | None, str]:
    """Both models on the candidate's test split; (None, why) when they cannot be compared."""
    label = f"champion {champion.name} version {champion.version}"
    served = load_served_model(client, champion.run_id, label, work_dir / "champion", champion.model_digest)
    test = read_dataset(download(data_run_id, "data", work_dir / "data")).test
    why = why_not_comparable(candidate, served, test.images, data_digest, client, work_dir)
    if why:
        return None, why
    log.info("comparing on %d test images", len(test.labels))
    comparison = compare(
        test.labels, candidate.predict(test.images), served.predict(test.images), candidate.class_names
    )
    return comparison, ""


def promote(
    client: MlflowClient, args: argparse.Namespace, version: str, current: registry.Champion | None
) -> None:
    """Move the alias; if it moved under us, the version says it was not promoted, and the step fails."""
    try:
        registry.promote(client, args.registered_model, args.alias, args.previous_alias, version, current)
    except registry.ChampionMoved as exc:
        client.set_model_version_tag(args.registered_model, version, registry.OUTCOME_TAG, NOT_PROMOTED)
        client.set_model_version_tag(args.registered_model, version, registry.REASON_TAG, str(exc))
        raise


def log_decision(
    verdict: Verdict, report: dict[str, Any], comparison: Comparison | None, version: str
) -> None:
    if comparison is not None:
        mlflow.log_metrics(comparison.metrics())
        figure = per_class_figure(
            comparison,
            f"candidate (version {version})",
            f"champion (version {report['champion']['version']})",
        )
        mlflow.log_figure(figure, "promotion/per_class_accuracy.png")
    mlflow.log_dict(report, "promotion/report.json")
    mlflow.log_metric("promoted", float(verdict.promote))
    compared_with = report["champion"]["version"] if comparison is not None else ""
    mlflow.set_tags({
        registry.OUTCOME_TAG: verdict.outcome,
        registry.REASON_TAG: verdict.reason[:5000],
        registry.COMPARED_WITH_TAG: compared_with,
    })  # fmt: skip
    log.info("%s: %s", "promoted" if verdict.promote else "not promoted", verdict.reason)


def judge(
    client: MlflowClient,
    policy: Policy,
    candidate: ServedModel,
    current: registry.Champion | None,
    data_run_id: str,
    data_digest: str,
    work_dir: Path,
) -> tuple[Verdict, Comparison | None, str]:
    """The verdict, the comparison it rests on (if any), and why there is none."""
    if current is not None and current.model_digest == candidate.digest:
        reason = f"the candidate is the champion (version {current.version})"
        return Verdict(False, ALREADY_CHAMPION, reason), None, ""
    comparison, not_comparable = None, ""
    if current is not None:
        comparison, not_comparable = evaluate(client, candidate, current, data_run_id, data_digest, work_dir)
    verdict = decide(
        policy, comparison, data_digest, has_champion=current is not None, not_comparable=not_comparable
    )
    return verdict, comparison, not_comparable


def record(
    client: MlflowClient,
    args: argparse.Namespace,
    verdict: Verdict,
    candidate: ServedModel,
    current: registry.Champion | None,
    tags: dict[str, str],
) -> str:
    """Register the candidate with the verdict, move the alias if promoted; its version."""
    if current is not None and verdict.outcome == ALREADY_CHAMPION:
        return current.version  # nothing to record: the registry already says it all
    tags = {registry.OUTCOME_TAG: verdict.outcome, registry.REASON_TAG: verdict.reason[:5000], **tags}
    version = registry.register(client, args.registered_model, candidate.run_id, candidate.digest, tags)
    if verdict.promote:
        promote(client, args, version, current)
    return version


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    policy = Policy.parse(
        {"policy": args.policy, "tolerance": args.tolerance, "alpha": args.alpha, "force": args.force}, "--"
    )
    if not args.registered_model or not args.alias or args.alias == args.previous_alias:
        raise ValueError(
            f"registered model {args.registered_model!r}, alias {args.alias!r} and previous alias "
            f"{args.previous_alias!r}: expected a model name and two different aliases"
        )
    systest_run = require_step_run(args.systemtest_run_id, SYSTEMTEST)
    if systest_run.data.tags.get(names.SYSTEMTEST_PASSED_TAG) != "true":
        raise UpstreamError(
            f"systemtest_run_id={args.systemtest_run_id!r}: the image did not pass its system test"
        )
    upstream = {"systemtest_run_id": args.systemtest_run_id, **lineage(systest_run)}
    client = MlflowClient()
    with step_run(PROMOTE, upstream) as run, tempfile.TemporaryDirectory(prefix="promote-") as work:
        model_run_id, data_run_id = upstream["model_run_id"], upstream["data_run_id"]
        data_digest = client.get_run(data_run_id).data.tags.get(names.DATA_DIGEST_TAG, f"run:{data_run_id}")
        candidate = load_served_model(
            client, model_run_id, f"candidate (train run {model_run_id})", Path(work)
        )
        current = expected_champion(client, args)
        verdict, comparison, not_comparable = judge(
            client, policy, candidate, current, data_run_id, data_digest, Path(work)
        )
        version = record(client, args, verdict, candidate, current, {
            registry.DECIDED_BY_TAG: run.info.run_id,
            registry.COMPARED_WITH_TAG: current.version if current and comparison else "",
            registry.IMAGE_TAG: client.get_run(upstream["image_run_id"]).data.tags.get(
                names.IMAGE_REF_TAG, ""),
            registry.DATA_DIGEST_TAG: data_digest,
            "systemtest.run_id": args.systemtest_run_id,
        })  # fmt: skip
        after = registry.champion(client, args.registered_model, args.alias)
        report = {
            "candidate": {"run_id": model_run_id, "model_digest": candidate.digest, "version": version},
            "champion": asdict(current) if current else None,
            "data_digest": data_digest,
            "policy": asdict(policy),
            "comparison": comparison.as_dict() if comparison else None,
            "not_comparable": not_comparable,
            "outcome": verdict.outcome,
            "promoted": verdict.promote,
            "reason": verdict.reason,
            "champion_after": after.version if after else None,
        }
        mlflow.set_tags({
            names.REGISTERED_MODEL_TAG: args.registered_model,
            names.REGISTERED_VERSION_TAG: version,
            registry.CHAMPION_AFTER_TAG: after.identity if after else registry.NO_CHAMPION,
        })  # fmt: skip
        log_decision(verdict, report, comparison, version)


if __name__ == "__main__":
    run_main(PROMOTE, main)
