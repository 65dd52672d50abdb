"""The promotion decision alone: McNemar's exact test, the comparison, the policy and its settings."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from omegaconf import OmegaConf

from cifar_pipeline.orchestrator.hooks.promote import check_settings
from cifar_pipeline.orchestrator.planning.plan import PipelineError
from cifar_pipeline.promotion.comparison import compare, mcnemar_exact_p
from cifar_pipeline.promotion.policy import (
    FORCED,
    NOT_PROMOTED,
    PROMOTED,
    Policy,
    PolicyError,
    decide,
)

NAMES = ["cat", "dog"]


def test_mcnemar_exact_p_equals_the_hand_computed_binomial_tail() -> None:
    # 1 image only the candidate gets right, 9 only the champion: under "equally good" each
    # discordant image is a fair coin, so p = 2 * P(X <= 1), X ~ Binomial(10, 1/2)
    assert mcnemar_exact_p(1, 9) == pytest.approx(2 * (comb(10, 0) + comb(10, 1)) / 2**10)  # 0.021484375
    assert mcnemar_exact_p(9, 1) == mcnemar_exact_p(1, 9)  # two-sided: symmetric
    assert mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(0, 0) == 1.0  # no discordant image: no evidence either way
    assert mcnemar_exact_p(0, 20) == pytest.approx(2 / 2**20)


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="counts must be >= 0"):
        mcnemar_exact_p(-1, 3)


def test_comparison_counts_paired_outcomes_and_per_class_accuracy() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    candidate = np.array([0, 0, 1, 1, 1, 1])  # wrong on image 2
    champion = np.array([0, 1, 1, 1, 0, 0])  # wrong on images 1, 2, 4, 5
    result = compare(labels, candidate, champion, NAMES)
    assert result.candidate_accuracy == pytest.approx(5 / 6)
    assert result.champion_accuracy == pytest.approx(2 / 6)
    assert (result.candidate_only_correct, result.champion_only_correct) == (3, 0)
    assert result.p_value == pytest.approx(mcnemar_exact_p(3, 0))
    assert result.candidate_per_class == pytest.approx([2 / 3, 1.0])
    assert result.champion_per_class == pytest.approx([1 / 3, 1 / 3])
    assert result.difference == pytest.approx(3 / 6)


def test_comparison_refuses_predictions_for_other_images() -> None:
    with pytest.raises(ValueError, match="same images"):
        compare(np.array([0, 1]), np.array([0]), np.array([0, 1]), NAMES)


def _comparison(candidate_right: int, champion_right: int, images: int = 100):
    """Candidate right on the first `candidate_right` images, champion on the last `champion_right`."""
    labels = np.zeros(images, dtype=np.int64)
    candidate = np.where(np.arange(images) < candidate_right, 0, 1)
    champion = np.where(np.arange(images) >= images - champion_right, 0, 1)
    return compare(labels, candidate, champion, NAMES)


@pytest.mark.parametrize(
    ("policy", "candidate", "champion", "promoted"),
    [
        (Policy(), 90, 90, True),  # a tie is not worse
        (Policy(), 89, 90, False),  # any loss, with the default tolerance 0
        (Policy(tolerance=0.01), 89, 90, True),  # a loss within the tolerance
        (Policy(tolerance=0.01), 88, 90, False),
        (Policy(rule="significantly_better"), 90, 90, False),  # a tie is no improvement
        (Policy(rule="significantly_better"), 92, 90, False),  # better by noise: p is large
        (Policy(rule="significantly_better"), 100, 80, True),  # 20 discordant images, all one way
    ],
)
def test_policy(policy: Policy, candidate: int, champion: int, promoted: bool) -> None:
    verdict = decide(policy, _comparison(candidate, champion), "0123456789abcdef", has_champion=True)
    assert verdict.promote is promoted
    assert verdict.outcome == (PROMOTED if promoted else NOT_PROMOTED)
    assert (
        f"candidate {candidate / 100:.4f} vs champion {champion / 100:.4f} on data 0123456789ab, p="
        in verdict.reason
    )


def test_first_model_is_promoted_without_comparison() -> None:
    verdict = decide(Policy(), None, has_champion=False)
    assert (verdict.promote, verdict.outcome) == (True, PROMOTED)
    assert "no champion" in verdict.reason


def test_force_promotes_a_worse_candidate_and_says_so() -> None:
    verdict = decide(Policy(force=True), _comparison(50, 90), "sha256:abc", has_champion=True)
    assert (verdict.promote, verdict.outcome) == (True, FORCED)
    assert "worse than the champion by 0.4000" in verdict.reason


def test_a_champion_that_cannot_be_compared_is_kept_unless_forced() -> None:
    why = "champion version 1 was trained on classes ['a'], the candidate on ['b']"
    kept = decide(Policy(), None, has_champion=True, not_comparable=why)
    assert (kept.promote, kept.outcome) == (False, NOT_PROMOTED)
    assert why in kept.reason
    assert "promote.force=true" in kept.reason
    forced = decide(Policy(force=True), None, has_champion=True, not_comparable=why)
    assert (forced.promote, forced.outcome) == (True, FORCED)


def _settings(**changes: object):
    base = {
        "registered_model": "cifar-classifier",
        "alias": "champion",
        "previous_alias": "previous",
        "policy": "not_worse",
        "tolerance": 0.0,
        "alpha": 0.05,
        "force": False,
    }
    return OmegaConf.create(base | changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"policy": "sometimes"},
            r"promote\.policy='sometimes': expected one of not_worse, significantly_better",
        ),
        ({"tolerance": -0.01}, r"promote\.tolerance=-0\.01: expected a number from 0 up to"),
        ({"tolerance": "a bit"}, r"promote\.tolerance='a bit'"),
        ({"alpha": 0}, r"promote\.alpha=0: expected a number between 0 and 1"),
        ({"force": "maybe"}, r"promote\.force='maybe': expected true or false"),
        (
            {"previous_alias": "champion"},
            r"promote\.previous_alias='champion': must differ from promote\.alias",
        ),
        ({"alias": ""}, r"promote\.alias='': expected an alias name"),
    ],
)
def test_bad_settings_name_their_key(changes: dict[str, object], message: str) -> None:
    with pytest.raises((PipelineError, PolicyError), match=message):
        check_settings(_settings(**changes))


def test_default_settings_are_valid_and_an_empty_model_turns_promotion_off() -> None:
    assert check_settings(_settings()) is True
    assert check_settings(_settings(registered_model="")) is False
