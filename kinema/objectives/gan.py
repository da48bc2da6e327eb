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
from kinema.nn.batch import BatchRows
from kinema.objectives.base import StepContext


class GANModel(Protocol):
    """What a model offers the GAN objective (TGANv2 implements it).

    Videos are lists with one entry per discriminator level, each ``(B_l, 3, T_l, H_l, W_l)``.
    ``rows`` says which rows of the global batch the call holds; per-sample random draws are made
    for the whole batch and sliced (see :class:`~kinema.nn.BatchRows`).
    """

    generator: nn.Module
    discriminator: nn.Module

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor: ...
    def generate_levels(
        self, z: torch.Tensor, generator: torch.Generator | None = None, rows: BatchRows | None = None
    ) -> list[torch.Tensor]: ...
    def real_levels(
        self, video: torch.Tensor, generator: torch.Generator | None = None, rows: BatchRows | None = None
    ) -> list[torch.Tensor]: ...
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

    def train_step(self, micro_batches: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One G step then one D step over this process's micro-batches of real videos.

        Noise is drawn for the whole global batch (identical on every process) and sliced by
        ``ctx.rows``; before each micro-step the noise RNG is rewound to the phase's start, so the
        model's per-call draws (shared frame offsets, per-sample offsets drawn for all rows) are
        those of one pass over the whole batch. Gradients of the micro-steps add up (each loss is
        divided by their number), so ``k`` micro-batches of ``B/k`` give the batch-``B`` gradient
        whenever the model has no batch statistics (batch norm sees one micro-batch at a time).
        """
        cfg, model, k = self.config, self.model, ctx.accumulate
        device = micro_batches[0].device
        g_params, d_params = ctx.params("generator"), ctx.params("discriminator")
        z_all = model.sample_noise(ctx.global_batch, generator=ctx.generator, device=device)

        # Generator phase. The fake scores are computed once and serve both updates, like the
        # official updater: D runs on detached copies of the fakes, the G loss is backpropagated
        # through D to those copies (keeping D's graph), then through G from the fakes, which frees
        # G's graph before the D step -- the effect of Chainer's unchain_backward(). With one
        # micro-step the D loss reuses those scores; with several, D's graphs are not kept (that
        # would hold D's activations for the whole batch) and D is re-run on the stored fakes (its
        # weights have not changed in between, so the scores are the same).
        ctx.optimizers["generator"].zero_grad(set_to_none=True)
        start = ctx.generator.get_state()
        fake_inputs, fake_scores, g_losses = [], [], []
        for rows in ctx.rows:
            ctx.generator.set_state(start)
            fakes = model.generate_levels(z_all[rows.start : rows.stop], generator=ctx.generator, rows=rows)
            inputs = [f.detach().requires_grad_() for f in fakes]
            scores = torch.cat(model.discriminate(inputs))
            loss_g = generator_loss(scores, cfg.loss)
            grads = torch.autograd.grad(ctx.scale(loss_g), inputs, retain_graph=k == 1)
            torch.autograd.backward(fakes, grads, inputs=g_params)
            del fakes, grads
            fake_inputs.append([x.detach() for x in inputs])
            fake_scores.append(scores if k == 1 else scores.detach())
            g_losses.append(loss_g.detach())
        loss_g = torch.stack(g_losses).mean()
        ctx.apply("generator", {"generator": loss_g})

        # Discriminator phase. The real branch and its R1 penalty run in fp32 even under autocast:
        # the penalty squares input gradients and differentiates again, a path where fp16
        # overflows and bf16 loses precision.
        ctx.optimizers["discriminator"].zero_grad(set_to_none=True)
        start = ctx.generator.get_state()
        d_losses, penalties, real_means = [], [], []
        for real, rows, fakes, scores in zip(micro_batches, ctx.rows, fake_inputs, fake_scores):
            ctx.generator.set_state(start)
            with torch.autocast(device.type, enabled=False):
                levels = model.real_levels(real, ctx.generator, rows=rows)
                reals = [r.detach().float().requires_grad_(cfg.gp_weight > 0) for r in levels]
                real_scores = torch.cat(model.discriminate(reals))
                penalty = (
                    real_gradient_penalty(real_scores, reals, cfg.gp_reduction)
                    if cfg.gp_weight > 0
                    else torch.zeros((), device=device)
                )
            if k > 1:
                scores = torch.cat(model.discriminate(fakes))
            loss_d = discriminator_loss(real_scores, scores, cfg.loss)
            ctx.scale(loss_d + cfg.gp_weight * penalty).backward(inputs=d_params)
            d_losses.append(loss_d.detach())
            penalties.append(penalty.detach())
            real_means.append(real_scores.detach().mean())
        loss_d, penalty = torch.stack(d_losses).mean(), torch.stack(penalties).mean()
        ctx.apply("discriminator", {"discriminator": loss_d, "gradient_penalty": penalty})
        if ctx.scaler is not None:
            ctx.scaler.update()

        return {
            "loss_g": loss_g,
            "loss_d": loss_d,
            "gp": penalty,
            "score_real": torch.stack(real_means).mean(),
            "score_fake": torch.stack([s.detach().mean() for s in fake_scores]).mean(),
        }
