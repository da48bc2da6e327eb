"""The VideoGPT prior's sampling modes: temperature, top-k, and continuing a clip from a video file.

Registered on the prior's registry line; ``kinema sample --condition/--temperature/--top-k`` and
:func:`kinema.api.generate` reach them through :class:`PriorSampler`.
"""

from __future__ import annotations

import torch

from kinema.sampling import SampleOption, Sampler, class_labels, sample_in_batches


def condition_from_file(model, path) -> dict:
    """The ``sample`` keywords that continue the clip in ``path`` (for one video; expand per batch).

    A frame-conditional prior (``model.cond_frames = n``) reads its first ``n`` frames through
    cross-attention (BAIR-style): ``{"frames": (1, 3, n, H, W)}``. An unconditional prior keeps the
    codes of the first ``k`` latent time steps of the clip fixed (``k = frames_in_file // downsample_t``,
    at most all but one) and samples the rest: ``{"prefix": (1, k * h * w)}``. The file's frames must be
    ``resolution x resolution``.
    """
    from kinema.video import from_uint8, read_video

    cfg = model.config
    frames_needed = cfg.cond_frames or cfg.downsample[0]
    clip = from_uint8(read_video(path, max_frames=cfg.frames))  # VideoReadError names the file
    if tuple(clip.shape[2:]) != (cfg.resolution, cfg.resolution) or clip.shape[1] < frames_needed:
        raise ValueError(
            f"--condition {path}: got {clip.shape[1]} frame(s) of {clip.shape[2]}x{clip.shape[3]}, the prior "
            f"needs at least {frames_needed} frame(s) of {cfg.resolution}x{cfg.resolution} "
            f"({'model.cond_frames' if cfg.cond_frames else 'one latent time step = model.downsample[0]'}); "
            f"resize/crop the video to {cfg.resolution}x{cfg.resolution} first")
    clip = clip.to(model.device)
    if cfg.cond_frames:
        return {"frames": clip[None, :, : cfg.cond_frames]}
    steps = min(clip.shape[1] // cfg.downsample[0], model.latent_shape[0] - 1)
    prefix_frames = clip[None, :, : steps * cfg.downsample[0]]
    if prefix_frames.shape[2] < cfg.frames:  # encode a full-length clip: repeat the last frame
        pad = prefix_frames[:, :, -1:].expand(-1, -1, cfg.frames - prefix_frames.shape[2], -1, -1)
        prefix_frames = torch.cat([prefix_frames, pad], dim=2)
    return {"prefix": model.encode(prefix_frames)[:, : steps * model.latent_shape[1] * model.latent_shape[2]]}


class PriorSampler(Sampler):
    """Unconditional samples, or continuations of one clip (every video with its own seed)."""

    options = (
        SampleOption("condition", "VideoGPT priors: continue this clip (its first frames, at the model's resolution)",
                     metavar="VIDEO"),
        SampleOption("temperature", "VideoGPT priors: softmax temperature (default: the model's)", float),
        SampleOption("top_k", "VideoGPT priors: sample among the k likeliest codes (0 = all)", int),
        SampleOption("label", "class-conditional models: the class index of every video (default: 0, 1, 2, ... "
                              "in turn)", int, metavar="CLASS"),
    )

    def run(self, model, num, seed, batch_size, progress, condition=None, temperature=None, top_k=None, label=None):
        fixed = condition_from_file(model, condition) if condition is not None else {}
        labels = class_labels(model, label) if label is not None else None

        def call(chunk: torch.Tensor) -> torch.Tensor:
            per_batch = {k: v.expand(len(chunk), *v.shape[1:]) for k, v in fixed.items()}
            if labels is not None:
                per_batch["labels"] = labels(len(chunk))
            return model.sample(chunk, temperature=temperature, top_k=top_k, **per_batch)

        return sample_in_batches(model, num, seed, batch_size, progress, call=call)
