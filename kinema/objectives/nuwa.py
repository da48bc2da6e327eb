"""NÜWA objectives: the per-frame VQ-GAN (stage 1) and the token transformer (stage 2).

``nuwa_vqgan``: reconstruction (L1 or L2) + ``commitment * mse(z_e, sg[e])`` + (from ``disc_start`` on)
``disc_weight * lambda * hinge_G``, with the adaptive weight ``lambda = ||grad_last L_rec|| /
(||grad_last L_G|| + 1e-6)`` clamped to ``[0, adaptive_max]`` (taming-transformers' VQ-GAN;
lucidrains/nuwa-pytorch ``vqgan_vae.py`` L531-543 clamps at 1e4 and puts the perceptual loss in the
numerator), and the hinge discriminator loss on single frames (``vqgan_vae.py`` L107-111). A perceptual
term is added only when ``perceptual_weights`` names a VGG16 weights file the user provides (torchvision
``vgg16`` state-dict keys ``features.N.*``); kinema downloads nothing, so by default the loss is L1/L2 +
commitment + GAN only. The codebook is the VQ-VAE objective's EMA codebook: the data-dependent init on the
first step and the EMA + dead-code restart after every step come from :class:`VQVAEObjective`.

``nuwa``: the mean next-token cross-entropy over the target grid (paper Eq. 16, via secondary notes),
with the condition replaced by the learned "None" condition for a random ``cond_drop_prob`` of the rows
(classifier-free guidance; lucidrains drops text with p = 0.2, nuwa_pytorch.py L1923). The rows are
drawn for the whole global batch from the step's RNG and sliced per micro-batch. A multi-task model
(``model.tasks``, e.g. text + sketch + prediction) trains one task per step (``task_mixing = "per_step"``:
the whole batch, drawn from the step RNG) or one task per row (``"per_row"``: the rows of each task go
through the model together and the losses are averaged with the rows' weights, so the loss is the mean
over rows either way); the tasks are drawn uniformly (the paper's multi-task pre-training mixes
T2I/V2V/T2V by dataset, not reproduced here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kinema.data.batch import Batch
from kinema.errors import ConfigError
from kinema.nn.noise import draw_noise
from kinema.objectives.base import Objective, Phase, StepContext
from kinema.objectives.vqvae import VQVAEObjective

# --------------------------------------------------------------------------- perceptual (optional)

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16.features


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` layout (so its state dict loads), frozen; returns the LPIPS taps."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @classmethod
    def from_file(cls, path: str) -> VGG16Features:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"objective.perceptual_weights = {path!r} is not a file; give a VGG16 state dict "
                              "(torchvision vgg16 keys features.N.weight/bias, .pth or .safetensors) or leave it empty "
                              "for L1/L2 + GAN only")
        from kinema.foreign import load_tensor_file

        state = load_tensor_file(file, "a torchvision VGG16 state dict (keys features.N.weight/bias) for "
                                       f"objective.perceptual_weights = {path!r}", ConfigError)
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        model = cls()
        try:
            model.features.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"objective.perceptual_weights = {path!r} is not a VGG16 state dict: {exc}") from None
        return model.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x + 1) / 2 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                taps.append(h)
        return taps


def perceptual_distance(net: VGG16Features, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS-style distance without learned channel weights: mean squared difference of unit-normalised
    VGG16 features, summed over the five taps."""
    total = 0.0
    for a, b in zip(net(x), net(y)):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (a - b).pow(2).sum(1).mean()
    return total


# --------------------------------------------------------------------------- VQ-GAN


@dataclass
class NUWAVQGANObjectiveConfig:
    """``objective.name = "nuwa_vqgan"`` (the default of ``nuwa_vqgan``)."""

    name: Literal["nuwa_vqgan"] = "nuwa_vqgan"
    reconstruction: Literal["l1", "l2"] = "l1"  # lucidrains default L1 (vqgan_vae.py L382)
    commitment: float = 0.25
    disc_weight: float = 1.0
    disc_start: int = 0  # optimiser steps before the GAN terms start (taming's discriminator warm-up)
    adaptive_max: float = 1e4  # lucidrains clamp (vqgan_vae.py L539)
    perceptual_weights: str = ""  # a VGG16 state dict the user provides; empty: no perceptual loss
    perceptual_weight: float = 1.0

    def validate(self) -> None:
        for key in ("commitment", "disc_weight", "disc_start", "adaptive_max", "perceptual_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"objective.{key} must be >= 0, got {getattr(self, key)}")


class VQGANModel(Protocol):
    """What the VQ-GAN objective needs: the VQ-VAE objective's members plus a frame ``discriminator``,
    ``discriminate(frames)``, and ``last_layer`` (the decoder's output weight)."""

    codebook: nn.Module
    discriminator: nn.Module
    last_layer: torch.Tensor

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor: ...
    def discriminate(self, frames: torch.Tensor) -> torch.Tensor: ...


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B*T, C, H, W)``: a per-frame model's losses see single frames."""
    return video.transpose(1, 2).flatten(0, 1)


