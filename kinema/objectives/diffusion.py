"""Diffusion objective (Video Diffusion Models, Ho et al. 2022): denoising regression with joint image-video training.

Per sample: ``t ~ U(0, 1)``, ``lambda_t`` from the model's clipped cosine schedule, ``eps ~ N(0, I)``,
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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinema import diffusion
from kinema.config import ConfigError
from kinema.objectives.base import StepContext


@dataclass
class DiffusionObjectiveConfig:
    """The diffusion objective's settings (``objective.name = "diffusion"``)."""

    name: Literal["diffusion"] = "diffusion"
    # Independent image frames appended to every training clip (paper: 0, 4 or 8 per video); 0 = video only.
    joint_image_frames: int = 0

    def validate(self) -> None:
        if self.joint_image_frames < 0:
            raise ConfigError(f"objective.joint_image_frames must be >= 0 (0 disables joint training), "
                              f"got {self.joint_image_frames}")


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A micro-batch is a clip tensor ``(b, C, T, H, W)`` or ``(clips, labels)``."""
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


class DiffusionObjective:
    """One phase per iteration: the denoiser's regression loss, one optimiser step."""

    accepts_labels = True  # with data.labels the trainer passes (clips, labels) micro-batches

    ema_target = "denoiser"
    compile_targets = ("denoiser",)

    def __init__(self, model, config: DiffusionObjectiveConfig) -> None:
        self.model = model
        self.config = config

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"denoiser": list(self.model.denoiser.parameters())}

    def draws(self, ctx: StepContext, frames: int, device) -> dict[str, torch.Tensor]:
        """All per-sample randomness of one step, for the whole global batch (on the generator's device)."""
        n, k, g = ctx.global_batch, self.config.joint_image_frames, ctx.generator
        c, _, h, w = self.model.video_shape
        gd = g.device
        return {
            "t": torch.rand(n, generator=g, device=gd),
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

    def train_step(self, micro_batches: list, ctx: StepContext) -> dict[str, torch.Tensor]:
        model, cfg = self.model, self.model.config
        k = self.config.joint_image_frames
        parts = [split_batch(b) for b in micro_batches]
        clips0, _ = parts[0]
        device = clips0.device
        if cfg.num_classes > 0 and any(labels is None for _, labels in parts):
            raise ValueError(
                f"model.num_classes = {cfg.num_classes} makes the model class-conditional, but the batches carry "
                "no labels; set data.labels = true (a cache prepared with --layout ucf101) or model.num_classes = 0"
            )
        r = self.draws(ctx, clips0.shape[2], device)
        pool = torch.cat([clips for clips, _ in parts]) if k > 0 else None
        first = ctx.rows[0].start
        ctx.optimizers["denoiser"].zero_grad(set_to_none=True)
        losses = []
        for (clips, labels), rows in zip(parts, ctx.rows):
            rs = slice(rows.start, rows.stop)
            x = self.joint_batch(clips, pool, slice(rows.start - first, rows.stop - first), r["offset"][rs],
                                 r["frame"][rs]) if k > 0 else clips
            eps = r["eps"][rs].to(device)
            logsnr = model.logsnr(r["t"][rs].to(device))
            alpha, sigma = diffusion.alpha_sigma(logsnr)
            z = diffusion.broadcast(alpha, x) * x + diffusion.broadcast(sigma, x) * eps
            if labels is not None and cfg.num_classes > 0:
                labels = labels.to(device).long()
                labels = torch.where(r["drop"][rs].to(device) < cfg.cond_drop_prob, cfg.num_classes, labels)
            elif cfg.num_classes == 0:
                labels = None
            out = model.denoiser(z, logsnr, labels, image_frames=k)
            target = diffusion.training_target(x, eps, alpha, sigma, cfg.parameterization)
            loss = F.mse_loss(out.float(), target.float())
            ctx.scale(loss).backward()
            losses.append(loss.detach())
        loss = torch.stack(losses).mean()
        ctx.apply("denoiser", {"diffusion": loss})
        if ctx.scaler is not None:
            ctx.scaler.update()
        return {"loss": loss}
