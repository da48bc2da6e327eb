"""Tiny configs shared by the tests: TGANv2 of 8 frames, 16x16, three levels, a few channels; NÜWA of
4 frames, 16x16, 4x4 tokens per frame. Also an autograd-graph probe the GAN objectives' tests share."""

from __future__ import annotations

import torch

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


# NÜWA (tests/models/nuwa/, tests/benchmarks/test_nuwa_measure.py): 4 frames of 16x16, 4x4 tokens per frame.
TINY_NUWA_VQGAN = {"frames": 4, "resolution": 16, "downsample": 4, "hidden": 16, "max_mult": 2, "codebook_size": 16,
                   "embedding_dim": 8, "disc_hidden": 8, "disc_layers": 2}
TINY_NUWA = {"frames": 4, "resolution": 16, "downsample": 4, "codebook_size": 16, "hidden": 32, "heads": 2,
             "encoder_layers": 1, "decoder_layers": 2, "cond_frames": 1, "cross_extent": [1, 3, 3],
             "encoder_extent": [1, 3, 3], "block_frames": 2}


def tiny_nuwa(**changes):
    """A NÜWA transformer on a random (but fixed) VQ-GAN, treated as trained; eval mode."""
    import json

    from kinema.config import build_dataclass
    from kinema.models.nuwa.model import NUWA, NUWAConfig

    torch.manual_seed(0)
    vq = json.dumps({"name": "nuwa_vqgan", **TINY_NUWA_VQGAN})
    model = NUWA(build_dataclass(NUWAConfig, {**TINY_NUWA, "vqgan_config": vq, **changes}, "model"))
    torch.nn.init.normal_(model.transformer.to_logits.weight, std=0.5)
    model.vqgan_loaded = True
    return model.eval()


def holds_saved_tensors(node) -> bool:
    """Whether any node of an autograd graph still holds a saved activation (a freed one raises on access;
    leaves -- parameters and the detached fakes, alive anyway -- are not counted)."""
    stack, seen = [node], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        for name in dir(fn):
            if name.startswith("_saved_"):
                try:
                    value = getattr(fn, name)
                    if isinstance(value, torch.Tensor) and not value.is_leaf:
                        return True
                except RuntimeError:  # "... saved tensors after they have already been freed"
                    pass
        stack.extend(f for f, _ in fn.next_functions)
    return False
