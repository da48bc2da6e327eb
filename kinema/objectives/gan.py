"""GAN objective: non-saturating softplus (TGANv2's) or hinge loss, R1 penalty on real inputs.

By default follows the official TGANv2 updater (``tgan2/updaters/dirac_updater.py``): one generator
forward feeds both updates -- the generator step first, then the discriminator step on the same fakes,
detached -- with one D step per G step. ``update_order = "discriminator_first"`` is the loop of the
TGAN-ODE authors' PyTorch port (``tganv2 UCF101.py``, lines 93-119): D on a no-grad fake, then G on a
new draw scored by the updated D. Level scores are concatenated before the mean.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kinema.data.batch import Batch
from kinema.errors import ConfigError
from kinema.models.base import Capabilities
from kinema.nn.batch import BatchRows
from kinema.objectives.base import Objective, Phase, StepContext


@dataclass
class GANConfig:
    """The GAN objective's settings (``objective.name = "gan"``)."""

    name: Literal["gan"] = "gan"
    # Non-saturating softplus loss is TGANv2's; hinge is offered for comparison.
    loss: Literal["softplus", "hinge"] = "softplus"
    # Zero-centred gradient penalty on real inputs (R1), summed over discriminator levels.
    gp_weight: float = 0.5
    # "sum": lam * sum over the batch and all pixels of grad^2, as the official code does per GPU
    # (batch 32 per GPU) -- its strength grows with the batch. "mean": lam * mean over samples of
    # per-sample sum(grad^2); with batch B, gp_weight = 0.5 * 32 under "mean" matches the paper's run.
    gp_reduction: Literal["sum", "mean"] = "sum"
    # Lazy R1 (StyleGAN2's lazy regularisation): compute the penalty only on steps where
    # step % gp_every == 0, weighted by gp_every, in that step's discriminator update. 1 = every step.
    gp_every: int = 1
    # "generator_first": the official updater -- G steps on D's current scores, then D steps on those
    # same fakes (one generator forward a step). "discriminator_first": the TGAN-ODE authors' port --
    # D steps on fakes drawn without gradient, then G steps on a fresh draw against the updated D (two
    # generator forwards a step, each updating batch-norm statistics).
    update_order: Literal["generator_first", "discriminator_first"] = "generator_first"

    def validate(self) -> None:
        if self.update_order not in ("generator_first", "discriminator_first"):
            raise ConfigError(f"objective.update_order must be 'generator_first' or 'discriminator_first', "
                              f"got {self.update_order!r}")
        if self.gp_weight < 0:
            raise ConfigError(f"objective.gp_weight must be >= 0, got {self.gp_weight}")
        if self.gp_every < 1:
            raise ConfigError(f"objective.gp_every must be >= 1 (1 = R1 on every step), got {self.gp_every}")


