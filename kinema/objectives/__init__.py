"""Training objectives: the only place that knows how a model family is trained.

A new objective is one module with an :class:`~kinema.objectives.base.Objective` subclass and its
config dataclass (with a ``name`` field), plus one line in :data:`kinema.registry.OBJECTIVES`.
"""

from kinema.objectives.base import NonFiniteLossError, Objective, Phase, StepContext

__all__ = ["NonFiniteLossError", "Objective", "Phase", "StepContext"]
