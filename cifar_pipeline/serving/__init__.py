"""The inference server: FastAPI + ONNX Runtime. Imports neither torch nor MLflow."""
