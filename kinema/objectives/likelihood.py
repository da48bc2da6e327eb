"""Likelihood objective: VideoGPT's two stages with the one trainer.

- A VQ-VAE (``videogpt_vqvae``): reconstruction + commitment loss with straight-through gradients,
  one optimiser ("vqvae") over encoder, decoder and the 1x1x1 convs. The codebook is not a parameter:
  it is updated by EMA **once per optimiser step**, after the step, from statistics summed over all
  micro-batches of this process and then over all processes (``all_reduce`` SUM), so every rank keeps
  the same codebook and ``k`` micro-batches update it exactly as one batch would. Restart candidates
  (random encoder outputs) are drawn with the step's shared noise RNG from rank 0's outputs and
  broadcast, as the official code broadcasts rank 0's draw. The data-dependent initialisation runs
  once, on the first step, from an extra no-grad encoder pass over that step's batch (so the first
  micro-batch is already quantised with the initialised codebook).
- A prior (``videogpt_prior``): cross-entropy of the codes of the frozen VQ-VAE, one optimiser
  ("prior") over the transformer (and its conditioning-frame encoder) only.

Batch norm (VQ-VAE) normalises over one micro-batch at a time; dropout (prior) draws from the
process's global RNG, so micro-batched and whole-batch prior steps agree exactly only with dropout 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from kinema.config import ConfigError
from kinema.objectives.base import StepContext, world_size


@dataclass
class LikelihoodConfig:
    """``objective.name = "likelihood"``: the loss follows the model (VQ-VAE or prior); the loss
    weights live in the model config (``commitment``, ``data_variance``)."""

    name: Literal["likelihood"] = "likelihood"

    def validate(self) -> None:
        pass


def _all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _broadcast_(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.broadcast(t, src=0)
    return t


class LikelihoodObjective:
    """Maximum likelihood for VideoGPT: VQ-VAE training or prior training, chosen by the model."""

    def __init__(self, model: nn.Module, config: LikelihoodConfig) -> None:
        self.model, self.config = model, config
        self.kind = "vqvae" if hasattr(model, "codebook") else "prior" if hasattr(model, "transformer") else None
        if self.kind is None:
            raise ConfigError(f"objective.name = \"likelihood\" trains VideoGPT models (videogpt_vqvae, videogpt_prior), "
                              f"not {type(model).__name__}; use that model's own objective")
        if self.kind == "prior":
            cfg = model.config
            if not cfg.vqvae and not cfg.vqvae_config:
                raise ConfigError(
                    "model.vqvae is empty: the prior is trained on the codes of a trained VQ-VAE. Train one first "
                    "(kinema train --config configs/videogpt_vqvae_tiny.toml --out RUN1), then pass "
                    "--set model.vqvae=RUN1")
        self.accepts_labels = self.kind == "prior"  # class-conditional priors read (clips, labels) batches
        self.ema_target = None if self.kind == "vqvae" else "transformer"
        self.compile_targets = ("encoder", "decoder") if self.kind == "vqvae" else ("transformer",)

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        if self.kind == "vqvae":
            return {"vqvae": [p for p in self.model.parameters() if p.requires_grad]}
        return {"prior": list(self.model.transformer.parameters())}

    def train_step(self, micro_batches: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        if self.kind == "vqvae":
            return self._vqvae_step(micro_batches, ctx)
        return self._prior_step(micro_batches, ctx)

    # ------------------------------------------------------------------ prior

    def _prior_step(self, micro_batches: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        model = self.model
        if not model.vqvae_loaded:
            raise ConfigError(f"the prior's VQ-VAE has no trained weights: model.vqvae = {model.config.vqvae!r} is "
                              "missing or no longer holds the VQ-VAE this config was built from; point it at the "
                              "VQ-VAE run")
        ctx.optimizers["prior"].zero_grad(set_to_none=True)
        losses = []
        for batch in micro_batches:
            real, labels = batch if isinstance(batch, (list, tuple)) else (batch, None)
            if model.config.num_classes and labels is None:
                raise ConfigError(
                    f"model.num_classes = {model.config.num_classes} makes the prior class-conditional, but the "
                    "batches carry no labels; set data.labels = true (a cache prepared with --layout ucf101) or "
                    "model.num_classes = 0")
            loss = model.loss(real, labels)
            ctx.scale(loss).backward()
            losses.append(loss.detach())
        loss = torch.stack(losses).mean()
        ctx.apply("prior", {"prior": loss})
        if ctx.scaler is not None:
            ctx.scaler.update()
        return {"loss": loss, "bits_per_code": loss / torch.log(torch.tensor(2.0, device=loss.device))}

    # ------------------------------------------------------------------ VQ-VAE

    def _vqvae_step(self, micro_batches: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        model, codebook = self.model, self.model.codebook
        if not bool(codebook.initialized):
            with torch.no_grad():
                flat = torch.cat([codebook.quantize(model.encode_latents(x))["flat"] for x in micro_batches])
            codebook.initialize(_broadcast_(codebook.candidates(flat, ctx.generator)))
        ctx.optimizers["vqvae"].zero_grad(set_to_none=True)
        recon, commit, perplexity, flats = [], [], [], []
        counts = sums = None
        for real in micro_batches:
            out = model(real)
            r = model.reconstruction_loss(real, out["reconstruction"])
            ctx.scale(r + out["commitment"]).backward()
            recon.append(r.detach())
            commit.append(out["commitment"].detach())
            perplexity.append(out["perplexity"])
            counts = out["counts"] if counts is None else counts + out["counts"]
            sums = out["sums"] if sums is None else sums + out["sums"]
            flats.append(out["flat"])
        recon_loss, commit_loss = torch.stack(recon).mean(), torch.stack(commit).mean()
        ctx.apply("vqvae", {"reconstruction": recon_loss, "commitment": commit_loss})
        if ctx.scaler is not None:
            ctx.scaler.update()
        # One EMA update per optimiser step, from the whole global batch's statistics.
        _all_reduce_sum_(counts)
        _all_reduce_sum_(sums)
        candidates = _broadcast_(codebook.candidates(torch.cat(flats), ctx.generator))
        codebook.ema_update(counts, sums, candidates)
        return {
            "loss": recon_loss + commit_loss,
            "reconstruction": recon_loss,
            "commitment": commit_loss,
            "perplexity": torch.stack(perplexity).mean(),
            "dead_codes": (codebook.N < codebook.restart_threshold).sum().float(),
        }
