"""The validation settings (configs/validation/): thresholds and what each kind of anomaly does.

Every setting is checked before anything runs; a bad one raises SettingsError naming its key,
the value and what is expected. The fetch step takes the same settings as parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

ERROR, WARN = "error", "warn"
POLICIES = (ERROR, WARN)
# Kinds of check, each with its own policy.
SCHEMA, LEAKAGE, DRIFT, DUPLICATES, BLANK = "schema", "leakage", "drift", "duplicates", "blank"


class SettingsError(ValueError):
    """A validation setting is out of range or unknown; the message names the key."""


@dataclass(frozen=True)
class Settings:
    # Thresholds. Shares and divergences are fractions; counts are whole numbers.
    max_class_share_drift: float = 0.05  # L-infinity distance of the class shares
    max_pixel_divergence: float = 0.05  # Jensen-Shannon divergence (base 2) of a channel's histogram
    max_duplicate_share: float = 0.01  # exact duplicates within a split, as a share of it
    max_leaked_images: int = 0  # test images whose bytes also occur in the training split
    max_blank_share: float = 0.001  # near-constant images, as a share of all images
    blank_std: float = 0.01  # an image whose pixel std (0-1 scale) is below this is blank
    min_images_per_class: int = 5  # in the training split
    # What an anomaly of each kind does: "error" stops the pipeline before training, "warn" goes on.
    schema_policy: str = ERROR
    leakage_policy: str = ERROR
    drift_policy: str = WARN
    duplicates_policy: str = WARN
    blank_policy: str = WARN

    @classmethod
    def parse(cls, values: Mapping[str, Any], prefix: str = "validation.") -> Settings:
        parsed: dict[str, Any] = {}
        for field in fields(cls):
            value = values.get(field.name, field.default)
            name = f"{prefix}{field.name}={value!r}"
            if field.name.endswith("_policy"):
                if value not in POLICIES:
                    raise SettingsError(f"{name}: expected one of {', '.join(POLICIES)}")
                parsed[field.name] = value
            elif field.type == "int":
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or value < 0
                    or value != int(value)
                ):
                    raise SettingsError(f"{name}: expected a whole number, 0 or more")
                parsed[field.name] = int(value)
            else:
                number = isinstance(value, int | float) and not isinstance(value, bool)
                zero_allowed = field.name.startswith("max_")  # blank_std 0 would find no blank image
                if not number or not (0 <= value <= 1 if zero_allowed else 0 < value <= 1):
                    expected = "from 0 to 1" if zero_allowed else "above 0 and at most 1"
                    raise SettingsError(f"{name}: expected a number {expected}")
                parsed[field.name] = float(value)
        return cls(**parsed)

    def policy(self, kind: str) -> str:
        return str(getattr(self, f"{kind}_policy"))

    def as_params(self) -> dict[str, Any]:
        return asdict(self)
