"""Diffusion objective (Video Diffusion Models, Ho et al. 2022): denoising regression with joint image-video training.

Per sample: ``t ~ U(0, 1)`` (or uniform on an N-step sampler's grid, ``train_timesteps = N``), ``lambda_t`` from the model's clipped cosine schedule, ``eps ~ N(0, I)``,
``z_t = alpha_t x + sigma_t eps``; the network regresses its own target (``eps`` or
``v = alpha eps - sigma x``) with a plain mean squared error. In terms of the paper's weighted loss
``E[w(lambda_t) ||x_hat(z_t) - x||^2]`` this is ``w = SNR = exp(lambda)`` for ``eps`` (the paper's
Section 2 training loss, Ho et al. 2020) and ``w = 1 + SNR`` for ``v`` (Salimans & Ho 2022), since
``||eps_hat - eps||^2 = SNR ||x_hat - x||^2`` and ``||v_hat - v||^2 = ||x_hat - x||^2 / sigma^2``.

Joint image-video training (paper Section 3): ``joint_image_frames = k`` independent frames are
appended to each clip, making a ``(C, T + k, H, W)`` entry whose last ``k`` frames are images:
temporal attention is masked so each attends only to itself (GroupNorm is per frame), so they are
denoised as independent images with the same ``t`` as their clip. The paper takes them from random
other videos; here image ``j`` of clip ``i`` is frame ``f_ij`` (uniform) of clip ``(i + o_i) mod P``
of this process's share of the batch (``P`` clips, all micro-batches together; ``o_i`` uniform in
``[1, P)``, so never the clip itself when ``P > 1``).

Randomness (``t``, ``eps``, the null-label drop, the image offsets and frame indices) is drawn once
per step for the whole global batch from ``ctx.generator`` and sliced by each micro-batch's rows, so
``k`` micro-batches of ``B / k`` give the gradient of one batch of ``B`` (the denoiser has no batch
statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kinema import diffusion
from kinema.data.batch import Batch
from kinema.errors import ConfigError
from kinema.objectives.base import Objective, Phase, StepContext


@dataclass
class DiffusionConfig:
    """The diffusion objective's settings (``objective.name = "diffusion"``)."""

    name: Literal["diffusion"] = "diffusion"
    # Independent image frames appended to every training clip (paper: 0, 4 or 8 per video); 0 = video only.
    joint_image_frames: int = 0
    # Class-conditional models: labels replaced by the null label with this probability (classifier-free
    # guidance; paper: 0.1). Was model.cond_drop_prob before; old configs are migrated.
    cond_drop_prob: float = 0.1
    # 0: t ~ U(0, 1), the paper's continuous time. N > 0: t uniform on the grid {1/N, ..., N/N} -- the
    # points a sampler with N steps evaluates the network at (kinema.diffusion.sample_loop) -- as
    # video-diffusion-pytorch trains on exactly the discrete timesteps it samples with. For comparisons
    # with such code; a model trained so is only trained for N-step sampling.
    train_timesteps: int = 0

    def validate(self) -> None:
        if self.train_timesteps < 0:
            raise ConfigError(f"objective.train_timesteps must be >= 0 (0 = continuous time), got "
                              f"{self.train_timesteps}")
        if self.joint_image_frames < 0:
            raise ConfigError(f"objective.joint_image_frames must be >= 0 (0 disables joint training), "
                              f"got {self.joint_image_frames}")
        if not 0 <= self.cond_drop_prob <= 1:
            raise ConfigError(f"objective.cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")


class DiffusionModel(Protocol):
    """What a model offers the diffusion objective (VDM implements it).

    ``denoiser(z, logsnr, labels, image_frames=k)`` predicts ``prediction_target`` (``"eps"`` or
    ``"v"``: a property of the network, which the sampler needs too, so it stays with the model);
    ``num_classes > 0`` makes it class-conditional with the null label ``num_classes``.
    """

    denoiser: nn.Module
    video_shape: tuple[int, int, int, int]
    prediction_target: str
    num_classes: int

    def logsnr(self, t: torch.Tensor) -> torch.Tensor: ...


