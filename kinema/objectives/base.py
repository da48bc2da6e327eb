"""What every objective shares: the phase loop, the step context, and the non-finite-loss error.

An objective owns only its maths. :class:`Objective` runs one training step as a sequence of
:class:`Phase` s -- for each: ``zero_grad`` of the phase's optimisers -> :meth:`Objective.run_phase` (the
objective's micro-batch loop: forward, ``ctx.scale(loss).backward()``) -> :meth:`StepContext.apply` for each
of them in turn (gradient averaging over processes, optional clipping, NaN/inf verdict, optimiser step) --
and then the fp16 scaler update. A phase with ``every = k`` runs on steps ``0, k, 2k, ...`` only (lazy
regularisation); a phase may step several optimisers from one loss (DVG's joint step).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from kinema.data.batch import Batch
from kinema.dist import average_gradients
from kinema.errors import ConfigError
from kinema.models.base import VideoModel
from kinema.nn.batch import BatchRows


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised before any optimiser step applies it."""

    def __init__(self, name: str, value: float) -> None:
        super().__init__(f"loss {name!r} is {value}")
        self.name = name
        self.value = value


def loss_values(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The losses as one float vector (detached), in the order of ``losses``."""
    device = next(iter(losses.values())).device
    return torch.stack([v.detach().float().reshape(()).to(device) for v in losses.values()])


def check_finite(names: list[str], values: torch.Tensor) -> None:
    """Raise :class:`NonFiniteLossError` for the first NaN/inf of ``values`` (named by ``names``).

    One host-device synchronisation for all entries (it must happen before the optimiser step). With
    several processes ``values`` are already averaged over them (:func:`kinema.dist.average_gradients`), so a
    NaN on one process stops all of them at the same step.
    """
    if bool(torch.isfinite(values).all()):
        return
    for name, v in zip(names, values.tolist()):
        if not math.isfinite(v):
            raise NonFiniteLossError(name, v)


def gradient_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of all gradients (0-d tensor, no host sync); NaN/inf if any gradient is."""
    norms = torch._foreach_norm([p.grad for p in params if p.grad is not None])
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


@dataclass
class StepContext:
    """What one optimisation step gets besides its data, handed to ``Objective.train_step``.

    ``generator`` is the noise RNG; it holds the same state on every process, so anything drawn
    for the whole global batch is identical everywhere and each process keeps its ``rows``.
    ``rows`` has one :class:`~kinema.nn.BatchRows` per micro-batch (gradient accumulation), each
    naming that micro-batch's rows of the global batch. ``step`` is the number of optimiser steps
    done before this one. ``apply`` ends a phase.
    """

    optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator
    rows: list[BatchRows]
    scaler: torch.amp.GradScaler | None = None
    step: int = 0
    grad_clip: float = 0.0  # > 0: clip each optimiser's gradient norm (train.grad_clip)

    @classmethod
    def for_batch(
        cls,
        optimizers: dict[str, torch.optim.Optimizer],
        generator: torch.Generator,
        batch_size: int,
        scaler: torch.amp.GradScaler | None = None,
        accumulate: int = 1,
        step: int = 0,
    ) -> StepContext:
        """One process holding the whole batch of ``batch_size`` in ``accumulate`` micro-batches."""
        return cls(optimizers, generator, BatchRows.whole(batch_size).split(accumulate), scaler, step)

    @property
    def accumulate(self) -> int:
        return len(self.rows)

    @property
    def global_batch(self) -> int:
        return self.rows[0].total

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate for one micro-step: divided by the number of micro-steps (their
        gradients then sum to the whole batch's) and scaled by the fp16 gradient scaler."""
        loss = loss / self.accumulate
        return self.scaler.scale(loss) if self.scaler is not None else loss

    @contextmanager
    def lr_scaled(self, factors: dict[str, float]) -> Iterator[None]:
        """Within the block, optimiser ``name``'s learning rates are multiplied by ``factors[name]`` (an
        objective's own schedule on top of the trainer's); restored afterwards, even on an error."""
        saved = {name: [g["lr"] for g in self.optimizers[name].param_groups] for name in factors}
        for name, factor in factors.items():
            for g in self.optimizers[name].param_groups:
                g["lr"] *= factor
        try:
            yield
        finally:
            for name, lrs in saved.items():
                for g, lr in zip(self.optimizers[name].param_groups, lrs):
                    g["lr"] = lr

    def params(self, name: str) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizers[name].param_groups for p in group["params"]]

    def apply(self, name: str, losses: dict[str, torch.Tensor]) -> None:
        """Average gradients over processes, (clip,) check, then step optimiser ``name``.

        Without a gradient scaler a NaN/inf loss or gradient raises :class:`NonFiniteLossError`
        before the step; with one (fp16) the scaler skips steps whose gradients overflowed and only
        non-finite losses raise.
        """
        optimizer, params = self.optimizers[name], self.params(name)
        values = loss_values(losses)
        values = average_gradients(params, also=values)  # the losses ride in the gradients' collective
        if self.scaler is None:
            norm = gradient_norm(params)  # of the averaged gradients: the same on every process
            check_finite([*losses, f"{name} gradient norm"], torch.cat([values, norm.reshape(1).to(values)]))
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            optimizer.step()
        else:
            check_finite(list(losses), values)
            self.scaler.unscale_(optimizer)
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.scaler.step(optimizer)


@dataclass(frozen=True)
class Phase:
    """One update of a step, run on steps where ``step % every == 0``. ``name`` names the phase and, by
    default, the one parameter group (optimiser) it steps; a phase whose one loss updates several groups
    lists them in ``optimizers`` (stepped in that order, each with its own gradient check)."""

    name: str
    every: int = 1
    optimizers: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.optimizers:
            object.__setattr__(self, "optimizers", (self.name,))


def check_model(objective: type, model: Any, interface: type | None) -> None:
    """Raise :class:`ConfigError` unless ``model`` offers every member of the ``interface`` Protocol."""
    if interface is None:
        return
    members = [n for n in getattr(interface, "__protocol_attrs__", ()) if not n.startswith("_")]
    if not members:  # Python < 3.12: the annotations and functions the Protocol declares
        members = [n for n in {**interface.__dict__, **getattr(interface, "__annotations__", {})}
                   if not n.startswith("_")]
    missing = sorted(n for n in members if not hasattr(model, n))
    if missing:
        own = (f"the model's own objective (its default: {type(model).default_objective!r})"
               if isinstance(model, VideoModel) else "the model's own objective")
        raise ConfigError(
            f"objective {objective.name!r} ({objective.__name__}) cannot train a {type(model).__name__}: the model "
            f"lacks {', '.join(missing)} of the {interface.__name__} interface. Use {own} or implement "
            f"{interface.__name__}")


class Objective(ABC):
    """Base of every training objective (GAN, likelihood, diffusion, ...).

    Subclasses set ``name``, ``model_interface`` (a Protocol the constructor checks), ``ema_target``
    (the model attribute to keep an EMA of, or ``None``), ``compile_targets`` (attributes
    ``train.compile`` may compile) and ``conditions`` (the batch fields it reads besides clips, e.g.
    ``{"labels"}``), and implement :meth:`parameter_groups` and :meth:`run_phase`.
    """

    name: ClassVar[str]
    model_interface: ClassVar[type | None] = None
    ema_target: str | None = None
    compile_targets: tuple[str, ...] = ()
    conditions: frozenset[str] = frozenset()

    def __init__(self, model: Any, config: Any) -> None:
        check_model(type(self), model, self.model_interface)
        self.model, self.config = model, config

    @abstractmethod
    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Named parameter sets; each gets one optimiser (``train.optimizer``)."""

    def phases(self) -> tuple[Phase, ...]:
        """The phases of one step, in order (default: one per parameter group, every step)."""
        return tuple(Phase(name) for name in self.parameter_groups())

    def lr_factors(self, step: int) -> dict[str, float]:
        """The objective's own learning-rate factors for this step, by optimiser, applied on top of the
        trainer's schedule for the step only (default: none; DVG's GP MultiStepLR)."""
        return {}

    def begin_step(self, batches: list[Batch], ctx: StepContext) -> None:
        """Before the first phase (draws shared by the phases, one-time initialisations)."""

    @abstractmethod
    def run_phase(self, phase: Phase, batches: list[Batch], ctx: StepContext
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward and backward over this process's micro-batches (``batches[i]`` holds rows
        ``ctx.rows[i]`` of the global batch) for one phase. Returns ``(losses, metrics)``: the losses
        checked for NaN/inf before the optimiser step, and 0-d detached metrics to log."""

    def end_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, torch.Tensor]:
        """After every phase and the scaler update (non-gradient updates, e.g. a codebook EMA); metrics."""
        return {}

    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One optimisation step: every due phase, then :meth:`end_step`. Returns the metrics as 0-d
        tensors (detached, still on the device: the trainer converts them only when it logs)."""
        self.begin_step(batches, ctx)
        metrics: dict[str, torch.Tensor] = {}
        with ctx.lr_scaled(self.lr_factors(ctx.step)):
            for phase in self.phases():
                if ctx.step % phase.every:
                    continue
                for name in phase.optimizers:
                    ctx.optimizers[name].zero_grad(set_to_none=True)
                losses, phase_metrics = self.run_phase(phase, batches, ctx)
                for name in phase.optimizers:
                    ctx.apply(name, losses)
                metrics.update(phase_metrics)
            if ctx.scaler is not None:
                ctx.scaler.update()
        metrics.update(self.end_step(batches, ctx))
        return metrics

    def mean_loss(self, batches: list[Batch], ctx: StepContext, loss_fn) -> torch.Tensor:
        """The usual micro-batch loop: ``loss_fn(batch, rows)`` -> 0-d loss, backpropagated scaled;
        returns the mean of the micro-batch losses (detached)."""
        losses = []
        for batch, rows in zip(batches, ctx.rows):
            loss = loss_fn(batch, rows)
            ctx.scale(loss).backward()
            losses.append(loss.detach())
        return torch.stack(losses).mean()
