"""Optimisers and their learning-rate schedule: warm-up, then linear / cosine decay to 0 or constant, and
the resume rule that re-plans a decaying schedule when ``train.steps`` changes."""

from __future__ import annotations

import math

import torch

from kinema.config import TrainConfig
from kinema.errors import TrainingError


def build_optimizer(train: TrainConfig, params) -> torch.optim.Optimizer:
    """``train.optimizer`` over the parameters ``params`` with the run's lr, betas, eps and weight decay."""
    if train.optimizer in ("adam", "adamw"):
        adam = torch.optim.Adam if train.optimizer == "adam" else torch.optim.AdamW
        params = list(params)
        # fused=True needs every parameter on a device with the fused kernel (cpu, cuda).
        fused = train.fused_optimizer and {p.device.type for p in params} <= {"cpu", "cuda"}
        return adam(params, lr=train.lr, betas=tuple(float(b) for b in train.betas), eps=train.eps,
                    weight_decay=train.weight_decay, **({"fused": True} if fused else {}))
    # RMSprop (TGAN-ODE's WGAN runs): betas[1] is its smoothing constant alpha.
    return torch.optim.RMSprop(params, lr=train.lr, alpha=train.betas[1], eps=train.eps,
                               weight_decay=train.weight_decay)


def lr_factor(train: TrainConfig, step: int, anchor: tuple[int, float] = (0, 1.0)) -> float:
    """The LR multiplier after ``step`` optimiser steps: linear warm-up over ``warmup_steps``, then
    the schedule over the remaining steps (linear to 0, cosine to 0, or constant).

    ``anchor = (s0, f0)``: the schedule was re-planned at step ``s0`` (a run resumed with another
    ``train.steps``), where its factor was ``f0``; from there it decays from ``f0`` to 0 at ``steps``
    with the same shape, so the LR never jumps.
    """
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return 1.0
    s0, f0 = anchor
    start = max(train.warmup_steps, s0)
    progress = (step - start) / (train.steps - start) if train.steps > start else 1.0
    if train.lr_schedule == "cosine":  # torch's CosineAnnealingLR(T_max=steps, eta_min=0) in closed form
        return f0 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return f0 * max(0.0, 1.0 - progress)  # linear decay to 0, as the TGANv2 paper


class LRPlan:
    """The run's LR multiplier as a function of the step (every optimiser's ``LambdaLR``), with the step
    where it was last re-planned: ``anchor``, saved in the checkpoint."""

    def __init__(self, train: TrainConfig) -> None:
        self.train = train
        self.anchor: tuple[int, float] = (0, 1.0)

    def factor(self, step: int) -> float:
        return lr_factor(self.train, step, self.anchor)

    def schedulers(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        # A bound method, not a callable object: LambdaLR's state_dict would pickle an object's __dict__ (the
        # config), and trainer_state.pt must stay loadable with weights_only.
        return {name: torch.optim.lr_scheduler.LambdaLR(opt, self.factor) for name, opt in optimizers.items()}

    def replan(self, saved: TrainConfig, step: int) -> str | None:
        """The resume rule for ``train.steps``: a decaying schedule continues from the LR it had reached at
        ``step`` and decays to 0 at the new ``train.steps`` (no jump back up); returns what was done, for the
        log. A schedule that already reached 0 cannot be extended this way: the error says how to continue."""
        train = self.train
        if saved.steps == train.steps or train.lr_schedule == "constant":
            return None
        factor = lr_factor(saved, step, self.anchor)
        if factor <= 0.0 and step < train.steps:
            raise TrainingError(
                f"--resume with train.steps {saved.steps} -> {train.steps}: the run's {train.lr_schedule} LR schedule "
                f"reached 0 at step {step}, so training on would change nothing. Continue at a constant LR "
                f"with --set train.lr_schedule=constant (train.lr = {train.lr}), or start a new run")
        self.anchor = (step, factor)
        return (f"train.steps {saved.steps} -> {train.steps}: the {train.lr_schedule} LR schedule continues "
                f"from {factor:.4g} x train.lr at step {step} and reaches 0 at step {train.steps}")
