"""Likelihood objective: cross-entropy of an autoregressive prior (VideoGPT stage 2).

One optimiser ("prior") over the prior's trainable part (the transformer and its conditioning-frame
encoder); the model computes the mean negative log-likelihood per code of a batch. Dropout draws from
the process's global RNG, so micro-batched and whole-batch steps agree exactly only with dropout 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from kinema.data.batch import Batch
from kinema.errors import ConfigError
from kinema.objectives.base import Objective, Phase, StepContext


@dataclass
class LikelihoodConfig:
    """``objective.name = "likelihood"``: maximum likelihood of an autoregressive prior."""

    name: Literal["likelihood"] = "likelihood"

    def validate(self) -> None:
        pass


class LikelihoodModel(Protocol):
    """What a model offers the likelihood objective (the VideoGPT prior implements it).

    ``transformer``: the trainable network (EMA target); ``num_classes > 0``: batches must carry
    labels; ``check_trainable()`` raises a clear error when the model cannot be trained yet (e.g. a
    prior whose first stage has no weights); ``loss(clips, labels)`` -> mean NLL per code (nats).
    """

    transformer: nn.Module
    num_classes: int

    def check_trainable(self) -> None: ...
    def loss(self, video: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor: ...


class LikelihoodObjective(Objective):
    name = "likelihood"
    model_interface = LikelihoodModel
    ema_target = "transformer"
    compile_targets = ("transformer",)
    conditions = frozenset({"labels"})  # class-conditional priors read labelled batches

    def __init__(self, model, config: LikelihoodConfig) -> None:
        super().__init__(model, config)
        model.check_trainable()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"prior": list(self.model.transformer.parameters())}

    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext):
        classes = self.model.num_classes
        if classes and any(b.labels is None for b in batches):
            raise ConfigError(
                f"model.num_classes = {classes} makes the prior class-conditional, but the batches carry no "
                "labels; set data.labels = true (a cache prepared with --layout ucf101) or model.num_classes = 0")
        loss = self.mean_loss(batches, ctx, lambda batch, rows: self.model.loss(batch.clips, batch.labels))
        bits = loss / torch.log(torch.tensor(2.0, device=loss.device))
        return {"prior": loss}, {"loss": loss, "bits_per_code": bits}