class GANModel(Protocol):
    """What a model offers the GAN objectives (TGAN, TGANv2 and StyleGAN-V implement it).

    Videos are lists with one entry per discriminator level, each ``(B_l, 3, T_l, H_l, W_l)``.
    ``rows`` says which rows of the global batch the call holds; per-sample random draws are made
    for the whole batch and sliced (see :class:`~kinema.nn.BatchRows`). A model that declares
    ``capabilities.sparse_frames`` takes ``real_levels(..., times=(B, F))`` for sparse clips.
    ``observe_real_scores(scores (B,), step)`` sees each step's real scores (all micro-batches of this
    process) after the discriminator phase -- adaptive augmentation's hook -- and returns metrics to
    log (``{}`` for a model without one). ``augments_reals``: the model augments what D sees
    differentiably (StyleGAN-V's ADA); ``real_levels(..., augmented=False)`` then gives the reals before
    augmentation, the R1 leaf, and ``augment_levels(levels, generator, rows)`` augments them for D.
    """

    generator: nn.Module
    discriminator: nn.Module
    capabilities: Capabilities
    augments_reals: bool

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor: ...
    def generate_levels(
        self, z: torch.Tensor, generator: torch.Generator | None = None, rows: BatchRows | None = None
    ) -> list[torch.Tensor]: ...
    def real_levels(
        self, video: torch.Tensor, generator: torch.Generator | None = None, rows: BatchRows | None = None
    ) -> list[torch.Tensor]: ...
    def discriminate(self, videos: list[torch.Tensor]) -> list[torch.Tensor]: ...
    def augment_levels(
        self, levels: list[torch.Tensor], generator: torch.Generator | None = None, rows: BatchRows | None = None
    ) -> list[torch.Tensor]: ...
    def observe_real_scores(self, scores: torch.Tensor, step: int) -> dict[str, torch.Tensor]: ...


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 -> fp32 (losses and the R1 path under mixed precision); fp32 and fp64 unchanged (float64
    runs are the exact-maths parity checks against the authors' code)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def generator_loss(fake_scores: torch.Tensor, kind: str) -> torch.Tensor:
    fake_scores = at_least_fp32(fake_scores)
    if kind == "softplus":
        return F.softplus(-fake_scores).mean()
    return -fake_scores.mean()  # hinge: the generator maximises the critic score


def discriminator_real_loss(real_scores: torch.Tensor, kind: str) -> torch.Tensor:
    """The reals' half of the discriminator's loss, 0-d fp32."""
    real_scores = at_least_fp32(real_scores)
    return F.softplus(-real_scores).mean() if kind == "softplus" else F.relu(1 - real_scores).mean()


def discriminator_fake_loss(fake_scores: torch.Tensor, kind: str) -> torch.Tensor:
    """The fakes' half of the discriminator's loss, 0-d fp32."""
    fake_scores = at_least_fp32(fake_scores)
    return F.softplus(fake_scores).mean() if kind == "softplus" else F.relu(1 + fake_scores).mean()


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, kind: str) -> torch.Tensor:
    return discriminator_real_loss(real_scores, kind) + discriminator_fake_loss(fake_scores, kind)


def real_gradient_penalty(
    real_scores: torch.Tensor, real_inputs: list[torch.Tensor], reduction: str
) -> torch.Tensor:
    """Zero-centred penalty ``sum_levels sum(d(sum y_real)/dx_level ^ 2)``.

    ``reduction="sum"`` sums over the batch too (the official code, per GPU); ``"mean"`` divides by
    the batch size of the first level, so the strength does not depend on the batch.
    """
    grads = torch.autograd.grad(real_scores.sum(), real_inputs, create_graph=True)
    penalty = sum(at_least_fp32(g).pow(2).sum() for g in grads)  # fp32 even under autocast
    if reduction == "mean":
        penalty = penalty / real_inputs[0].shape[0]
    return penalty


