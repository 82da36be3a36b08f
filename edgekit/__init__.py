"""edgekit: PyTorch vision models to phones and edge boards, with parity and latency you can trust."""

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "export", "list_models"]


def __getattr__(name: str):
    # The model zoo imports torch; `edgekit validate` and the runtimes must work without it (a CI box or
    # a board may have ONNX Runtime and LiteRT only), so the zoo loads on first use, not on `import edgekit`.
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    if name == "export":  # the pipeline and its converters load when a model is exported, not before
        from .api import export

        return export
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
