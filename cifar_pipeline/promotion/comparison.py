"""Champion/challenger on the same images: accuracies, per-class accuracy, paired counts
and the exact McNemar test that tells an improvement from noise.

Both models predict every image of one test split, so the comparison is paired: only the
images one model gets right and the other wrong carry information about which is better.
McNemar's exact test asks whether those discordant images split unevenly enough that
chance (each one equally likely to favour either model) would rarely do it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import binomtest


def mcnemar_exact_p(candidate_only: int, champion_only: int) -> float:
    """Two-sided exact McNemar p-value of the discordant counts.

    Under "both models are as good", each discordant image favours either model with
    probability 1/2: a two-sided binomial test of `candidate_only` successes in all the
    discordant images. No discordant image at all is no evidence either way: p = 1.
    """
    if candidate_only < 0 or champion_only < 0:
        raise ValueError(f"counts must be >= 0, got {candidate_only}, {champion_only}")
    discordant = candidate_only + champion_only
    if discordant == 0:
        return 1.0
    return float(binomtest(candidate_only, discordant, 0.5, alternative="two-sided").pvalue)


def per_class_accuracy(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> list[float]:
    correct = np.bincount(labels[predictions == labels], minlength=num_classes)
    totals = np.bincount(labels, minlength=num_classes)
    return [float(c / t) if t else 0.0 for c, t in zip(correct, totals, strict=True)]


@dataclass(frozen=True)
class Comparison:
    """The two models on the candidate's test split, image by image."""

    images: int
    class_names: list[str]
    candidate_accuracy: float
    champion_accuracy: float
    candidate_per_class: list[float]
    champion_per_class: list[float]
    candidate_only_correct: int  # images the candidate gets right and the champion wrong
    champion_only_correct: int  # and the reverse
    p_value: float  # exact McNemar, two-sided

    @property
    def difference(self) -> float:
        return self.candidate_accuracy - self.champion_accuracy

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "difference": self.difference}

    def metrics(self) -> dict[str, float]:
        """What the run that decided shows in the UI's metric columns."""
        return {
            "candidate_accuracy": self.candidate_accuracy,
            "champion_accuracy": self.champion_accuracy,
            "accuracy_difference": self.difference,
            "candidate_only_correct": float(self.candidate_only_correct),
            "champion_only_correct": float(self.champion_only_correct),
            "mcnemar_p_value": self.p_value,
        }


def compare(
    labels: np.ndarray,
    candidate_predictions: np.ndarray,
    champion_predictions: np.ndarray,
    class_names: list[str],
) -> Comparison:
    """Compare two models' predicted classes for the same labelled images."""
    if not (labels.shape == candidate_predictions.shape == champion_predictions.shape):
        raise ValueError(
            f"labels {labels.shape}, candidate {candidate_predictions.shape} and champion "
            f"{champion_predictions.shape} predictions must be for the same images"
        )
    if len(labels) == 0:
        raise ValueError("no test images to compare the models on")
    candidate_right = candidate_predictions == labels
    champion_right = champion_predictions == labels
    candidate_only = int((candidate_right & ~champion_right).sum())
    champion_only = int((champion_right & ~candidate_right).sum())
    return Comparison(
        images=len(labels),
        class_names=list(class_names),
        candidate_accuracy=float(candidate_right.mean()),
        champion_accuracy=float(champion_right.mean()),
        candidate_per_class=per_class_accuracy(labels, candidate_predictions, len(class_names)),
        champion_per_class=per_class_accuracy(labels, champion_predictions, len(class_names)),
        candidate_only_correct=candidate_only,
        champion_only_correct=champion_only,
        p_value=mcnemar_exact_p(candidate_only, champion_only),
    )


def per_class_figure(comparison: Comparison, candidate_label: str, champion_label: str) -> Figure:
    """Per-class test accuracy of both models, bars side by side."""
    names = comparison.class_names
    figure = Figure(figsize=(max(6.0, len(names) * 0.7), 4), layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(names))
    width = 0.4
    for offset, values, label in (
        (-width / 2, comparison.champion_per_class, champion_label),
        (width / 2, comparison.candidate_per_class, candidate_label),
    ):
        ax.bar(positions + offset, values, width, label=label)
    ax.set_xticks(positions, names, rotation=45, ha="right")
    ax.set_ylim(0, 1.2)  # room above the bars for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncols=2, frameon=False)
    ax.set_title(
        f"Per-class accuracy on {comparison.images} test images (McNemar p={comparison.p_value:.3g})"
    )
    return figure
