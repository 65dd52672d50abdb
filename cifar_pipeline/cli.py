"""What every step's command line shares: logging set-up and clean failure exits."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from cifar_pipeline.checksums import ChecksumError
from cifar_pipeline.sources.errors import SourceError
from cifar_pipeline.tracking import UpstreamError

# Errors that are the user's input, not a bug: reported in one line, exit code 2.
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ChecksumError,
    SourceError,
    UpstreamError,
    FileNotFoundError,
    ValueError,
)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def parse_bool(value: str) -> bool:
    """An MLproject string parameter as a boolean; anything unrecognised is refused."""
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: expected true or false")


def parse_int(value: str) -> int:
    """An MLproject number as an int: MLflow's float parameters arrive as "4" or "4.0"."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number") from None
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number")
    return int(number)


def configure_logging() -> None:
    """INFO and up to stdout (and to the step's log artifact, see tracking.step_run).

    An import (the ONNX exporter's) has already set the root logger up at ERROR on
    stderr, which would silence every INFO line: its plain console handler is replaced
    (handlers of other kinds, such as pytest's capture, are kept) and the level reset.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    root.setLevel(logging.INFO)
    for chatty in ("onnx_ir", "onnxscript"):  # a dozen INFO lines per export about graph passes
        logging.getLogger(chatty).setLevel(logging.WARNING)


def run_main(step: str, main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    configure_logging()
    try:
        main(argv)
    except INPUT_ERRORS as exc:
        logging.getLogger(step).error("%s step refused its input: %s", step, exc)
        sys.exit(2)
    except Exception as exc:  # the traceback is already in the step's log artifact
        logging.getLogger(step).error("%s step failed: %s: %s", step, exc.__class__.__name__, exc)
        sys.exit(1)
