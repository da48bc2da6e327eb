"""DVG's sampling options: ``kinema sample --condition VIDEO --frames N --num K`` writes K futures of one clip.

Registered on DVG's registry line; :func:`kinema.api.generate` reaches the same options by keyword.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kinema.errors import SamplingError
from kinema.models.dvg.model import TRIGGERS
from kinema.sampling import SampleOption, Sampler, sample_in_batches


def context_from_file(model, path) -> torch.Tensor:
    """The first ``n_past`` frames of the video at ``path`` as ``(1, 3, n_past, R, R)`` in [-1, 1]."""
    from kinema.video import from_uint8, read_video

    cfg = model.config
    if Path(path).is_dir():
        raise SamplingError(f"--condition {path} is a folder (a run or checkpoint?); DVG conditions on a video "
                            f"file (.mp4/.gif/...) with at least {cfg.n_past} frames of {cfg.resolution}x{cfg.resolution}")
    clip = from_uint8(read_video(path, max_frames=cfg.n_past))  # (3, T, H, W); VideoReadError names the file
    if tuple(clip.shape[2:]) != (cfg.resolution, cfg.resolution) or clip.shape[1] < cfg.n_past:
        raise SamplingError(f"--condition {path}: got {clip.shape[1]} frame(s) of {clip.shape[2]}x{clip.shape[3]}, "
                            f"DVG needs {cfg.n_past} frame(s) (model.n_past) of {cfg.resolution}x{cfg.resolution}; "
                            f"resize/crop the video first")
    return clip[None].to(model.device)


class DVGSampler(Sampler):
    """K futures of one clip: every video has its own seed, so its own GP draws."""

    options = (
        SampleOption("condition", "predict futures of this clip's first model.n_past frames", metavar="VIDEO"),
        SampleOption("frames", "frames to predict after the context (default model.n_future)", int, metavar="N"),
        SampleOption("trigger", "when to draw the next latent from the GP (default: the model's)", str,
                     choices=TRIGGERS),
        SampleOption("trigger_every", "with --trigger every_k: draw from the GP at frame indices divisible "
                                      "by K", int, metavar="K"),
        SampleOption("context", "(B or 1, C, >= n_past, R, R) tensor of context frames in [-1, 1] (Python only)",
                     cli=False),
    )

    def run(self, model, num, seed, batch_size, progress, condition=None, frames=None, trigger=None,
            trigger_every=None, context=None):
        if (condition is None) == (context is None):
            raise SamplingError("DVG predicts futures of a clip: pass --condition VIDEO (or context=tensor in "
                                "Python), one of them")
        if frames is not None and frames < 1:
            raise SamplingError(f"--frames {frames}: DVG predicts at least 1 frame after the context")
        clip = context_from_file(model, condition) if condition is not None else context.to(model.device)
        if clip.dim() != 5 or clip.shape[0] not in (1, num):
            raise SamplingError(f"context: expected (1 or {num}, C, T, H, W), got {tuple(clip.shape)}")
        start = [0]

        def call(chunk: torch.Tensor) -> torch.Tensor:
            rows = clip if len(clip) == 1 else clip[start[0]: start[0] + len(chunk)]
            start[0] += len(chunk)
            return model.sample(chunk, frames=rows, n_future=frames, trigger=trigger, trigger_every=trigger_every)

        return sample_in_batches(model, num, seed, batch_size, progress, call=call)
