"""The one training loop (model-agnostic) and atomic checkpoints."""

from kinema.errors import CheckpointError, TrainingError
from kinema.training.trainer import Trainer

__all__ = ["CheckpointError", "Trainer", "TrainingError"]
