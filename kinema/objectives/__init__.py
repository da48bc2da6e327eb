"""Training objectives: the only place that knows how a model family is trained."""

from __future__ import annotations

from kinema.config import ConfigError, ObjectiveConfig
from kinema.objectives.base import NonFiniteLossError, Objective
from kinema.objectives.gan import GANObjective

OBJECTIVES = {"gan": GANObjective}


def build_objective(model, config: ObjectiveConfig) -> Objective:
    if config.name not in OBJECTIVES:
        raise ConfigError(f"unknown objective.name {config.name!r}; available: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[config.name](model, config)


__all__ = ["OBJECTIVES", "GANObjective", "NonFiniteLossError", "Objective", "build_objective"]
