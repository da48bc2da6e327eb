"""NÜWA's sampling options: prediction from a video file's first frames, a text prompt, a sketch (per-frame
masks), temperature, top-k, guidance.

Registered on the ``nuwa`` registry line; ``kinema sample --condition/--text/--sketch/--temperature/
--top-k/--guidance`` and :func:`kinema.api.generate` reach them through :class:`NUWASampler`.

Sketch files: ``.npy`` holding an integer array ``(T, H, W)`` -- one mask per frame, ``T = model.frames``,
``H = W = model.resolution``, values ``0..model.sketch_classes-1`` (captioned_shapes: 0 background,
1 circle, 2 square).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from kinema.errors import SamplingError
from kinema.sampling import SampleOption, Sampler, sample_in_batches


def frames_from_file(model, path) -> dict:
    """``{"frames": (1, 3, n, H, W)}``: the first ``n = min(frames in the file, model.frames - 1)`` frames of
    ``path``, whose tokens every sampled video keeps (and whose first ``cond_frames`` feed the encoder)."""
    from kinema.video import from_uint8, read_video

    cfg = model.config
    clip = from_uint8(read_video(path, max_frames=cfg.frames - 1))  # VideoReadError names the file
    need = max(cfg.cond_frames, 1)
    if tuple(clip.shape[2:]) != (cfg.resolution, cfg.resolution) or clip.shape[1] < need:
        raise SamplingError(
            f"--condition {path}: got {clip.shape[1]} frame(s) of {clip.shape[2]}x{clip.shape[3]}; this NÜWA needs at "
            f"least {need} frame(s) of {cfg.resolution}x{cfg.resolution} (model.cond_frames = {cfg.cond_frames}); "
            f"resize/crop the video first")
    return {"frames": clip[None].to(model.device)}


def masks_from_file(model, path) -> torch.Tensor:
    """``(1, T, H, W)`` long masks from a ``.npy`` file (see the module docstring); clear errors."""
    cfg = model.config
    file = Path(path)
    if file.suffix != ".npy":
        raise SamplingError(f"--sketch {path}: give a .npy file holding an integer array (T, H, W) = "
                            f"({cfg.frames}, {cfg.resolution}, {cfg.resolution}) of per-frame class ids")
    if not file.is_file():
        raise SamplingError(f"--sketch {path}: no such file")
    try:
        array = np.load(file, allow_pickle=False)
    except ValueError as exc:
        raise SamplingError(f"--sketch {path}: not a readable .npy array ({exc})") from None
    if not np.issubdtype(array.dtype, np.integer):
        raise SamplingError(f"--sketch {path}: masks must be integer class ids, got dtype {array.dtype}")
    masks = torch.from_numpy(array.astype(np.int64))
    if masks.dim() == 3:
        masks = masks[None]
    try:
        return model.check_masks(masks, 1)
    except ValueError as exc:
        raise SamplingError(f"--sketch {path}: {exc}") from None


class NUWASampler(Sampler):
    """Unconditional samples, predictions continuing one clip, or videos following one caption or one
    sketch (every video with its own seed)."""

    options = (
        SampleOption("condition", "NÜWA: keep this clip's first frames (up to frames-1, at the model's resolution) "
                                  "and predict the rest", metavar="VIDEO"),
        SampleOption("text", "NÜWA: generate a video following this caption (models trained with the text task; "
                             "words outside the training vocabulary become <unk>, reported)", metavar="TEXT"),
        SampleOption("sketch", "NÜWA: generate a video following these per-frame segmentation masks (.npy, integer "
                               "(T, H, W) at the model's frames and resolution; models trained with the sketch task)",
                     metavar="MASKS"),
        SampleOption("temperature", "NÜWA: softmax temperature (default: the model's)", float),
        SampleOption("top_k", "NÜWA: sample among the k likeliest tokens (0 = all)", int),
        SampleOption("guidance", "NÜWA: classifier-free guidance scale for a frame, text or sketch condition "
                                 "(1 = none)", float),
    )

    def run(self, model, num, seed, batch_size, progress, condition=None, temperature=None, top_k=None,
            guidance=None, text=None, sketch=None):
        try:
            task = model.pick_task(condition is not None, text is not None, sketch is not None)
        except ValueError as exc:
            raise SamplingError(str(exc)) from None
        fixed = frames_from_file(model, condition) if condition is not None else {}
        if sketch is not None:
            fixed["masks"] = masks_from_file(model, sketch)
        if guidance is not None and guidance != 1 and task == "unconditional":
            raise SamplingError(f"--guidance: no condition to guide with (this NÜWA supports {', '.join(model.tasks)}; "
                                "give --condition, --text or --sketch as it supports), or sample without --guidance")
        if text is not None:  # unknown words / a cut caption: reported once, before the batches, on stderr
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.text_ids([text])
            for w in caught:
                print(f"note: {w.message}", file=sys.stderr)

        def call(chunk):
            per_batch = {k: v.expand(len(chunk), *v.shape[1:]) for k, v in fixed.items()}
            if text is not None:
                per_batch["text"] = text
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # reported once above
                    return model.sample(chunk, temperature=temperature, top_k=top_k, guidance=guidance, **per_batch)
            except ValueError as exc:
                raise SamplingError(str(exc)) from None

        return sample_in_batches(model, num, seed, batch_size, progress, call=call)
