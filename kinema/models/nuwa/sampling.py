"""NÜWA's sampling options: prediction from a video file's first frames, temperature, top-k, guidance.

Registered on the ``nuwa`` registry line; ``kinema sample --condition/--temperature/--top-k/--guidance``
and :func:`kinema.api.generate` reach them through :class:`NUWASampler`.
"""

from __future__ import annotations

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


class NUWASampler(Sampler):
    """Unconditional samples or predictions continuing one clip (every video with its own seed)."""

    options = (
        SampleOption("condition", "NÜWA: keep this clip's first frames (up to frames-1, at the model's resolution) "
                                  "and predict the rest", metavar="VIDEO"),
        SampleOption("temperature", "NÜWA: softmax temperature (default: the model's)", float),
        SampleOption("top_k", "NÜWA: sample among the k likeliest tokens (0 = all)", int),
        SampleOption("guidance", "NÜWA: classifier-free guidance scale for frame-conditional models (1 = none)",
                     float),
    )

    def run(self, model, num, seed, batch_size, progress, condition=None, temperature=None, top_k=None,
            guidance=None):
        fixed = frames_from_file(model, condition) if condition is not None else {}
        if guidance is not None and guidance != 1 and not model.config.cond_frames:
            raise SamplingError("--guidance: this NÜWA is unconditional (model.cond_frames = 0): there is no "
                                "condition to guide with; sample without --guidance")

        def call(chunk):
            per_batch = {k: v.expand(len(chunk), *v.shape[1:]) for k, v in fixed.items()}
            try:
                return model.sample(chunk, temperature=temperature, top_k=top_k, guidance=guidance, **per_batch)
            except ValueError as exc:
                raise SamplingError(str(exc)) from None

        return sample_in_batches(model, num, seed, batch_size, progress, call=call)
