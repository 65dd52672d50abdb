"""Assemble the inference image's build context: server code, model, pinned wheels."""

from __future__ import annotations

import shutil
from pathlib import Path

import cifar_pipeline

PACKAGE_DIR = Path(cifar_pipeline.__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SERVING_DIR = PACKAGE_DIR / "serving"
REQUIREMENTS_DIR = PROJECT_DIR / "requirements"
SERVE_REQUIREMENTS = ("pins.txt", "serve.txt")
SERVED_MODULES = ("__init__.py", "images.py")


def assemble_context(context: Path, model_dir: Path, wheelhouse: Path) -> Path:
    """Lay out the context the serving Dockerfile expects; return its directory."""
    if not any(wheelhouse.glob("*.whl")):
        raise FileNotFoundError(f"{wheelhouse}: no wheels for the inference image")
    for required in ("model.onnx", "metadata.json"):
        if not (model_dir / required).is_file():
            raise FileNotFoundError(f"{model_dir / required}: missing from the model artifact")
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy(SERVING_DIR / "Dockerfile", context / "Dockerfile")
    package = context / "cifar_pipeline"
    package.mkdir()
    # the package's __init__, the image decoding that training used (Pillow + numpy only), the server
    for module in SERVED_MODULES:
        shutil.copy(PACKAGE_DIR / module, package / module)
    shutil.copytree(
        SERVING_DIR, package / "serving", ignore=shutil.ignore_patterns("__pycache__", "Dockerfile")
    )
    (context / "requirements").mkdir()
    for name in SERVE_REQUIREMENTS:
        shutil.copy(REQUIREMENTS_DIR / name, context / "requirements" / name)
    shutil.copytree(wheelhouse, context / "wheels")
    shutil.copytree(model_dir, context / "model")
    return context
