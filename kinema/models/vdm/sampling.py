"""VDM's sampling modes: sampler and step count, reconstruction-guided extension and super-resolution.

Registered on VDM's registry line; ``kinema sample --extend/--upsample/--sampler/--steps`` and
:func:`kinema.api.generate` reach them through :class:`VDMSampler`.
"""

from __future__ import annotations

import torch

from kinema import diffusion
from kinema.errors import SamplingError
from kinema.sampling import SampleOption, Sampler, class_labels, sample_in_batches


def _read_clip(path) -> torch.Tensor:
    from kinema.video import from_uint8, read_video

    return from_uint8(read_video(path))  # (C, T, H, W); VideoReadError names a bad file


@torch.no_grad()
def extend(model, clip: torch.Tensor, new_frames: int | None = None, num: int = 1, seed: int = 0,
           method: str = "reconstruction", guidance_weight: float = 2.0, sampler: str | None = None,
           steps: int | None = None, context_frames: int | None = None) -> torch.Tensor:
    """Continue ``clip (C, T_in, H, W)`` by ``new_frames`` frames with a VDM: ``(num, C, T_in + new, H, W)``.

    Autoregressive windows of the model's ``T`` frames: each conditions on the last ``context_frames``
    frames so far (default ``T // 2``) and adds ``T - context_frames`` new ones, by reconstruction
    guidance (paper eq. 7) or the replacement method. The same seed gives the same videos.
    """
    cfg = model.config
    diffusion.check_guidance(method, guidance_weight)
    context = cfg.frames // 2 if context_frames is None else context_frames
    if not 1 <= context < cfg.frames:
        raise ValueError(f"context frames must be in [1, {cfg.frames - 1}] for a {cfg.frames}-frame model, got {context}")
    new_frames = cfg.frames - context if new_frames is None else new_frames
    if new_frames < 1:
        raise ValueError(f"--new-frames (frames to add) must be >= 1, got {new_frames}")
    c, t_in, h, w = clip.shape
    if (c, h, w) != (cfg.channels, cfg.resolution, cfg.resolution):
        raise ValueError(f"--extend video: expected {cfg.channels}-channel frames of {cfg.resolution}x{cfg.resolution} "
                         f"(the model's resolution), got {c}-channel {h}x{w}; resize/crop it first")
    if t_in < context:
        raise ValueError(f"--extend video: expected at least {context} frames (the conditioning window, half the "
                         f"model's {cfg.frames}), got {t_in}")
    device = model.device
    gen = torch.Generator().manual_seed(seed)
    video = clip.to(device)[None].expand(num, -1, -1, -1, -1)
    made = 0
    while made < new_frames:
        noise = model.sample_noise(num, generator=gen, device=device)
        window = model.extend(video[:, :, -context:], noise, method=method, weight=guidance_weight, sampler=sampler,
                              steps=steps, generator=gen)
        video = torch.cat([video, window[:, :, context:]], dim=2)
        made += cfg.frames - context
    return video[:, :, : t_in + new_frames].cpu()


@torch.no_grad()
def super_resolve(model, low: torch.Tensor, num: int = 1, seed: int = 0, method: str = "reconstruction",
                  guidance_weight: float = 2.0, sampler: str | None = None, steps: int | None = None) -> torch.Tensor:
    """Up-sample ``low (C, T, h, w)`` to the model's resolution: ``(num, C, T, H, W)`` whose box
    down-sampling matches ``low`` (reconstruction guidance, or the replacement method)."""
    cfg = model.config
    diffusion.check_guidance(method, guidance_weight)
    c, t, h, w = low.shape
    factor = cfg.resolution // max(h, 1)
    if c != cfg.channels or h != w or factor < 2 or h * factor != cfg.resolution:
        raise ValueError(f"--upsample video: expected {cfg.channels}-channel square frames of {cfg.resolution}/f for an "
                         f"integer f >= 2 (e.g. {cfg.resolution // 2}x{cfg.resolution // 2}), got {c}-channel {h}x{w}")
    if t < cfg.frames:
        raise ValueError(f"--upsample video: expected at least {cfg.frames} frames (the model's), got {t}")
    device = model.device
    gen = torch.Generator().manual_seed(seed)
    noise = model.sample_noise(num, generator=gen, device=device)
    x_low = low[:, : cfg.frames].to(device)[None].expand(num, -1, -1, -1, -1)
    return model.super_resolve(x_low, noise, method=method, weight=guidance_weight, sampler=sampler, steps=steps,
                               generator=gen).cpu()


_extend = extend  # VDMSampler.run's `extend` argument (the option) shadows the function


class VDMSampler(Sampler):
    """Unconditional samples with a chosen sampler/step count, or ``extend`` / ``upsample`` a video file."""

    options = (
        SampleOption("sampler", "vdm: sampler (default: the model config's)", choices=("ancestral", "ddim")),
        SampleOption("steps", "vdm: sampling steps (default: the model config's)", int),
        SampleOption("extend", "vdm: continue this video (frames at the model's resolution) by --new-frames new "
                               "frames, conditioning on its last frames", metavar="VIDEO"),
        SampleOption("new_frames", "vdm --extend: number of new frames to add (default: one window, half the "
                                   "model's frames)", int, metavar="N"),
        SampleOption("upsample", "vdm: spatial super-resolution of this low-resolution video (side = model "
                                 "resolution / integer factor, at least the model's frames)", metavar="VIDEO"),
        SampleOption("method", "vdm --extend/--upsample: reconstruction guidance (Ho et al. 2022, eq. 7) or the "
                               "replacement method (default reconstruction)", choices=("reconstruction", "replacement")),
        SampleOption("guidance_weight", "vdm --extend/--upsample: reconstruction guidance weight w_r in [0, 100] "
                                        "(default 2)", float),
        SampleOption("label", "class-conditional models: the class index of every video (default: 0, 1, 2, ... "
                              "in turn)", int, metavar="CLASS"),
    )

    def run(self, model, num, seed, batch_size, progress, extend=None, upsample=None, new_frames=None,
            method="reconstruction", guidance_weight=2.0, sampler=None, steps=None, label=None):
        if extend is not None and upsample is not None:
            raise SamplingError("use either --extend or --upsample, not both")
        if label is not None and (extend is not None or upsample is not None):
            raise SamplingError("--label applies to unconditional samples; --extend/--upsample use the model's "
                                "default labels")
        if new_frames is not None and extend is None:
            raise SamplingError("--new-frames sets how many frames --extend adds; pass --extend VIDEO too")
        if extend is not None:
            return _extend(model, _read_clip(extend), new_frames, num, seed, method, guidance_weight, sampler, steps)
        if upsample is not None:
            return super_resolve(model, _read_clip(upsample), num, seed, method, guidance_weight, sampler, steps)
        if label is None:
            return sample_in_batches(model, num, seed, batch_size, progress, sampler=sampler, steps=steps)
        labels = class_labels(model, label)
        return sample_in_batches(model, num, seed, batch_size, progress,
                                 call=lambda chunk: model.sample(chunk, labels=labels(len(chunk)), sampler=sampler,
                                                                 steps=steps))