class TwoPlayerObjective(Objective):
    """What every GAN objective shares: the GAN model interface, one optimiser per player, the EMA of
    the generator and the generator phase. Subclasses define the phases, the generator's loss and the
    discriminator phase."""

    model_interface = GANModel
    ema_target = "generator"
    # The discriminator's R1 penalty needs a double backward, which compiled graphs do not support.
    compile_targets = ("generator",)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "generator": list(self.model.generator.parameters()),
            "discriminator": list(self.model.discriminator.parameters()),
        }

    @abstractmethod
    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        """The generator's loss from the fake scores (levels concatenated), 0-d fp32."""

    def _generator_phase(self, z: torch.Tensor, ctx: StepContext, keep_fakes: bool = True):
        """G step on the fakes of noise ``z`` (the global batch's, sliced by ``ctx.rows``).

        The fake scores are computed once and can serve both updates, like the official updaters: D runs
        on detached copies of the fakes, the G loss is backpropagated through D to those copies (keeping
        D's graph), then through G from the fakes, which frees G's graph before the D step -- the effect of
        Chainer's unchain_backward(). ``keep_fakes``: the fakes (``self._fake_inputs``) and their scores
        (``self._fake_scores``) are kept for the D step; with one micro-step the scores keep D's graph,
        with several they are detached (that would hold D's activations for the whole batch) and D is
        re-run on the stored fakes (its weights have not changed in between, so the scores are the same).
        Before each micro-step the noise RNG is rewound to the phase's start.
        """
        model, k = self.model, ctx.accumulate
        g_params = ctx.params("generator")
        start = ctx.generator.get_state()
        self._fake_inputs, self._fake_scores, losses = [], [], []
        for rows in ctx.rows:
            ctx.generator.set_state(start)
            fakes = model.generate_levels(z[rows.start : rows.stop], generator=ctx.generator, rows=rows)
            inputs = [f.detach().requires_grad_() for f in fakes]
            scores = torch.cat(model.discriminate(inputs))
            loss_g = self.generator_loss(scores)
            grads = torch.autograd.grad(ctx.scale(loss_g), inputs, retain_graph=keep_fakes and k == 1)
            torch.autograd.backward(fakes, grads, inputs=g_params)
            del fakes, grads
            if keep_fakes:
                self._fake_inputs.append([x.detach() for x in inputs])
                self._fake_scores.append(scores if k == 1 else scores.detach())
            losses.append(loss_g.detach())
        loss_g = torch.stack(losses).mean()
        return {"generator": loss_g}, {"loss_g": loss_g}


