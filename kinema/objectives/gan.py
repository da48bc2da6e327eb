"""GAN objective: non-saturating softplus (TGANv2's) or hinge loss, R1 penalty on real inputs.

Follows the official TGANv2 updater (``tgan2/updaters/dirac_updater.py``): one generator forward
feeds both updates -- the generator step first, then the discriminator step on the same fakes,
detached -- with one D step per G step. Level scores are concatenated before the mean.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kinema.config import ObjectiveConfig
from kinema.objectives.base import check_finite


class GANModel(Protocol):
    """What a model offers the GAN objective (TGANv2 implements it).

    Videos are lists with one entry per discriminator level, each ``(B_l, 3, T_l, H_l, W_l)``.
    """

    generator: nn.Module
    discriminator: nn.Module

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor: ...
    def generate_levels(self, z: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]: ...
    def real_levels(self, video: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]: ...
    def discriminate(self, videos: list[torch.Tensor]) -> list[torch.Tensor]: ...


def generator_loss(fake_scores: torch.Tensor, kind: str) -> torch.Tensor:
    fake_scores = fake_scores.float()  # losses in fp32 under mixed precision
    if kind == "softplus":
        return F.softplus(-fake_scores).mean()
    return -fake_scores.mean()  # hinge: the generator maximises the critic score


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, kind: str) -> torch.Tensor:
    real_scores, fake_scores = real_scores.float(), fake_scores.float()
    if kind == "softplus":
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def gradient_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """L2 norm of all gradients (0-d tensor, no host sync); NaN/inf if any gradient is."""
    norms = torch._foreach_norm([p.grad for p in params if p.grad is not None])
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def real_gradient_penalty(
    real_scores: torch.Tensor, real_inputs: list[torch.Tensor], reduction: str
) -> torch.Tensor:
    """Zero-centred penalty ``sum_levels sum(d(sum y_real)/dx_level ^ 2)``.

    ``reduction="sum"`` sums over the batch too (the official code, per GPU); ``"mean"`` divides by
    the batch size of the first level, so the strength does not depend on the batch.
    """
    grads = torch.autograd.grad(real_scores.sum(), real_inputs, create_graph=True)
    penalty = sum(g.float().pow(2).sum() for g in grads)  # fp32 even under autocast
    if reduction == "mean":
        penalty = penalty / real_inputs[0].shape[0]
    return penalty


class GANObjective:
    """Two phases per iteration: a G step then a D step, as in the official TGANv2 updater."""

    ema_target = "generator"
    # The discriminator's R1 penalty needs a double backward, which compiled graphs do not support.
    compile_targets = ("generator",)

    def __init__(self, model: GANModel, config: ObjectiveConfig) -> None:
        self.model = model
        self.config = config

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {
            "generator": list(self.model.generator.parameters()),
            "discriminator": list(self.model.discriminator.parameters()),
        }

    @staticmethod
    def _step(optimizer, scaler, losses: dict[str, torch.Tensor], grad_name: str) -> None:
        """Check, then apply one optimiser step (one host sync for all checks)."""
        params = optimizer.param_groups[0]["params"]
        if scaler is None:
            check_finite({**losses, grad_name: gradient_norm(params)})
            optimizer.step()
        else:
            check_finite(losses)
            scaler.unscale_(optimizer)
            scaler.step(optimizer)

    def train_step(
        self,
        real: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        generator: torch.Generator,
        scaler: torch.amp.GradScaler | None = None,
    ) -> dict[str, torch.Tensor]:
        """One G step then one D step. ``scaler`` (fp16) scales the losses; it then owns the
        non-finite-gradient check (it skips such steps and lowers the scale), otherwise we raise."""
        cfg, model = self.config, self.model
        scale = scaler.scale if scaler is not None else (lambda loss: loss)
        g_params = optimizers["generator"].param_groups[0]["params"]
        d_params = optimizers["discriminator"].param_groups[0]["params"]

        z = model.sample_noise(real.shape[0], generator=generator, device=real.device)
        fakes = model.generate_levels(z, generator=generator)
        # The fake scores are computed once and serve both updates, like the official updater:
        # D runs on detached copies of the fakes, the G loss is backpropagated through D to those
        # copies (keeping D's graph), then through G from the fakes, which frees G's graph before the
        # D step -- the effect of Chainer's unchain_backward(). The D loss then reuses the scores.
        fake_inputs = [f.detach().requires_grad_() for f in fakes]
        fake_scores = torch.cat(model.discriminate(fake_inputs))
        loss_g = generator_loss(fake_scores, cfg.loss)
        optimizers["generator"].zero_grad(set_to_none=True)
        grads = torch.autograd.grad(scale(loss_g), fake_inputs, retain_graph=True)
        torch.autograd.backward(fakes, grads, inputs=g_params)
        del fakes, grads
        self._step(optimizers["generator"], scaler, {"generator": loss_g}, "generator gradient norm")

        # The real branch and its R1 penalty run in fp32 even under autocast: the penalty squares input
        # gradients and differentiates again, a path where fp16 overflows and bf16 loses precision.
        with torch.autocast(real.device.type, enabled=False):
            reals = [r.detach().float().requires_grad_(cfg.gp_weight > 0) for r in model.real_levels(real, generator)]
            real_scores = torch.cat(model.discriminate(reals))
            penalty = (
                real_gradient_penalty(real_scores, reals, cfg.gp_reduction)
                if cfg.gp_weight > 0
                else torch.zeros((), device=real.device)
            )
        loss_d = discriminator_loss(real_scores, fake_scores, cfg.loss)
        optimizers["discriminator"].zero_grad(set_to_none=True)
        scale(loss_d + cfg.gp_weight * penalty).backward(inputs=d_params)
        self._step(optimizers["discriminator"], scaler, {"discriminator": loss_d, "gradient_penalty": penalty},
                   "discriminator gradient norm")
        if scaler is not None:
            scaler.update()

        return {
            "loss_g": loss_g.detach(),
            "loss_d": loss_d.detach(),
            "gp": penalty.detach(),
            "score_real": real_scores.detach().mean(),
            "score_fake": fake_scores.detach().mean(),
        }
