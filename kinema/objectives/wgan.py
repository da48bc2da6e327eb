"""WGAN objective with singular value clipping (SVC) of the critic -- TGAN's (Saito et al., ICCV 2017).

Losses (Arjovsky et al. 2017, Eq. 3; TGAN ``updaters/tgan_updater_wgan.py`` lines 32-35): the critic D
minimises ``mean(D(fake)) - mean(D(real))``, the generator minimises ``-mean(D(fake))``. One critic
update per generator update: the official TGAN updater (``TGANUpdaterWGANSVC.update_core``, lines 25-50)
and the TGAN-ODE reference script (``tgan SVC UCF101.py`` lines 80-100) both do one of each per iteration
(no ``n_critic`` as in WGAN's Algorithm 1, so there is no key for it).

Lipschitz constraint -- singular value clipping (TGAN paper, "Singular Value Clipping"; project page
``docs/index.html`` lines 116-121: a constraint on "all linear and convolutional layers in the
discriminator"): after the update, every Linear / Conv weight ``W`` of the critic, reshaped to
``(shape[0], -1)`` (``(out, in * k_t * k_h * k_w)`` for a Conv3d, as the code does: line 55), is replaced by
``U min(S, 1) V^T`` (lines 10-16). Every BatchNorm gain is clamped to ``[0.01 sigma, sigma]`` with
``sigma = sqrt(running_var)`` (lines 59-65; same in the TGAN-ODE script, lines 108-113), which keeps the
batch-norm layer's gain ``gamma / sigma`` at most 1. Both run every ``clip_every`` iterations -- ``freq: 5``
in the official configs (``configs/ucf101/ucf101_wgan_svd_zdim-100_no-beta.yml`` line 46), because an SVD
of every layer is expensive -- after iterations 5, 10, ... (``self.it += 1`` then ``it % freq == 0``).

Update order (``order``): ``"g_first"`` is the official TGAN updater: one generator forward, the G step,
then the D step on the same fakes (detached), exactly like :class:`~kinema.objectives.gan.GANObjective`.
``"d_first"`` is the TGAN-ODE reference script (the runs behind the TGAN-ODE paper's table): a D step on
fakes of one noise draw (generated without gradients), then a G step on fakes of a fresh draw. That
script clips on iterations 0, 5, 10, ... (``epoch % 5 == 0``, after both updates); kinema clips after
iterations 5, 10, ... in both orders (one iteration apart, a negligible difference).

The optimiser is the trainer's (``train.optimizer = "rmsprop"``; TGAN ``train.py`` lines 118-121:
Chainer RMSprop, lr 5e-5, default alpha 0.99, eps 1e-8, which torch's RMSprop defaults equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from kinema.data.batch import Batch
from kinema.dist import all_reduce_mean, broadcast_
from kinema.errors import ConfigError
from kinema.objectives.base import Phase, StepContext
from kinema.objectives.gan import TwoPlayerObjective

CLIPPED_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)  # every Conv1d/2d/3d and ConvTranspose*


@dataclass
class WGANConfig:
    """The WGAN objective's settings (``objective.name = "wgan"``)."""

    name: Literal["wgan"] = "wgan"
    # "svc": singular value clipping + BatchNorm gain clamping (TGAN). "none": no Lipschitz constraint
    # (an unconstrained critic diverges; for ablations only).
    clip: Literal["svc", "none"] = "svc"
    # Clip after every `clip_every`-th iteration; 5 is the official TGAN configs' `freq: 5`.
    clip_every: int = 5
    # Clamp BatchNorm gains to [0.01 sigma, sigma] with the clipping (TGAN updater lines 59-65).
    clip_batchnorm: bool = True
    # "g_first": official TGAN updater; "d_first": the TGAN-ODE reference scripts (see the module docstring).
    order: Literal["g_first", "d_first"] = "g_first"

    def validate(self) -> None:
        if self.clip_every < 1:
            raise ConfigError(f"objective.clip_every must be >= 1, got {self.clip_every}")


