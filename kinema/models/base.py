"""The model contract: what the trainer, the sampler CLI and evaluation may rely on.

Every kinema model is a :class:`VideoModel`: a plain ``nn.Module`` built from its config dataclass
(``cls(config)``), with

- ``video_shape`` ``(C, T, H, W)`` of one generated (and one training) video;
- ``sample_noise(n, generator, device)``: the model's own noise for ``n`` videos (any tensor whose first
  axis is the video; drawn from ``generator`` so the same seed gives the same videos);
- ``sample(noise, **conditions)``: videos ``(B, C, T, H, W)`` in ``[-1, 1]``;
- ``preview(noise, real)``: what the trainer's sample grids show (default: ``sample(noise)``; an
  autoencoder shows reconstructions of ``real()``, the first training clips);
- ``capabilities``: declared, not probed -- whether time is continuous and which conditions
  ``sample`` accepts (see :class:`Capabilities`);
- ``default_objective``: the ``objective.name`` a config gets when it names none.

Objectives state what more they need as a ``typing.Protocol`` (e.g. ``GANModel``) and check it when
they are built. How a family samples beyond ``sample(noise)`` (extension, conditioning, continuous
time) lives in the family's folder as a :class:`kinema.sampling.Sampler`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from kinema.errors import ConfigError
from kinema.nn.noise import draw_noise
from kinema.runs import checkpoint_with_model

# The conditions a model's ``sample`` may accept, by keyword: class labels ``(B,)``, frames to
# continue or condition on ``(B, C, T_c, H, W)``, text, and time points (continuous-time models).
CONDITIONS = ("labels", "frames", "text", "times")


@dataclass(frozen=True)
class Capabilities:
    """What a model declares about itself; generic code reads this instead of probing attributes."""

    continuous_time: bool = False  # sample(noise, times=...) renders any increasing time points
    conditions: frozenset[str] = frozenset()  # keywords of CONDITIONS that sample() accepts
    # sample(noise) with no condition at all renders videos; False for models that only continue or
    # translate a given input (DVG, a frame-conditional VideoGPT prior): generic code that samples
    # unconditionally (FVD, the motion oracle) refuses them before any work instead of failing midway.
    unconditional: bool = True
    # A prediction model: sample(noise, frames=clip[:, :, :context_frames]) continues a real clip from its
    # first context_frames frames (DVG's n_past, a frame-conditional VideoGPT prior's or NÜWA's
    # cond_frames). 0: not a prediction model (it may still accept frames, e.g. as a prefix). The
    # prediction protocols (kinema.metrics.prediction) and, for models that cannot sample unconditionally,
    # FVD & co. (continuations of the real clips) read this to split context and future.
    context_frames: int = 0
    # Trains on sparse clips: a few frames at random gaps with each frame's time (data.sparse_frames > 0,
    # kinema.data.sparse_frames); the GAN objective hands those times to real_levels(..., times=).
    sparse_frames: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.conditions) - set(CONDITIONS))
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
        if self.context_frames and "frames" not in self.conditions:
            raise ValueError(f"context_frames = {self.context_frames} needs 'frames' among the conditions")


class VideoModel(nn.Module, metaclass=ABCMeta):
    """Base of every kinema model. ``config`` has ``frames`` and ``resolution`` (and optionally
    ``channels``, default 3) unless the model overrides :attr:`video_shape`."""

    config: Any
    default_objective: ClassVar[str]

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """Shape of one generated (and one training) video, ``(C, T, H, W)``."""
        c = self.config
        return (getattr(c, "channels", 3), c.frames, c.resolution, c.resolution)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @abstractmethod
    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """The noise of ``n`` videos (first axis = video), drawn from ``generator``."""

    @abstractmethod
    def sample(self, noise: torch.Tensor, **conditions) -> torch.Tensor:
        """Videos ``(B, C, T, H, W)`` in ``[-1, 1]`` from ``noise`` (and the declared conditions)."""

    def preview(self, noise: torch.Tensor, real: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The trainer's sample grid: ``sample(noise)``. ``real()`` returns the first training clips
        ``(n, C, T, H, W)`` (loaded on first call) for models whose progress shows on real data."""
        return self.sample(noise)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per top-level sub-module (e.g. generator, discriminator) and in total."""
        return parameter_counts(self)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level sub-module and in total."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


class FirstStageAutoencoder(VideoModel):
    """Base of the tokenizers trained before a second-stage prior (VideoGPT's VQ-VAE, NÜWA's VQ-GAN):
    nothing to sample from noise, so the trainer's preview shows real clips beside their reconstructions.
    Subclasses define ``encode`` and ``decode``, and a ``sample`` that says which model to sample instead."""

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Row indices ``(n,)``: an autoencoder has no noise; the preview reconstructs real clips."""
        return torch.arange(n, device=device if device is not None else self.device)

    @torch.no_grad()
    def preview(self, noise: torch.Tensor, real) -> torch.Tensor:
        """Originals and reconstructions side by side: ``(n, 3, T, H, 2W)`` (left real, right decoded)."""
        real = real()[: len(noise)]
        recon = self.decode(self.encode(real)).clamp(-1, 1)
        return torch.cat([real, recon], dim=-1)