class DiffusionObjective(Objective):
    """One phase per iteration: the denoiser's regression loss, one optimiser step."""

    name = "diffusion"
    model_interface = DiffusionModel
    ema_target = "denoiser"
    compile_targets = ("denoiser",)
    conditions = frozenset({"labels"})  # with data.labels, batches carry class labels

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"denoiser": list(self.model.denoiser.parameters())}

    def draws(self, ctx: StepContext, frames: int, device) -> dict[str, torch.Tensor]:
        """All per-sample randomness of one step, for the whole global batch (on the generator's device)."""
        n, k, g = ctx.global_batch, self.config.joint_image_frames, ctx.generator
        c, _, h, w = self.model.video_shape
        gd = g.device
        steps = self.config.train_timesteps
        t = torch.rand(n, generator=g, device=gd)
        if steps:  # the sampler's grid: i / steps for i = 1..steps
            t = (torch.floor(t * steps) + 1) / steps
        return {
            "t": t,
            "drop": torch.rand(n, generator=g, device=gd),
            "offset": torch.rand(n, generator=g, device=gd),
            "frame": torch.randint(frames, (n, k), generator=g, device=gd),
            "eps": torch.randn(n, c, frames + k, h, w, generator=g, device=gd),
        }

    def joint_batch(self, clips: torch.Tensor, pool: torch.Tensor, local_rows: slice,
                    offset: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """Append ``k`` image frames from other clips of ``pool (P, C, T, H, W)`` to ``clips (b, C, T, H, W)``."""
        k = frame.shape[1]
        if k == 0:
            return clips
        p = pool.shape[0]
        idx = torch.arange(local_rows.start, local_rows.stop, device=clips.device)
        shift = 1 + (offset.to(clips.device) * max(p - 1, 0)).long().clamp_max(max(p - 2, 0)) if p > 1 else 0
        source = (idx + shift) % p  # (b,)
        images = pool[source[:, None], :, frame.to(clips.device)]  # (b, k, C, H, W)
        return torch.cat([clips, images.permute(0, 2, 1, 3, 4)], dim=2)

    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext):
        model, k = self.model, self.config.joint_image_frames
        classes = model.num_classes
        device = batches[0].clips.device
        if classes > 0 and any(b.labels is None for b in batches):
            raise ConfigError(
                f"model.num_classes = {classes} makes the model class-conditional, but the batches carry "
                "no labels; set data.labels = true (a cache prepared with --layout ucf101) or model.num_classes = 0"
            )
        r = self.draws(ctx, batches[0].clips.shape[2], device)
        pool = torch.cat([b.clips for b in batches]) if k > 0 else None
        first = ctx.rows[0].start

        def loss(batch: Batch, rows) -> torch.Tensor:
            rs = slice(rows.start, rows.stop)
            x = batch.clips
            if k > 0:
                x = self.joint_batch(x, pool, slice(rows.start - first, rows.stop - first), r["offset"][rs],
                                     r["frame"][rs])
            eps = r["eps"][rs].to(device)
            logsnr = model.logsnr(r["t"][rs].to(device))
            alpha, sigma = diffusion.alpha_sigma(logsnr)
            z = diffusion.broadcast(alpha, x) * x + diffusion.broadcast(sigma, x) * eps
            labels = None
            if classes > 0:
                labels = batch.labels.to(device).long()
                labels = torch.where(r["drop"][rs].to(device) < self.config.cond_drop_prob, classes, labels)
            out = model.denoiser(z, logsnr, labels, image_frames=k)
            target = diffusion.training_target(x, eps, alpha, sigma, model.prediction_target)
            return F.mse_loss(out.float(), target.float())

        mean = self.mean_loss(batches, ctx, loss)
        return {"diffusion": mean}, {"loss": mean}
