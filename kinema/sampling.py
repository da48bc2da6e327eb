"""Sampling beyond ``model.sample(noise)``: the options a model family registers, and the generic ones.

A family's :class:`Sampler` (named on its registry line) lists its :class:`SampleOption` s; the CLI
turns every registered option into a ``kinema sample`` flag, and :func:`kinema.api.generate` passes
options through :meth:`Sampler.generate`, which rejects an option the model does not support with a
message that lists the ones it does. This module names no model family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from kinema.errors import SamplingError
from kinema.progress import inner_progress


@dataclass(frozen=True)
class SampleOption:
    """One keyword of a family's sampler; ``cli`` options are also ``kinema sample --<name>`` flags."""

    name: str  # keyword argument, e.g. "guidance_weight" (flag --guidance-weight)
    help: str
    type: type = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    cli: bool = True  # False: Python only (e.g. a tensor of time points)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def seeded_noise(model, num: int, seed: int) -> torch.Tensor:
    """The model's noise for ``num`` videos from a CPU generator seeded with ``seed``."""
    return model.sample_noise(num, generator=torch.Generator().manual_seed(seed), device=model.device)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def inference_autocast(device: torch.device, precision: str = "fp32"):
    """Autocast for sampling in ``precision`` (fp32, bf16, fp16). Weights stay float32 and autocast picks
    the dtype per op (softmax, norms and losses stay float32), so every family samples in bf16/fp16
    without casting its modules; noise is drawn in float32, so a seed gives the same noise in any precision."""
    if precision not in PRECISIONS:
        raise SamplingError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def sample_in_batches(model, num: int, seed: int, batch_size: int = 16, progress: bool = False,
                      call: Callable[[torch.Tensor], torch.Tensor] | None = None, **conditions) -> torch.Tensor:
    """``num`` videos ``(N, C, T, H, W)`` on the CPU; the same seed gives the same videos.

    Noise for all ``num`` videos is drawn first (so a video does not depend on ``batch_size``), then
    ``call(chunk)`` (default ``model.sample(chunk, **conditions)``) runs per chunk of ``batch_size``.
    Anything that draws from the global RNG while sampling (an SDE's Brownian path) is seeded too,
    without disturbing the caller's RNG state.
    """
    if num <= 0:
        raise SamplingError(f"--num must be > 0, got {num}")
    if batch_size <= 0:
        raise SamplingError(f"--batch-size must be > 0, got {batch_size}")
    call = call or (lambda chunk: model.sample(chunk, **conditions))
    device = model.device
    noise = seeded_noise(model, num, seed)
    chunks = noise.split(batch_size)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        bar = tqdm(chunks, desc="sampling", unit="batch", disable=not progress or len(chunks) < 1, leave=False)
        with inner_progress(progress):  # diffusion steps / token positions inside a batch get a bar too
            return torch.cat([call(chunk).cpu() for chunk in bar])


def class_labels(model, label: int):
    """``n -> (n,)`` long tensor of ``label`` on the model's device, for a class-conditional model
    (its capabilities list ``labels``); clear errors otherwise."""
    if "labels" not in model.capabilities.conditions:
        raise SamplingError(f"--label: this {model.config.name!r} model is not class-conditional (trained without "
                            "model.num_classes); sample without --label")
    classes = model.config.num_classes
    if not 0 <= label < classes:
        raise SamplingError(f"--label {label}: the model knows classes 0..{classes - 1}")
    return lambda n: torch.full((n,), label, dtype=torch.long, device=model.device)


class Sampler:
    """Unconditional sampling (``model.sample(noise)`` in batches). Families subclass it and list
    their options; :meth:`run` receives only options the caller set (others are absent)."""

    options: tuple[SampleOption, ...] = ()

    def option_names(self) -> list[str]:
        return [o.name for o in self.options]

    def check(self, model_name: str, options: dict) -> None:
        """Raise :class:`SamplingError` for an option this sampler does not take."""
        unknown = [name for name in options if name not in self.option_names()]
        if unknown:
            supported = ", ".join(o.flag for o in self.options if o.cli) or "none besides --num/--seed/--batch-size"
            raise SamplingError(f"{', '.join(flag_of(n) for n in unknown)}: not supported by a {model_name!r} "
                                f"model; its sampling options: {supported} (see `kinema sample --help`)")

    def generate(self, model, num: int, seed: int = 0, batch_size: int = 16, progress: bool = False,
                 precision: str = "fp32", **options) -> torch.Tensor:
        """Videos ``(N, C, T, H, W)`` in ``[-1, 1]`` on the CPU, float32 whatever ``precision``."""
        options = {k: v for k, v in options.items() if v is not None}
        self.check(model.config.name, options)
        with inference_autocast(model.device, precision):
            return self.run(model, num, seed, batch_size, progress, **options).float()

    def run(self, model, num: int, seed: int, batch_size: int, progress: bool, **options) -> torch.Tensor:
        return sample_in_batches(model, num, seed, batch_size, progress)

    def frame_rate_scale(self, model, **options) -> float:
        """Frames written per trained frame interval (the default --fps is the run's fps times this, so
        motion keeps its real-time speed); 1 unless the sampler renders other time points."""
        return 1.0


