"""Pictures of a dataset for people: sample images per class and the class balance.

Built on `matplotlib.figure.Figure` directly (no pyplot): no global state, no GUI backend,
safe in a headless container.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cifar_pipeline.dataset import Split

MAX_CLASSES_SHOWN = 50  # a grid taller than this is unreadable; the title says what was cut


def sample_grid(split: Split, class_names: list[str], per_class: int = 10, seed: int = 0) -> Figure:
    """One row per class: `per_class` images drawn at random (seeded) from that class."""
    rng = np.random.default_rng(seed)
    shown = class_names[:MAX_CLASSES_SHOWN]
    figure = Figure(figsize=(per_class * 0.8 + 1.6, len(shown) * 0.8 + 0.6), layout="constrained")
    axes = figure.subplots(len(shown), per_class, squeeze=False)
    for row, name in enumerate(shown):
        members = np.flatnonzero(split.labels == row)
        picks = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if col < len(picks):
                ax.imshow(split.images[picks[col]], interpolation="nearest")
        axes[row][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    cut = (
        f" (first {MAX_CLASSES_SHOWN} of {len(class_names)} classes)" if len(shown) < len(class_names) else ""
    )
    figure.suptitle(f"Random training images per class{cut}", fontsize=10)
    return figure


def class_balance(class_names: list[str], counts: dict[str, list[int]]) -> Figure:
    """Grouped bars: images per class in each split, labelled with the counts."""
    positions = np.arange(len(class_names))
    width = 0.8 / max(len(counts), 1)
    figure = Figure(figsize=(max(6.0, len(class_names) * 0.6), 4.0), layout="constrained")
    ax = figure.subplots()
    for i, (split, values) in enumerate(counts.items()):
        bars = ax.bar(positions + (i - (len(counts) - 1) / 2) * width, values, width, label=split)
        if len(class_names) <= 20:
            ax.bar_label(bars, fontsize=7)
    rotated = len(class_names) > 10
    ax.set_xticks(positions, class_names, rotation=45 if rotated else 0, ha="right" if rotated else "center")
    ax.set_ylabel("images")
    ax.set_title("Class balance")
    ax.legend()
    return figure


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