def adaptive_weight(rec: torch.Tensor, gen: torch.Tensor, layer: torch.Tensor, limit: float) -> torch.Tensor:
    """``||d rec / d layer|| / (||d gen / d layer|| + 1e-6)`` clamped to ``[0, limit]`` (detached)."""
    g_rec = torch.autograd.grad(rec, layer, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen, layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gen.norm() + 1e-6)).clamp(0, limit).detach()


class NUWAVQGANObjective(VQVAEObjective):
    name = "nuwa_vqgan"
    model_interface = VQGANModel
    compile_targets = ()

    def __init__(self, model, config: NUWAVQGANObjectiveConfig) -> None:
        super().__init__(model, config)
        self.perceptual = VGG16Features.from_file(config.perceptual_weights) if config.perceptual_weights else None

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        disc = {id(p) for p in self.model.discriminator.parameters()}
        return {"vqgan": [p for p in self.model.parameters() if id(p) not in disc],
                "discriminator": list(self.model.discriminator.parameters())}

    def gan_active(self, ctx: StepContext) -> bool:
        return self.config.disc_weight > 0 and ctx.step >= self.config.disc_start

    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext):
        if phase.name == "vqgan":
            return self._vqgan_phase(batches, ctx)
        return self._discriminator_phase(batches, ctx)

    def _vqgan_phase(self, batches: list[Batch], ctx: StepContext):
        cfg, model = self.config, self.model
        params = ctx.params("vqgan")
        gan = self.gan_active(ctx)
        if self.perceptual is not None:
            self.perceptual.to(batches[0].clips.device)
        logs: dict[str, list[torch.Tensor]] = {k: [] for k in ("reconstruction", "commitment", "perceptual",
                                                                "generator", "adaptive_weight", "perplexity")}
        counts = sums = None
        flats, self._fakes = [], []
        for batch in batches:
            real = batch.clips
            out = model(real)
            fake = frames_of(out["reconstruction"]).float()
            real_f = frames_of(real).float()
            diff = fake - real_f
            rec = diff.abs().mean() if cfg.reconstruction == "l1" else diff.pow(2).mean()
            perc = torch.zeros((), device=real.device)
            if self.perceptual is not None:
                perc = cfg.perceptual_weight * perceptual_distance(self.perceptual, fake, real_f)
            nll = rec + perc
            loss = nll + cfg.commitment * out["commitment"]
            g_loss = lam = torch.zeros((), device=real.device)
            if gan:
                g_loss = -model.discriminate(fake).float().mean()
                lam = adaptive_weight(nll, g_loss, model.last_layer, cfg.adaptive_max)
                loss = loss + cfg.disc_weight * lam * g_loss
            ctx.scale(loss).backward(inputs=params)
            self._fakes.append(fake.detach())
            for key, value in (("reconstruction", rec), ("commitment", out["commitment"]), ("perceptual", perc),
                               ("generator", g_loss), ("adaptive_weight", lam), ("perplexity", out["perplexity"])):
                logs[key].append(value.detach())
            counts = out["counts"] if counts is None else counts + out["counts"]
            sums = out["sums"] if sums is None else sums + out["sums"]
            flats.append(out["flat"])
        self._stats = (counts, sums, flats)
        metrics = {k: torch.stack(v).mean() for k, v in logs.items()}
        if self.perceptual is None:
            metrics.pop("perceptual")
        metrics["psnr"] = -10 * torch.log10(torch.stack([((f.clamp(-1, 1) - frames_of(b.clips)) / 2).pow(2).mean()
                                                         for f, b in zip(self._fakes, batches)]).mean())
        losses = {"reconstruction": metrics["reconstruction"], "commitment": metrics["commitment"]}
        if gan:
            losses["generator"] = metrics["generator"]
        return losses, metrics

    def _discriminator_phase(self, batches: list[Batch], ctx: StepContext):
        fakes, self._fakes = self._fakes, None
        params = ctx.params("discriminator")
        if not self.gan_active(ctx):  # before disc_start: zero gradients (Adam then leaves the weights as they are)
            zero = sum(p.sum() for p in params) * 0.0
            zero.backward(inputs=params)
            return {"discriminator": zero.detach()}, {}
        d_losses, real_scores, fake_scores = [], [], []
        for batch, fake in zip(batches, fakes):
            real = frames_of(batch.clips).float()
            s_real = self.model.discriminate(real).float()
            s_fake = self.model.discriminate(fake).float()
            loss = F.relu(1 - s_real).mean() + F.relu(1 + s_fake).mean()
            ctx.scale(loss).backward(inputs=params)
            d_losses.append(loss.detach())
            real_scores.append(s_real.detach().mean())
            fake_scores.append(s_fake.detach().mean())
        loss = torch.stack(d_losses).mean()
        return {"discriminator": loss}, {"loss_d": loss, "score_real": torch.stack(real_scores).mean(),
                                         "score_fake": torch.stack(fake_scores).mean()}