class GANObjective(TwoPlayerObjective):
    """Two phases per iteration: a G step then a D step, as in the official TGANv2 updater (or D then G,
    ``update_order = "discriminator_first"``)."""

    name = "gan"

    def phases(self) -> tuple[Phase, ...]:
        if self.config.update_order == "discriminator_first":
            return (Phase("discriminator"), Phase("generator"))
        return (Phase("generator"), Phase("discriminator"))

    def begin_step(self, batches: list[Batch], ctx: StepContext) -> None:
        """Noise for the whole global batch (identical on every process), sliced by ``ctx.rows``; with
        ``discriminator_first`` a second draw for the generator's step."""
        device = batches[0].clips.device
        self._z = self.model.sample_noise(ctx.global_batch, generator=ctx.generator, device=device)
        self._fake_inputs = self._fake_scores = None
        if self.config.update_order == "discriminator_first":
            self._z_generator = self.model.sample_noise(ctx.global_batch, generator=ctx.generator, device=device)

    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext):
        """Before each micro-step the noise RNG is rewound to the phase's start, so the model's
        per-call draws (shared frame offsets, per-sample offsets drawn for all rows) are those of one
        pass over the whole batch. Gradients of the micro-steps add up (each loss is divided by their
        number), so ``k`` micro-batches of ``B/k`` give the batch-``B`` gradient whenever the model has
        no batch statistics (batch norm sees one micro-batch at a time)."""
        if self.config.update_order == "discriminator_first":
            if phase.name == "generator":
                return self._generator_phase(self._z_generator, ctx, keep_fakes=False)
            self._fakes_without_gradient(ctx)
            return self._discriminator_phase(batches, ctx)
        if phase.name == "generator":
            return self._generator_phase(self._z, ctx)
        return self._discriminator_phase(batches, ctx)

    @torch.no_grad()
    def _fakes_without_gradient(self, ctx: StepContext) -> None:
        """The D step's fakes of ``self._z`` (per micro-batch, no graph), generated in the model's training
        mode as the port does (``with torch.no_grad(): fake = gen(z)``); D scores them in its phase."""
        start = ctx.generator.get_state()
        self._fake_inputs, self._fake_scores = [], []
        for rows in ctx.rows:
            ctx.generator.set_state(start)
            self._fake_inputs.append(self.model.generate_levels(self._z[rows.start : rows.stop],
                                                                generator=ctx.generator, rows=rows))
            self._fake_scores.append(None)

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        return generator_loss(fake_scores, self.config.loss)

    def _discriminator_phase(self, batches: list[Batch], ctx: StepContext):
        # The real branch and its R1 penalty run in fp32 even under autocast: the penalty squares input
        # gradients and differentiates again, a path where fp16 overflows and bf16 loses precision.
        cfg, model, k = self.config, self.model, ctx.accumulate
        d_params = ctx.params("discriminator")
        device = batches[0].clips.device
        start = ctx.generator.get_state()
        gp_due = cfg.gp_weight > 0 and ctx.step % cfg.gp_every == 0
        d_losses, penalties, real_means, real_scores_all, fake_means = [], [], [], [], []
        for batch, rows, fakes, scores in zip(batches, ctx.rows, self._fake_inputs, self._fake_scores):
            # Fake scores kept from the generator's phase hold D's graph on the fakes: their half of the loss
            # is backpropagated first, which frees that graph before the reals' forward and R1's
            # double-backward graph are built -- a lower peak memory (TGANv2 at 192^2: docs/benchmarks.md),
            # the same gradient summed in another order. Fakes scored here keep the one backward (and
            # the real-then-fake forward order that batch-norm statistics see).
            fake_first = scores is not None and k == 1
            if fake_first:
                loss_fake = discriminator_fake_loss(scores, cfg.loss)
                ctx.scale(loss_fake).backward(inputs=d_params)  # frees D's graph on the fakes
            ctx.generator.set_state(start)
            with torch.autocast(device.type, enabled=False):
                # sparse data (data.sparse_frames) carries each frame's time: the model uses them as given
                extra = {"times": batch.times} if batch.times is not None else {}
                if extra and not model.capabilities.sparse_frames:
                    raise ConfigError(f"the batch carries frame times (data.sparse_frames > 0), but a "
                                      f"{type(model).__name__} does not train on sparse clips "
                                      "(capabilities.sparse_frames): set data.sparse_frames = 0")
                # A model with differentiable augmentation (StyleGAN-V's ADA) hands its reals un-augmented and
                # augments them after the R1 leaf: the penalty differentiates the reals before augmentation,
                # as StyleGAN2-ADA's loss does (augmentation inside run_D; stylegan-v loss.py:57-64,144-145).
                if model.augments_reals:
                    extra["augmented"] = False
                levels = model.real_levels(batch.clips, ctx.generator, rows=rows, **extra)
                reals = [at_least_fp32(r.detach()).requires_grad_(gp_due) for r in levels]
                seen = model.augment_levels(reals, ctx.generator, rows) if model.augments_reals else reals
                real_scores = torch.cat(model.discriminate(seen))
                penalty = (
                    real_gradient_penalty(real_scores, reals, cfg.gp_reduction)
                    if gp_due
                    else torch.zeros((), device=device)
                )
            loss_real = discriminator_real_loss(real_scores, cfg.loss)
            if not fake_first:  # not kept from the generator's phase (or several micro-steps): score the fakes now
                scores = torch.cat(model.discriminate(fakes))
                loss_fake = discriminator_fake_loss(scores, cfg.loss)
            still_due = loss_real if fake_first else loss_real + loss_fake
            ctx.scale(still_due + cfg.gp_weight * cfg.gp_every * penalty).backward(inputs=d_params)
            fake_means.append(scores.detach().float().mean())
            d_losses.append((loss_real + loss_fake).detach())
            penalties.append(penalty.detach())
            real_means.append(real_scores.detach().mean())
            real_scores_all.append(real_scores.detach())
        loss_d, penalty = torch.stack(d_losses).mean(), torch.stack(penalties).mean()
        metrics = {
            "loss_d": loss_d,
            "gp": penalty,
            "score_real": torch.stack(real_means).mean(),
            "score_fake": torch.stack(fake_means).mean(),
        }
        # a model's adaptive augmentation (ADA) reads D(real): GANModel.observe_real_scores
        metrics.update(model.observe_real_scores(torch.cat(real_scores_all), ctx.step))
        self._fake_inputs = self._fake_scores = None  # free the fakes before the next step
        return {"discriminator": loss_d, "gradient_penalty": penalty}, metrics
