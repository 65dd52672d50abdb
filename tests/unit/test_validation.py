"""Data validation as pure functions: statistics, schema, drift measures, checks and settings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifar_pipeline.dataset import Split
from cifar_pipeline.validation import checks, statistics
from cifar_pipeline.validation.settings import Settings, SettingsError

NAMES = ["cat", "dog", "ship"]


def noise(count: int, seed: int, labels: list[int] | None = None) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return Split(images, np.asarray(labels if labels is not None else [i % 3 for i in range(count)]))


def stats_of(train: Split, test: Split, names: list[str] = NAMES, blank_std: float = 0.01) -> dict:
    return statistics.compute(train, test, names, blank_std)


def by_name(found: list[checks.Check]) -> dict[str, checks.Check]:
    return {check.name: check for check in found}


def test_statistics_count_classes_pixels_and_images() -> None:
    train = noise(30, 0, [0] * 20 + [1] * 6 + [2] * 4)
    train.images[0] = 0  # all black: mean and std of the red channel move accordingly
    stats = stats_of(train, noise(9, 1))
    split = stats["splits"]["train"]
    assert split["count"] == 30
    assert split["class_counts"] == [20, 6, 4]
    assert split["class_shares"] == pytest.approx([20 / 30, 6 / 30, 4 / 30])
    pixels = train.images[..., 0].astype(float) / 255
    assert split["channel_mean"][0] == pytest.approx(pixels.mean())
    assert split["channel_std"][0] == pytest.approx(pixels.std())
    assert [sum(h) for h in split["channel_histograms"]] == [30 * 32 * 32] * 3
    assert len(split["channel_histograms"][0]) == statistics.HISTOGRAM_BINS
    per_image = train.images.reshape(30, -1).astype(float) / 255
    assert split["brightness"]["mean"] == pytest.approx(per_image.mean(axis=1).mean())
    assert split["contrast"]["p01"] == pytest.approx(np.quantile(per_image.std(axis=1), 0.01))
    assert split["blank_images"] == 1
    assert stats["image_shape"] == [32, 32, 3]
    assert stats["dtype"] == "uint8"
    assert stats["label_range"] == [0, 2]


def test_duplicates_conflicting_labels_and_leakage_are_counted_by_image_bytes() -> None:
    train, test = noise(12, 0), noise(6, 1)
    train.images[1] = train.images[0]  # a duplicate with another label (0 and 1)
    train.images[3] = train.images[0]  # and a third copy, same label as the first
    test.images[0] = train.images[5]
    test.images[1] = train.images[5]  # the same leaked image twice
    test.images[2] = train.images[6]
    stats = stats_of(train, test)
    assert stats["splits"]["train"]["duplicate_images"] == 2
    assert stats["splits"]["train"]["conflicting_labels"] == 1
    assert stats["splits"]["test"]["duplicate_images"] == 1
    assert stats["leaked_test_images"] == 3
    assert stats["leaked_distinct_images"] == 2


def test_same_data_has_no_anomaly() -> None:
    stats = stats_of(noise(60, 0), noise(15, 1))
    found = checks.validate(stats, Settings(), reference=stats)
    assert [check.line() for check in found if check.anomaly] == []
    assert checks.status(found) == "passed"
    assert {check.name for check in found} >= {"leakage", "drift.class_shares", "drift.pixels.red"}


def test_without_a_reference_there_is_no_drift_check_and_the_schema_is_the_data_s_own() -> None:
    stats = stats_of(noise(60, 0), noise(15, 1))
    found = checks.validate(stats, Settings())
    assert not any(check.name.startswith("drift") for check in found)
    assert checks.status(found) == "passed"
    assert checks.infer_schema(stats, Settings()) == {
        "class_names": NAMES,
        "image_shape": [32, 32, 3],
        "dtype": "uint8",
        "label_range": [0, 2],
        "min_images_per_class": 5,
    }


def test_class_share_drift_is_the_l_infinity_distance_by_class_name() -> None:
    reference = stats_of(noise(40, 0, [0] * 20 + [1] * 10 + [2] * 10), noise(6, 1))
    current = stats_of(noise(40, 2, [0] * 10 + [1] * 10 + [2] * 20), noise(6, 3))
    assert checks.class_share_drift(current, reference) == pytest.approx(0.25)
    check = by_name(checks.validate(current, Settings(), reference=reference))["drift.class_shares"]
    assert (check.value, check.threshold, check.verdict) == (pytest.approx(0.25), 0.05, "warn")


def test_pixel_divergence_is_jensen_shannon_base_2() -> None:
    reference = stats_of(noise(30, 0), noise(6, 1))
    current = stats_of(noise(30, 0), noise(6, 1))
    mine = np.asarray(current["splits"]["train"]["channel_histograms"][1], float)
    mine[:] = 0
    mine[0] = 1.0  # every green pixel in the darkest bin
    current["splits"]["train"]["channel_histograms"][1] = mine.tolist()
    theirs = np.asarray(reference["splits"]["train"]["channel_histograms"][1], float)
    p, q = mine / mine.sum(), theirs / theirs.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        return float(sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0))

    divergences = checks.pixel_divergences(current, reference)
    assert divergences[1] == pytest.approx((kl(p, m) + kl(q, m)) / 2)
    assert divergences[0] == pytest.approx(0.0, abs=1e-12)


def test_darkened_data_is_flagged_as_drift_and_only_warns_by_default() -> None:
    train, test = noise(300, 0), noise(60, 1)
    reference = stats_of(train, test)
    dark = stats_of(Split(train.images // 2, train.labels), Split(test.images // 2, test.labels))
    found = by_name(checks.validate(dark, Settings(), reference=reference))
    for channel in statistics.CHANNELS:
        check = found[f"drift.pixels.{channel}"]
        assert check.verdict == "warn"
        assert check.value > 0.2  # half of the histogram's bins are now empty
        assert f"{check.value:.4f}" in check.detail
    assert checks.status(list(found.values())) == "warned"
    strict = checks.validate(dark, Settings(drift_policy="error"), reference=reference)
    assert checks.status(strict) == "failed"


def test_leakage_is_an_error_naming_the_count() -> None:
    train, test = noise(30, 0), noise(9, 1)
    test.images[:2] = train.images[:2]
    found = checks.validate(stats_of(train, test), Settings())
    failing = checks.blocking(found)
    assert [check.name for check in failing] == ["leakage"]
    assert failing[0].line().startswith("error: leakage: 2 test images also in the training split")
    assert checks.status(checks.validate(stats_of(train, test), Settings(max_leaked_images=2))) == "passed"


def test_a_new_or_missing_class_violates_the_reference_schema() -> None:
    reference = stats_of(noise(30, 0), noise(6, 1))
    with_bird = stats_of(noise(40, 2, [i % 4 for i in range(40)]), noise(8, 3, [i % 4 for i in range(8)]),
                         [*NAMES, "bird"])  # fmt: skip
    classes = by_name(checks.validate(with_bird, Settings(), reference=reference))["schema.classes"]
    assert (classes.verdict, classes.value) == ("error", 1)
    assert "new class 'bird'" in classes.detail
    fewer = stats_of(noise(30, 4, [i % 2 for i in range(30)]), noise(6, 5, [0, 1] * 3), ["cat", "dog"])
    assert (
        "missing class 'ship'"
        in by_name(checks.validate(fewer, Settings(), reference))["schema.classes"].detail
    )
    swapped = stats_of(noise(30, 0), noise(6, 1), ["dog", "cat", "ship"])
    assert (
        "another order" in by_name(checks.validate(swapped, Settings(), reference))["schema.classes"].detail
    )


def test_too_few_images_of_a_class_violates_the_schema() -> None:
    stats = stats_of(noise(30, 0, [0] * 14 + [1] * 14 + [2] * 2), noise(6, 1))
    check = by_name(checks.validate(stats, Settings()))["schema.min_images_per_class"]
    assert (check.verdict, check.value, check.threshold) == ("error", 2, 5)
    assert "'ship' has 2 training images" in check.detail


def test_blank_images_and_duplicates_are_flagged_as_warnings() -> None:
    train, test = noise(100, 0), noise(20, 1)
    train.images[:3] = 128  # grey
    train.images[3] = 7
    train.images[10:15] = train.images[20]
    found = by_name(checks.validate(stats_of(train, test), Settings()))
    assert (found["blank"].verdict, found["blank"].value) == ("warn", pytest.approx(4 / 120))
    assert found["duplicates"].verdict == "warn"
    assert found["duplicates"].detail.startswith("7 duplicate images in the train split")
    assert checks.status(list(found.values())) == "warned"


def test_default_settings_match_the_documented_config() -> None:
    assert Settings.parse({}) == Settings()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"drift_policy": "sometimes"}, "validation.drift_policy='sometimes': expected one of error, warn"),
        ({"max_pixel_divergence": 1.5}, "validation.max_pixel_divergence=1.5: expected a number from 0 to 1"),
        ({"max_class_share_drift": -0.1}, "validation.max_class_share_drift=-0.1: expected a number from 0"),
        ({"blank_std": 0}, "validation.blank_std=0: expected a number above 0 and at most 1"),
        ({"max_leaked_images": -1}, "validation.max_leaked_images=-1: expected a whole number"),
        ({"min_images_per_class": 2.5}, "validation.min_images_per_class=2.5: expected a whole number"),
        ({"max_blank_share": "lots"}, "validation.max_blank_share='lots': expected a number"),
        ({"leakage_policy": True}, "validation.leakage_policy=True: expected one of error, warn"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.parse(values)
    assert str(error.value).startswith(message)
