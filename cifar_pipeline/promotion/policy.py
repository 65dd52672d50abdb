"""When a candidate replaces the champion: the policy (configs/promote/) and the verdict.

Pure decisions: nothing here reads a model or touches the registry.

- `not_worse` (default): promote unless the candidate's test accuracy is below the
  champion's by more than `tolerance` (an absolute accuracy difference, 0 by default).
- `significantly_better`: promote only when the candidate is more accurate AND McNemar's
  exact test gives p < `alpha`, so a few images' difference on a small test set is not an
  improvement.
- `force`: promote regardless; the report still says how the two compared.

A champion that cannot be compared with the candidate fairly (other classes, another
input, or trained on some of the candidate's test images) is never replaced unless forced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the orchestrator validates policies without numpy or scipy
    from cifar_pipeline.promotion.comparison import Comparison

NOT_WORSE, SIGNIFICANTLY_BETTER = "not_worse", "significantly_better"
RULES = (NOT_WORSE, SIGNIFICANTLY_BETTER)

# Outcomes, as the registry's version tag and the run's tag record them.
PROMOTED = "promoted"
FORCED = "promoted_forced"
NOT_PROMOTED = "not_promoted"
ALREADY_CHAMPION = "already_champion"

# Accuracies are ratios of image counts: compare them with this much float slack.
_EPSILON = 1e-12


class PolicyError(ValueError):
    """A promotion setting is not one the policy understands; the message names the key."""


def _fraction(values: Mapping[str, Any], key: str, prefix: str, zero_allowed: bool) -> float:
    value: Any = values.get(key)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not (0 <= value < 1 if zero_allowed else 0 < value < 1):
        expected = "from 0 up to (not including) 1" if zero_allowed else "between 0 and 1 (exclusive)"
        raise PolicyError(f"{prefix}{key}={value!r}: expected a number {expected}")
    return float(value)


@dataclass(frozen=True)
class Policy:
    rule: str = NOT_WORSE
    tolerance: float = 0.0
    alpha: float = 0.05
    force: bool = False

    @classmethod
    def parse(cls, values: Mapping[str, Any], prefix: str = "promote.") -> Policy:
        """The policy from config values (`promote.*`); a bad value raises PolicyError naming its key."""
        rule = values.get("policy")
        if rule not in RULES:
            raise PolicyError(f"{prefix}policy={rule!r}: expected one of {', '.join(RULES)}")
        force = values.get("force")
        if not isinstance(force, bool):
            raise PolicyError(f"{prefix}force={force!r}: expected true or false")
        tolerance = _fraction(values, "tolerance", prefix, zero_allowed=True)
        alpha = _fraction(values, "alpha", prefix, zero_allowed=False)
        return cls(str(rule), tolerance, alpha, force)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    outcome: str  # PROMOTED, FORCED, NOT_PROMOTED or ALREADY_CHAMPION
    reason: str


def describe(comparison: Comparison, data_digest: str) -> str:
    """The comparison in one line: `candidate 0.9410 vs champion 0.9570 on data 1a2b3c4d5e6f, p=0.003`."""
    return (
        f"candidate {comparison.candidate_accuracy:.4f} vs champion {comparison.champion_accuracy:.4f} "
        f"on data {data_digest.removeprefix('sha256:')[:12]}, p={comparison.p_value:.3g}"
    )


def judge(policy: Policy, comparison: Comparison) -> tuple[bool, str]:
    """Whether the comparison passes the policy, and why, before `force` is considered."""
    difference = comparison.difference
    if policy.rule == NOT_WORSE:
        if difference >= -policy.tolerance - _EPSILON:
            return True, f"not worse than the champion by more than tolerance {policy.tolerance:g}"
        return False, f"worse than the champion by {-difference:.4f} > tolerance {policy.tolerance:g}"
    if difference <= _EPSILON:
        return False, "not more accurate than the champion (policy significantly_better)"
    if comparison.p_value < policy.alpha:
        return True, f"significantly better (p < alpha {policy.alpha:g})"
    return False, f"better, but not significantly (p >= alpha {policy.alpha:g})"


def decide(
    policy: Policy,
    comparison: Comparison | None,
    data_digest: str = "",
    *,
    has_champion: bool,
    not_comparable: str = "",
) -> Verdict:
    """The verdict on a candidate that passed its system test.

    `comparison` is None when there is no champion, or when the champion cannot be
    compared with the candidate (`not_comparable` says why).
    """
    if not has_champion:
        return Verdict(True, PROMOTED, "first model: there is no champion to compare with")
    if comparison is None:
        why = not_comparable or "the champion could not be compared with the candidate"
        if policy.force:
            return Verdict(True, FORCED, f"forced (promote.force=true); not compared: {why}")
        return Verdict(False, NOT_PROMOTED, f"not compared: {why}; promote.force=true promotes it anyway")
    passes, why = judge(policy, comparison)
    line = f"{describe(comparison, data_digest)}: {why}"
    if passes:
        return Verdict(True, PROMOTED, line)
    if policy.force:
        return Verdict(True, FORCED, f"forced (promote.force=true); {line}")
    return Verdict(False, NOT_PROMOTED, line)