def clippable_weights(module: nn.Module) -> list[nn.Parameter]:
    """The weights singular value clipping constrains: of every Linear and Conv layer of ``module``."""
    return [m.weight for m in module.modules() if isinstance(m, CLIPPED_LAYERS) and m.weight is not None]


def largest_singular_value(weight: torch.Tensor) -> torch.Tensor:
    """Spectral norm of ``weight`` reshaped to ``(shape[0], -1)`` as TGAN does (fp32 or wider)."""
    matrix = weight.detach().reshape(weight.shape[0], -1)
    return torch.linalg.matrix_norm(matrix.to(torch.promote_types(matrix.dtype, torch.float32)), ord=2)


@torch.no_grad()
def clip_singular_values_(module: nn.Module, limit: float = 1.0) -> torch.Tensor:
    """Singular value clipping, in place: each Linear / Conv weight of ``module``, as a ``(shape[0], -1)``
    matrix ``U S V^T``, becomes ``U min(S, limit) V^T`` (TGAN ``_clip_singular_value``). Weights whose
    singular values are all within the limit are left bit-identical. With several processes the clipped
    weights are broadcast from rank 0, so an SVD that differs in the last bit cannot split the replicas.

    Returns the largest singular value seen before clipping (0-d tensor, no host sync).
    """
    largest = []
    for weight in clippable_weights(module):
        matrix = weight.reshape(weight.shape[0], -1)
        work = matrix.to(torch.promote_types(matrix.dtype, torch.float32))
        u, s, vh = torch.linalg.svd(work, full_matrices=False)
        largest.append(s[0])
        clipped = (u * s.clamp(max=limit)) @ vh
        # Only where clipping changed something; torch.where keeps this free of a host sync.
        weight.copy_(torch.where(s[0] > limit, clipped, work).reshape(weight.shape).to(weight.dtype))
        broadcast_(weight.data)
    return torch.stack(largest).max() if largest else torch.zeros(())


