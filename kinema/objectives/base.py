"""What every objective shares: the interface the trainer calls, and the non-finite-loss error."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

import torch


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised before any optimiser step applies it."""

    def __init__(self, name: str, value: float) -> None:
        super().__init__(f"loss {name!r} is {value}")
        self.name = name
        self.value = value


def check_finite(losses: dict[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteLossError` for the first NaN/inf entry of ``losses``.

    One host-device synchronisation for all entries (it must happen before the optimiser step).
    """
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
    if bool(torch.isfinite(values).all()):
        return
    for name, v in zip(losses, values.tolist()):
        if not math.isfinite(v):
            raise NonFiniteLossError(name, v)


class Objective(Protocol):
    """The trainer's view of a training objective (GAN, likelihood, diffusion, ...).

    ``parameter_groups()`` names the parameter sets that get one optimiser each;
    ``ema_target`` is the attribute of the model to keep an EMA of (or ``None``);
    ``compile_targets`` names the model attributes that ``train.compile`` may ``torch.compile``;
    ``train_step(real, optimizers, generator)`` runs every phase of one iteration on a real batch
    ``(B, C, T, H, W)`` (scaling losses with ``scaler`` when training in fp16) and returns scalar
    metrics for logging as 0-d tensors (detached, still on
    the device, so the trainer converts them only when it logs: no sync per step).
    """

    ema_target: str | None
    compile_targets: tuple[str, ...]

    def parameter_groups(self) -> dict[str, Iterable[torch.nn.Parameter]]: ...

    def train_step(
        self,
        real: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        generator: torch.Generator,
        scaler: torch.amp.GradScaler | None = None,
    ) -> dict[str, torch.Tensor]: ...
