"""Model registry: ``model.name`` in a config -> (config dataclass, model class)."""

from __future__ import annotations

from typing import Any

from torch import nn

from kinema.config import ConfigError
from kinema.models.tgan import TGAN, TGANConfig
from kinema.models.tganv2 import TGANv2, TGANv2Config
from kinema.models.vdm import VDM, VDMConfig
from kinema.models.videogpt import VideoGPTVQVAE, VideoGPTVQVAEConfig
from kinema.models.videogpt_prior import VideoGPTPrior, VideoGPTPriorConfig

# name -> (config dataclass, nn.Module built as cls(config)). A new model adds one line here.
MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "tganv2": (TGANv2Config, TGANv2),
    "tgan": (TGANConfig, TGAN),
    "vdm": (VDMConfig, VDM),
    "videogpt_vqvae": (VideoGPTVQVAEConfig, VideoGPTVQVAE),
    "videogpt_prior": (VideoGPTPriorConfig, VideoGPTPrior),
}


def model_config_class(name: str) -> type:
    if name not in MODELS:
        raise ConfigError(f"unknown model.name {name!r}; available models: {', '.join(sorted(MODELS))}")
    return MODELS[name][0]


def model_class(name: str) -> type[nn.Module]:
    model_config_class(name)  # raises the unknown-name error
    return MODELS[name][1]


def build_model(config: Any) -> nn.Module:
    """Instantiate the model described by a model config dataclass (it carries ``name``)."""
    if config.name not in MODELS:
        raise ConfigError(f"unknown model.name {config.name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[config.name][1](config)