@torch.no_grad()
def clamp_batchnorm_gains_(module: nn.Module, low: float = 0.01) -> None:
    """Clamp every BatchNorm gain of ``module`` to ``[low * sigma, sigma]``, ``sigma = sqrt(running_var)``
    (TGAN ``updaters/tgan_updater_wgan.py`` lines 59-65: ``gamma[gamma > std] = std``, ``gamma[gamma <
    0.01 std] = 0.01 std``). Running variances are per process (batch statistics are not synchronised),
    so with several processes their mean is used and every replica clamps to the same bounds."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.running_var is not None:
            sigma = all_reduce_mean(m.running_var.float()).sqrt()
            gamma = m.weight.float()
            m.weight.copy_(torch.minimum(torch.maximum(gamma, low * sigma), sigma).to(m.weight.dtype))


def _mean(scores: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(scores).float().mean()  # levels concatenated, fp32 under mixed precision


class WGANObjective(TwoPlayerObjective):
    """WGAN with a singular-value-clipped critic; the model offers the GAN interface (TGAN, TGANv2)."""

    name = "wgan"

    def phases(self) -> tuple[Phase, ...]:
        if self.config.order == "d_first":
            return Phase("discriminator"), Phase("generator")
        return Phase("generator"), Phase("discriminator")

    def begin_step(self, batches: list[Batch], ctx: StepContext) -> None:
        """Noise for the whole global batch (identical on every process), sliced by ``ctx.rows``;
        ``d_first`` draws a second batch for the G step, as the TGAN-ODE script does."""
        draw = lambda: self.model.sample_noise(ctx.global_batch, generator=ctx.generator,  # noqa: E731
                                               device=batches[0].clips.device)
        self._z = draw()
        self._z_g = draw() if self.config.order == "d_first" else self._z

    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext):
        """Each micro-step rewinds the noise RNG to the phase's start, so the model's per-call draws are
        those of one pass over the whole batch (as in :class:`~kinema.objectives.gan.GANObjective`)."""
        if phase.name == "generator":
            # g_first keeps the fakes for the D step (the official updater's single forward); d_first
            # generated the D step's fakes before this phase, from its own draw
            return self._generator_phase(self._z_g, ctx, keep_fakes=self.config.order == "g_first")
        if self.config.order == "d_first":
            return self._discriminator_phase_fresh(batches, ctx)
        return self._discriminator_phase_reuse(batches, ctx)

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        return -fake_scores.float().mean()  # the generator maximises the critic's score

    def _discriminator_phase_reuse(self, batches: list[Batch], ctx: StepContext):
        """g_first: the D step on the generator phase's fakes (their scores reused with one micro-step).

        With one micro-step the fakes' half of the critic loss is backpropagated first, which frees the
        critic's graph on the fakes (kept from the generator phase) before the reals go through it -- the
        same gradient summed in another order, the same forward order for batch norm (fakes scored in the
        generator phase, reals here), as :class:`~kinema.objectives.gan.GANObjective` does."""
        model, k = self.model, ctx.accumulate
        d_params = ctx.params("discriminator")
        start = ctx.generator.get_state()
        out = []
        for batch, rows, fakes, scores in zip(batches, ctx.rows, self._fake_inputs, self._fake_scores):
            ctx.generator.set_state(start)
            fake_first = k == 1
            if fake_first:
                loss_fake = scores.float().mean()
                ctx.scale(loss_fake).backward(inputs=d_params)  # frees the critic's graph on the fakes
            else:  # several micro-steps: the kept scores are detached (see _generator_phase); score again
                scores = torch.cat(model.discriminate(fakes))
                loss_fake = scores.float().mean()
            levels = model.real_levels(batch.clips, ctx.generator, rows=rows)
            real_scores = torch.cat(model.discriminate([r.detach() for r in levels]))
            loss_real = -real_scores.float().mean()
            ctx.scale(loss_real if fake_first else loss_real + loss_fake).backward(inputs=d_params)
            out.append(((loss_real + loss_fake).detach(), real_scores.detach().float().mean(),
                        scores.detach().float().mean()))
        self._fake_inputs = self._fake_scores = None  # free the fakes before the next step
        return self._critic_result(out)

    def _discriminator_phase_fresh(self, batches: list[Batch], ctx: StepContext):
        """d_first: fakes of this step's first noise draw, generated without gradients; D on real, then fake."""
        model = self.model
        d_params = ctx.params("discriminator")
        start = ctx.generator.get_state()
        out = []
        for batch, rows in zip(batches, ctx.rows):
            ctx.generator.set_state(start)
            with torch.no_grad():
                fakes = model.generate_levels(self._z[rows.start : rows.stop], generator=ctx.generator, rows=rows)
            # Real scores first, as the script (pr = dis(real); pf = dis(fake)): BN statistics follow it.
            levels = model.real_levels(batch.clips, ctx.generator, rows=rows)
            real_scores = torch.cat(model.discriminate([r.detach() for r in levels]))
            fake_scores = torch.cat(model.discriminate([f.detach() for f in fakes]))
            loss_d = fake_scores.float().mean() - real_scores.float().mean()
            ctx.scale(loss_d).backward(inputs=d_params)
            out.append((loss_d.detach(), real_scores.detach().float().mean(), fake_scores.detach().float().mean()))
        return self._critic_result(out)

    @staticmethod
    def _critic_result(out):
        loss_d, real, fake = (torch.stack(v).mean() for v in zip(*out))
        # -loss_d estimates the Wasserstein-1 distance (up to the critic's Lipschitz constant).
        return {"discriminator": loss_d}, {"loss_d": loss_d, "score_real": real, "score_fake": fake}

    def end_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Clipping after every ``clip_every``-th iteration (TGAN: ``it += 1; if it % freq == 0``)."""
        cfg = self.config
        if cfg.clip == "none" or (ctx.step + 1) % cfg.clip_every:
            return {}
        critic = self.model.discriminator
        sigma_max = clip_singular_values_(critic)
        if cfg.clip_batchnorm:
            clamp_batchnorm_gains_(critic)
        return {"critic_sigma_max": sigma_max.detach()}  # largest singular value before this clipping
