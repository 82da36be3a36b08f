"""The model zoo: shared blocks, the MobileNet and EfficientNet families, the registry and weight loading."""

from .registry import get_spec, list_models, resolve_config
from .weights import create_model

__all__ = ["create_model", "get_spec", "list_models", "resolve_config"]