def sample_times(frames: int, fps_multiplier: int | None = None, t_start: float | None = None,
                 t_end: float | None = None, num_frames: int | None = None) -> torch.Tensor | None:
    """Time points for continuous-time sampling, in frame units (frame k of training is t = k).

    ``fps_multiplier = K``: K times as many frames over the trained span ``[0, frames - 1]``;
    ``t_start, t_end, num_frames``: ``num_frames`` evenly spaced points on ``[t_start, t_end]`` (t < 0
    is before the first trained frame). Neither: ``None`` (the trained grid).
    """
    if fps_multiplier is not None and any(v is not None for v in (t_start, t_end, num_frames)):
        raise SamplingError("use either --fps-multiplier or --t-start/--t-end/--frames, not both")
    if fps_multiplier is not None:
        if fps_multiplier < 1:
            raise SamplingError(f"--fps-multiplier must be an integer >= 1, got {fps_multiplier}")
        return torch.linspace(0, frames - 1, (frames - 1) * fps_multiplier + 1)
    if any(v is not None for v in (t_start, t_end, num_frames)):
        t_start = 0.0 if t_start is None else t_start
        t_end = float(frames - 1) if t_end is None else t_end
        num_frames = frames if num_frames is None else num_frames
        if not (t_end > t_start) or num_frames < 2:
            raise SamplingError(f"need --t-end > --t-start and --frames >= 2, got {t_start}, {t_end}, {num_frames}")
        return torch.linspace(t_start, t_end, num_frames)
    return None


class ContinuousTimeSampler(Sampler):
    """Frames at any time points for models whose capabilities declare continuous time.

    ``hint`` tells the user how to get a continuous-time model of this family (shown when a
    discrete-time checkpoint is asked for other times).
    """

    options = (
        SampleOption("fps_multiplier", "continuous-time models: K times as many frames over the trained time span",
                     int, metavar="K"),
        SampleOption("t_start", "continuous-time models: first time point in frame units (default 0; < 0 is "
                                "before the first trained frame)", float),
        SampleOption("t_end", "continuous-time models: last time point (default frames - 1)", float),
        SampleOption("frames", "continuous-time models: number of frames on [t-start, t-end]", int, metavar="N"),
        SampleOption("times", "1-D increasing tensor of time points (Python only)", cli=False),
    )

    def __init__(self, hint: str = "") -> None:
        self.hint = hint

    def times(self, model, fps_multiplier=None, t_start=None, t_end=None, frames=None, times=None):
        if times is not None and any(v is not None for v in (fps_multiplier, t_start, t_end, frames)):
            raise SamplingError("pass either times or --fps-multiplier/--t-start/--t-end/--frames, not both")
        if times is None:
            times = sample_times(model.video_shape[1], fps_multiplier, t_start, t_end, frames)
        if times is not None and not model.capabilities.continuous_time:
            raise SamplingError(f"this {type(model).__name__} has a discrete-time temporal generator: it renders "
                                f"only its trained frames 0..T-1; continuous-time sampling needs a continuous-time "
                                f"model{' (' + self.hint + ')' if self.hint else ''}")
        return times

    def frame_rate_scale(self, model, **options) -> float:
        times = self.times(model, **{k: v for k, v in options.items() if v is not None})
        if times is None or len(times) < 2:
            return 1.0
        return float((len(times) - 1) / (times[-1] - times[0]))

    def run(self, model, num, seed, batch_size, progress, **options):
        times = self.times(model, **options)
        conditions = {} if times is None else {"times": times}
        return sample_in_batches(model, num, seed, batch_size, progress, **conditions)
