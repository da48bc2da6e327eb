"""The one training loop (model-agnostic) and atomic checkpoints."""

from kinema.training.checkpoint import CheckpointError, load_model, resolve_checkpoint
from kinema.training.trainer import Trainer, TrainingError

__all__ = ["CheckpointError", "Trainer", "TrainingError", "load_model", "resolve_checkpoint"]
