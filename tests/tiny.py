"""Tiny configs shared by the tests: 8 frames, 16x16, three levels, a few channels."""

from __future__ import annotations

from kinema.registry import load_config
from kinema.models.tganv2 import TGANv2Config

TINY_MODEL = dict(
    name="tganv2", z_dim=8, frames=8, base_size=2, resolution=16,
    gen_channels=[16, 16, 8, 8], levels=3, dis_channels=[8, 16],
)


def tiny_model_config(**changes) -> TGANv2Config:
    return TGANv2Config(**{**TINY_MODEL, **changes})


def tiny_run_config(steps: int = 4, **train):
    """A whole run config on synthetic data, small enough for a step in a few milliseconds."""
    return load_config(
        None,
        model=dict(TINY_MODEL),
        data=dict(source="synthetic", num_clips=64),
        train={**dict(steps=steps, batch_size=4, log_every=1, sample_every=steps, checkpoint_every=steps,
                      num_samples=4, keep_checkpoints=0), **train},
    )


def one_batch(real, optimizers, generator, scaler=None):
    """``train_step`` arguments for one process holding the whole batch ``real``."""
    from kinema.data import Batch
    from kinema.objectives.base import StepContext

    return [Batch(real)], StepContext.for_batch(optimizers, generator, real.shape[0], scaler)