# --------------------------------------------------------------------------- transformer


@dataclass
class NUWAObjectiveConfig:
    """``objective.name = "nuwa"`` (the default of ``nuwa``)."""

    name: Literal["nuwa"] = "nuwa"
    cond_drop_prob: float = 0.2  # rows trained with the "None" condition (classifier-free guidance)
    task_mixing: Literal["per_step", "per_row"] = "per_step"  # multi-task models: one task per step or per row

    def validate(self) -> None:
        if not 0 <= self.cond_drop_prob <= 1:
            raise ConfigError(f"objective.cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")


class NUWATransformerModel(Protocol):
    """``transformer`` (trained, EMA target); ``check_trainable()``; ``tasks`` (names); ``loss(clips, drop,
    task, text, masks)`` -> mean cross-entropy per token, ``drop (B,)`` bool: rows whose condition is
    replaced by "None"."""

    transformer: nn.Module
    tasks: list[str]

    def check_trainable(self) -> None: ...
    def loss(self, video: torch.Tensor, drop: torch.Tensor | None = None, task: str | None = None,
             text: list[str] | None = None, masks: torch.Tensor | None = None) -> torch.Tensor: ...


class NUWAObjective(Objective):
    name = "nuwa"
    model_interface = NUWATransformerModel
    ema_target = "transformer"
    compile_targets = ()

    def __init__(self, model, config: NUWAObjectiveConfig) -> None:
        super().__init__(model, config)
        model.check_trainable()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"transformer": list(self.model.transformer.parameters())}

    def begin_step(self, batches: list[Batch], ctx: StepContext) -> None:
        device = batches[0].clips.device
        u = draw_noise("uniform", (ctx.global_batch,), ctx.generator, device)
        self._drop = (u + 1) / 2 < self.config.cond_drop_prob  # uniform(-1, 1) -> [0, 1)
        tasks = self.model.tasks
        if len(tasks) > 1:  # drawn only for multi-task models (a single-task run's RNG stream is unchanged)
            n = 1 if self.config.task_mixing == "per_step" else ctx.global_batch
            v = (draw_noise("uniform", (n,), ctx.generator, device) + 1) / 2
            self._task = (v * len(tasks)).long().clamp_(max=len(tasks) - 1).expand(ctx.global_batch)
        else:
            self._task = torch.zeros(ctx.global_batch, dtype=torch.long, device=device)

    def _loss(self, batch: Batch, rows) -> torch.Tensor:
        """Mean over the micro-batch's rows; rows of different tasks run as separate groups."""
        drop, task = self._drop[rows.start : rows.stop], self._task[rows.start : rows.stop]
        total = 0.0
        for index in task.unique().tolist():
            sel = (task == index).nonzero().flatten()
            keep = sel.tolist()
            text = [batch.text[i] for i in keep] if batch.text is not None else None
            masks = batch.masks[sel] if batch.masks is not None else None
            try:
                loss = self.model.loss(batch.clips[sel], drop[sel], self.model.tasks[index], text, masks)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            total = total + loss * (len(keep) / len(task))
        return total

    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext):
        loss = self.mean_loss(batches, ctx, self._loss)
        bits = loss / torch.log(torch.tensor(2.0, device=loss.device))
        return {"transformer": loss}, {"loss": loss, "bits_per_token": bits}
