"""VQ-VAE objective (VideoGPT stage 1): reconstruction + commitment with straight-through gradients.

One optimiser ("vqvae") over encoder, decoder and the 1x1x1 convs. The codebook is not a parameter:
it is updated by EMA **once per optimiser step**, after the step, from statistics summed over all
micro-batches of this process and then over all processes, so every rank keeps the same codebook and
``k`` micro-batches update it exactly as one batch would. Restart candidates (random encoder outputs)
are drawn with the step's shared noise RNG from rank 0's outputs and broadcast, as the official code
broadcasts rank 0's draw. The data-dependent initialisation runs once, on the first step, from an
extra no-grad encoder pass over that step's batch (so the first micro-batch is already quantised with
the initialised codebook). Batch norm normalises over one micro-batch at a time.

Loss (official ``videogpt/vqvae.py``): ``mse(x_hat, x) / 0.06 + 0.25 * mse(z_e, sg[e])`` with pixels
in ``[-0.5, 0.5]``; kinema's pixels are in ``[-1, 1]`` (4x the variance), so the reconstruction term is
``mse / (4 * data_variance)`` -- the same number. See docs/models/videogpt.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kinema.data.batch import Batch
from kinema.dist import all_reduce_sum_, broadcast_
from kinema.errors import ConfigError
from kinema.objectives.base import Objective, Phase, StepContext


@dataclass
class VQVAEConfig:
    """``objective.name = "vqvae"`` (the default of ``videogpt_vqvae``)."""

    name: Literal["vqvae"] = "vqvae"
    commitment: float = 0.25  # weight of mse(z_e, sg[e]) (official beta)
    # Official data variance for pixels in [-0.5, 0.5]; the loss divides kinema's [-1, 1] MSE by 4x it.
    data_variance: float = 0.06

    def validate(self) -> None:
        if self.data_variance <= 0 or self.commitment < 0:
            raise ConfigError(f"objective.data_variance must be > 0 and objective.commitment >= 0, got "
                              f"{self.data_variance} and {self.commitment}")


class VQVAEModel(Protocol):
    """What a model offers the VQ-VAE objective: ``forward(x)`` -> dict with ``reconstruction``,
    unweighted ``commitment``, ``perplexity``, and EMA statistics ``counts``/``sums``/``flat``; an EMA
    ``codebook`` (``initialized``, ``candidates``, ``initialize``, ``ema_update``, ``N``,
    ``restart_threshold``); ``encode_latents``."""

    codebook: nn.Module

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor: ...


class VQVAEObjective(Objective):
    name = "vqvae"
    model_interface = VQVAEModel
    ema_target = None
    compile_targets = ("encoder", "decoder")

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"vqvae": [p for p in self.model.parameters() if p.requires_grad]}

    def begin_step(self, batches: list[Batch], ctx: StepContext) -> None:
        model, codebook = self.model, self.model.codebook
        if not bool(codebook.initialized):
            with torch.no_grad():
                flat = torch.cat([codebook.quantize(model.encode_latents(b.clips))["flat"] for b in batches])
            codebook.initialize(broadcast_(codebook.candidates(flat, ctx.generator)))

    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext):
        cfg = self.config
        recon, commit, perplexity, flats = [], [], [], []
        counts = sums = None
        for batch in batches:
            real = batch.clips
            out = self.model(real)
            r = F.mse_loss(out["reconstruction"].float(), real.float()) / (4 * cfg.data_variance)
            c = cfg.commitment * out["commitment"]
            ctx.scale(r + c).backward()
            recon.append(r.detach())
            commit.append(c.detach())
            perplexity.append(out["perplexity"])
            counts = out["counts"] if counts is None else counts + out["counts"]
            sums = out["sums"] if sums is None else sums + out["sums"]
            flats.append(out["flat"])
        self._stats = (counts, sums, flats)
        recon_loss, commit_loss = torch.stack(recon).mean(), torch.stack(commit).mean()
        metrics = {"loss": recon_loss + commit_loss, "reconstruction": recon_loss, "commitment": commit_loss,
                   "perplexity": torch.stack(perplexity).mean()}
        return {"reconstruction": recon_loss, "commitment": commit_loss}, metrics

    def end_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One EMA update per optimiser step, from the whole global batch's statistics."""
        counts, sums, flats = self._stats
        self._stats = None
        codebook = self.model.codebook
        all_reduce_sum_(counts)
        all_reduce_sum_(sums)
        candidates = broadcast_(codebook.candidates(torch.cat(flats), ctx.generator))
        codebook.ema_update(counts, sums, candidates)
        return {"dead_codes": (codebook.N < codebook.restart_threshold).sum().float()}
