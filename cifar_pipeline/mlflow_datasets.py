"""A data set's splits as MLflow datasets: the fetch run's inputs, and the data the train
run's model is measured on (its evaluation metrics name the split by name and digest)."""

from __future__ import annotations

import warnings

from mlflow.data.numpy_dataset import NumpyDataset, from_numpy

from cifar_pipeline.dataset import Dataset

SPLITS = ("train", "test")
CONTEXTS = {"train": "training", "test": "test"}  # MLflow's input contexts


def split_dataset(dataset: Dataset, split: str) -> NumpyDataset:
    """`split` ("train" or "test") as an MLflow dataset named `<source>-<split>`, with the
    data set's content digest (not MLflow's own hash of the arrays: that reads them all)."""
    manifest = dataset.manifest
    data = dataset.train if split == "train" else dataset.test
    with warnings.catch_warnings():
        # A source that is not a URL (a path, "sklearn.datasets.load_digits") resolves to
        # MLflow's local-artifact source after a warning that it "can be interpreted in
        # multiple ways"; that is the intended reading.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return from_numpy(
            data.images,
            source=manifest["source"]["url"],
            targets=data.labels,
            name=f"{manifest['source'].get('name', 'data')}-{split}",
            digest=manifest["digest"][:12],
        )
