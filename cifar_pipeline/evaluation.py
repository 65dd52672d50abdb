"""Final evaluation of a trained model: predictions (optionally with flip TTA), per-class
accuracy, confusion matrix, and the figures people look at in the MLflow UI."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

MISCLASSIFIED_SHOWN = 32


@torch.no_grad()
def predict(
    model: nn.Module, images: np.ndarray, device: torch.device, flip_tta: bool = False, batch_size: int = 512
) -> np.ndarray:
    """Logits for uint8 NHWC images; with `flip_tta`, averaged with the mirrored images' logits."""
    model.to(device).eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        logits = model(batch).float()
        if flip_tta:
            logits = (logits + model(batch.flip(2)).float()) / 2  # NHWC: dim 2 is width
        outputs.append(logits.cpu())
    model.cpu()
    return torch.cat(outputs).numpy()


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    totals = confusion.sum(axis=1)
    return np.divide(np.diag(confusion), totals, out=np.zeros(len(totals)), where=totals > 0)


def curves_figure(history: dict[str, list[tuple[int, float]]]) -> Figure:
    """Loss and accuracy per epoch, train and test side by side."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, accuracy_ax = figure.subplots(1, 2)
    for key, series in sorted(history.items()):
        ax = loss_ax if key.endswith("loss") else accuracy_ax
        epochs, values = zip(*series, strict=True) if series else ((), ())
        ax.plot(epochs, values, marker="o", label=key)
    for ax, title in ((loss_ax, "loss"), (accuracy_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return figure


def confusion_figure(confusion: np.ndarray, class_names: list[str]) -> Figure:
    size = max(5.0, len(class_names) * 0.5)
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(confusion, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(class_names) <= 20:
        for (row, col), count in np.ndenumerate(confusion):
            colour = "white" if count > confusion.max() / 2 else "black"
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=ax)
    ax.set_title("Confusion matrix (test split)")
    return figure


def misclassified_figure(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, class_names: list[str]
) -> Figure:
    """Up to 32 misclassified test images, titled `true -> predicted`."""
    wrong = np.flatnonzero(labels != predictions)[:MISCLASSIFIED_SHOWN]
    columns = 8
    rows = max(1, -(-len(wrong) // columns))
    figure = Figure(figsize=(columns * 1.3, rows * 1.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, index in zip(axes.flat, wrong, strict=False):
        ax.imshow(images[index], interpolation="nearest")
        ax.set_title(f"{class_names[labels[index]]}\n-> {class_names[predictions[index]]}", fontsize=7)
    figure.suptitle(f"Misclassified test images ({len(wrong)} shown)", fontsize=10)
    return figure
