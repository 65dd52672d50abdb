"""CIFAR-10 style image-classifier pipeline: fetch, train, build, system-test.

This package is shared by the orchestrator, the steps and the inference image, so
importing it must stay cheap: no torch, no MLflow at import time.
"""

__version__ = "0.1.0"
