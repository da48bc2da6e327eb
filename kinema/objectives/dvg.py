"""DVG's objective: the joint autoencoder + LSTM + GP loss, then LSTM-only and GP-only fine-tune steps.

As coded in the final official ``train.py`` (github.com/shgaurav1/DVG at e882473):

- joint step ``train_model`` (train.py:200-248), summed over ``i = 1 .. n_past + n_future - 1`` with
  teacher forcing (the LSTM and the GP read ``h = enc(x[i-1])`` of the real frame):
  ``1000 * MSE(dec(enc(x_i)), x_i) + 0.001 * MSE(dec(LSTM(h)), x_i) + 0.01 * MSE(LSTM(h), enc(x_i))
  + 0.001 * MSE(dec(GP mean(h)), x_i) + 1e-4 * (-ELBO)`` (train.py:239); the latent target is not
  detached, so the encoder learns from every term;
- fine-tune steps after every joint step (``--ft True``, train.py:250-253,360-361): the LSTM alone on the
  latent MSE (train.py:175-198), then the GP alone on -ELBO with detached targets (train.py:146-172);
- Adam 2e-3 for everything (train.py:95-105); the GP's learning rate is multiplied by 0.1 at epochs 3 and
  5 of 300 iterations (MultiStepLR, train.py:106,347), here ``gp_lr_milestones`` in steps.

An earlier official script (``DVG.py``, deleted in 888c48f) weighted the terms ``1000, 1000, 1000, 1, 1``;
which weighting the paper used is not stated (card: docs/models/dvg.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kinema.data.batch import Batch
from kinema.errors import ConfigError
from kinema.objectives.base import Objective, Phase, StepContext


@dataclass
class DVGObjectiveConfig:
    """``objective.name = "dvg"``; the loss weights of train.py:239."""

    name: Literal["dvg"] = "dvg"
    ae_weight: float = 1000.0  # MSE(dec(enc(x_i)), x_i)
    lstm_frame_weight: float = 0.001  # MSE(dec(LSTM(h_{i-1})), x_i)
    latent_weight: float = 0.01  # MSE(LSTM(h_{i-1}), enc(x_i))
    gp_frame_weight: float = 0.001  # MSE(dec(GP mean(h_{i-1})), x_i)
    elbo_weight: float = 1e-4  # -ELBO summed over the g_dim GPs
    finetune: bool = True  # the LSTM-only and GP-only steps after each joint step (--ft)
    gp_lr_milestones: list[int] = field(default_factory=lambda: [900, 1500])  # epochs 3, 5 x 300 iterations
    gp_lr_gamma: float = 0.1

    def validate(self) -> None:
        for key in ("ae_weight", "lstm_frame_weight", "latent_weight", "gp_frame_weight", "elbo_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"objective.{key} must be >= 0, got {getattr(self, key)}")
        if sorted(self.gp_lr_milestones) != list(self.gp_lr_milestones) or any(m < 0 for m in self.gp_lr_milestones):
            raise ConfigError(f"objective.gp_lr_milestones must be increasing steps >= 0, got {self.gp_lr_milestones}")
        if not 0 < self.gp_lr_gamma <= 1:
            raise ConfigError(f"objective.gp_lr_gamma must be in (0, 1], got {self.gp_lr_gamma}")


class DVGModel(Protocol):
    """What the DVG objective needs (``kinema.models.dvg.DVG`` implements it)."""

    encoder: nn.Module  # frame (B, c, H, W) -> (h (B, g_dim), skip maps)
    decoder: nn.Module  # (h, skips or skip_terms(skips)) -> frame; skip_terms(maps): the maps' share, reusable
    predictor: nn.Module  # LSTM: (h, state) -> (h_next, state); init_state(B, device)
    gp: nn.Module  # posterior(h), neg_elbo(f, target, num_data)

    def to_frames(self, clips: torch.Tensor) -> torch.Tensor: ...
    def skip_frame(self, i: int) -> int: ...


JOINT = ("autoencoder", "lstm", "gp")


class DVGObjective(Objective):
    """Three optimisers (Adam states as in the official code): ``autoencoder`` (encoder + decoder),
    ``lstm`` and ``gp`` (GP + likelihood). The ``joint`` phase steps all three from one loss (in that
    order, as train.py:243-246); the ``lstm`` and ``gp`` phases are the fine-tunes."""

    name = "dvg"
    model_interface = DVGModel
    ema_target = None

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        m = self.model
        return {"autoencoder": [*m.encoder.parameters(), *m.decoder.parameters()],
                "lstm": list(m.predictor.parameters()), "gp": list(m.gp.parameters())}

    def phases(self) -> tuple[Phase, ...]:
        joint = (Phase("joint", optimizers=JOINT),)
        return joint + ((Phase("lstm"), Phase("gp")) if self.config.finetune else ())

    def gp_lr_factor(self, step: int) -> float:
        """MultiStepLR of the GP optimiser: ``gamma ** (milestones passed)``."""
        return self.config.gp_lr_gamma ** sum(step >= m for m in self.config.gp_lr_milestones)

    def lr_factors(self, step: int) -> dict[str, float]:
        return {"gp": self.gp_lr_factor(step)}

    def end_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, torch.Tensor]:
        return {"gp_lr_factor": torch.tensor(self.gp_lr_factor(ctx.step))}

    # ------------------------------------------------------------------ the losses

    def joint_terms(self, clips: torch.Tensor, num_data: int) -> dict[str, torch.Tensor]:
        """The five terms of train.py:239, each summed over the predicted steps."""
        m = self.model
        x = m.to_frames(clips)  # (T, B, c, H, W) in [0, 1]
        if len(x) < 2:
            raise ConfigError("DVG trains on clips of n_past + n_future >= 2 frames")
        # one encoder call per frame: batch norm normalises each frame's batch, as the official per-frame calls
        enc = [m.encoder(frame) for frame in x]
        state = m.predictor.init_state(x.shape[1], x.device)
        terms = {k: x.new_zeros(()) for k in ("ae", "lstm_frame", "latent", "gp_frame", "neg_elbo")}
        # the skip maps' half of the decoder once per skip frame, not once per decoder call (FrameDecoder)
        skip_terms: dict[int, list[torch.Tensor]] = {}
        for i in range(1, len(x)):
            j = m.skip_frame(i)
            if j not in skip_terms:
                skip_terms[j] = m.decoder.skip_terms(enc[j][1])
            h, target, skips = enc[i - 1][0], enc[i][0], skip_terms[j]
            h_pred, state = m.predictor(h, state)
            terms["latent"] = terms["latent"] + F.mse_loss(h_pred, target)
            with torch.autocast(x.device.type, enabled=False):
                f = m.gp.posterior(h)
                terms["neg_elbo"] = terms["neg_elbo"] + m.gp.neg_elbo(f, target, num_data)
                gp_mean = f.mean.transpose(0, 1)
            terms["lstm_frame"] = terms["lstm_frame"] + F.mse_loss(m.decoder(h_pred, skips), x[i])
            terms["ae"] = terms["ae"] + F.mse_loss(m.decoder(target, skips), x[i])
            terms["gp_frame"] = terms["gp_frame"] + F.mse_loss(m.decoder(gp_mean, skips), x[i])
        return terms

    def _latents(self, clips: torch.Tensor) -> torch.Tensor:
        """Encoder latents ``(T, B, g_dim)`` without gradients (the fine-tunes step only the LSTM or the GP;
        the encoder stays in training mode as in the official fine-tune functions)."""
        with torch.no_grad():
            return torch.stack([self.model.encoder(frame)[0] for frame in self.model.to_frames(clips)])

    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext):
        cfg, m = self.config, self.model
        if phase.name == "joint":
            parts: dict[str, list[torch.Tensor]] = {}

            def joint(batch: Batch, rows) -> torch.Tensor:
                terms = self.joint_terms(batch.clips, ctx.global_batch)
                for k, v in terms.items():
                    parts.setdefault(k, []).append(v.detach())
                return (cfg.ae_weight * terms["ae"] + cfg.lstm_frame_weight * terms["lstm_frame"]
                        + cfg.latent_weight * terms["latent"] + cfg.gp_frame_weight * terms["gp_frame"]
                        + cfg.elbo_weight * terms["neg_elbo"])

            loss = self.mean_loss(batches, ctx, joint)
            metrics = {f"{k}": torch.stack(v).mean() for k, v in parts.items()}
            return {"dvg": loss}, {"loss": loss, **metrics}
        if phase.name == "lstm":  # train_frame_predictor (train.py:175-198)
            def latent(batch: Batch, rows) -> torch.Tensor:
                h = self._latents(batch.clips)
                state, total = m.predictor.init_state(h.shape[1], h.device), h.new_zeros(())
                for i in range(1, len(h)):
                    pred, state = m.predictor(h[i - 1], state)
                    total = total + F.mse_loss(pred, h[i])
                return total

            loss = self.mean_loss(batches, ctx, latent)
            return {"lstm_finetune": loss}, {"lstm_finetune": loss}
        if phase.name == "gp":  # train_GP_Frame_predictor (train.py:146-172)
            def elbo(batch: Batch, rows) -> torch.Tensor:
                h = self._latents(batch.clips).float()
                with torch.autocast(h.device.type, enabled=False):
                    return sum(m.gp.neg_elbo(m.gp.posterior(h[i - 1]), h[i], ctx.global_batch)
                               for i in range(1, len(h)))

            loss = self.mean_loss(batches, ctx, elbo)
            return {"gp_finetune": loss}, {"gp_finetune": loss}
        raise ValueError(f"unknown DVG phase {phase.name!r}")
