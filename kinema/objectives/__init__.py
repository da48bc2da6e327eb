"""Training objectives: the only place that knows how a model family is trained.

A new objective is one module with an objective class and its config dataclass (with a ``name``
field), plus one entry in :data:`OBJECTIVES`.
"""

from __future__ import annotations

from typing import Any

from kinema.config import ConfigError, ObjectiveConfig
from kinema.objectives.base import NonFiniteLossError, Objective, StepContext
from kinema.objectives.gan import GANObjective
from kinema.objectives.diffusion import DiffusionObjective, DiffusionObjectiveConfig
from kinema.objectives.likelihood import LikelihoodConfig, LikelihoodObjective

# name -> (config dataclass, objective class built as cls(model, config)).
OBJECTIVES: dict[str, tuple[type, type]] = {"gan": (ObjectiveConfig, GANObjective),
                                             "likelihood": (LikelihoodConfig, LikelihoodObjective),
                                             "diffusion": (DiffusionObjectiveConfig, DiffusionObjective)}


def objective_config_class(name: str) -> type:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective.name {name!r}; available: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name][0]


def build_objective(model, config: Any) -> Objective:
    objective_config_class(config.name)  # raises the unknown-name error
    return OBJECTIVES[config.name][1](model, config)


__all__ = ["OBJECTIVES", "GANObjective", "NonFiniteLossError", "Objective", "StepContext", "build_objective",
           "objective_config_class"]