class SecondStageModel(VideoModel):
    """Base of the models trained on the tokens of a frozen first stage (the VideoGPT prior over its VQ-VAE,
    NÜWA over its VQ-GAN). What they share is the first stage's life cycle, set up by
    :meth:`attach_first_stage` in the subclass's ``__init__``:

    - held as ``self.<key>`` (``vqvae``, ``vqgan``: the ``model.<key>`` option and the state-dict prefix);
    - loaded from the first-stage run ``model.<key>`` when the model is built, if that run still holds the
      model of the stored config (``model.<key>_config``) -- except on the meta device (shape-only builds,
      e.g. the checkpoint check), where there is nothing to load into;
    - frozen: no gradients and always in eval mode (batch norm keeps its running statistics);
    - :attr:`first_stage_loaded`: True once trained weights are in (read now, or with a checkpoint of this
      model later); :meth:`check_first_stage_loaded` refuses to train on a placeholder.

    ``token_grid``: the ``(t, h, w)`` grid of tokens of one video.
    """

    first_stage_loaded: bool

    def attach_first_stage(self, key: str, stage: FirstStageAutoencoder, run: str, stored_config: str,
                           label: str, skip: tuple[str, ...] = ()) -> None:
        """Hold ``stage`` as ``self.<key>``, load its weights from ``run`` (see the class docstring) and freeze
        it. ``label`` names it in errors (``"VQ-VAE"``); ``skip``: key prefixes of the run's weights the frozen
        stage does not keep (NÜWA drops the VQ-GAN's discriminator)."""
        setattr(self, key, stage)
        self._first_stage_key, self._first_stage_run, self._first_stage_label = key, run, label
        self.first_stage_loaded = False
        on_meta = any(p.is_meta for p in stage.parameters())
        if run and stored_config and not on_meta:
            ckpt = checkpoint_with_model(run, stored_config)
            if ckpt is not None:
                from safetensors.torch import load_file

                state = {k: v for k, v in load_file(ckpt / "model.safetensors").items() if not k.startswith(skip)}
                stage.load_state_dict(state)
                self.first_stage_loaded = True
        # a checkpoint of this model holds the first stage's weights too
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "first_stage_loaded", True))
        stage.requires_grad_(False).eval()

    @property
    def first_stage(self) -> FirstStageAutoencoder:
        return self._modules[self._first_stage_key]

    @property
    @abstractmethod
    def token_grid(self) -> tuple[int, int, int]:
        """The ``(t, h, w)`` grid of tokens of one video."""

    def train(self, mode: bool = True) -> SecondStageModel:
        super().train(mode)
        self.first_stage.eval()  # frozen: batch norm keeps its running statistics
        return self

    def check_first_stage_loaded(self) -> None:
        """Raise :class:`ConfigError` unless the first stage holds trained weights."""
        if not self.first_stage_loaded:
            key, label = self._first_stage_key, self._first_stage_label
            raise ConfigError(f"the {label} has no trained weights: model.{key} = {self._first_stage_run!r} is "
                              f"missing or no longer holds the {label} this config was built from; point "
                              f"model.{key} at the {label} run")


def first_stage_loaded_alias() -> property:
    """A family's own name for :attr:`SecondStageModel.first_stage_loaded` (``vqvae_loaded``, ``vqgan_loaded``:
    scripts and tests that load first-stage weights by hand set it)."""
    return property(lambda self: self.first_stage_loaded,
                    lambda self, value: setattr(self, "first_stage_loaded", bool(value)))


class UniformNoiseVideoGAN(VideoModel):
    """Base of GANs driven by ``z ~ U(-1, 1)^z_dim`` whose ``config`` has ``frames``, ``resolution``
    and ``z_dim`` and whose ``generator`` has a ``temporal`` generator (see :mod:`kinema.nn.temporal`)."""

    generator: nn.Module
    default_objective = "gan"

    @property
    def capabilities(self) -> Capabilities:
        continuous = bool(self.generator.temporal.continuous)
        return Capabilities(continuous_time=continuous, conditions=frozenset({"times"}) if continuous else frozenset())

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``z ~ U(-1, 1)^z_dim``, ``(n, z_dim)``; drawn on the generator's device, then moved."""
        return draw_noise("uniform", (n, self.config.z_dim), generator, device if device is not None else self.device)

    # What the GAN objectives need of a model beyond its networks (kinema.objectives.gan.GANModel): these
    # GANs do not augment D's inputs, so there is nothing to adapt and R1 sees the reals as D does.
    augments_reals: ClassVar[bool] = False

    def augment_levels(self, levels: list[torch.Tensor], generator: torch.Generator | None = None,
                       rows=None) -> list[torch.Tensor]:
        """No augmentation: ``levels`` as they are."""
        return levels

    def observe_real_scores(self, scores: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """No adaptive augmentation: nothing to log."""
        return {}
