"""Video generative models. Each model is one file plus a registry entry (see ``registry.py``)."""

from kinema.models.registry import MODELS, build_model, model_config_class

__all__ = ["MODELS", "build_model", "model_config_class"]
