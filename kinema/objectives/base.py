"""What every objective shares: the interface the trainer calls, and the non-finite-loss error."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.distributed as dist

from kinema.nn.batch import BatchRows


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised before any optimiser step applies it."""

    def __init__(self, name: str, value: float) -> None:
        super().__init__(f"loss {name!r} is {value}")
        self.name = name
        self.value = value


def check_finite(losses: dict[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteLossError` for the first NaN/inf entry of ``losses``.

    One host-device synchronisation for all entries (it must happen before the optimiser step).
    With several processes the values are averaged over them first, so a NaN on one process
    stops all of them at the same step.
    """
    device = next(iter(losses.values())).device
    values = all_reduce_mean(torch.stack([v.detach().float().reshape(()).to(device) for v in losses.values()]))
    if bool(torch.isfinite(values).all()):
        return
    for name, v in zip(losses, values.tolist()):
        if not math.isfinite(v):
            raise NonFiniteLossError(name, v)


@dataclass
class StepContext:
    """What one optimisation step gets besides its data, handed to ``Objective.train_step``.

    ``generator`` is the noise RNG; it holds the same state on every process, so anything drawn
    for the whole global batch is identical everywhere and each process keeps its ``rows``.
    ``rows`` has one :class:`~kinema.nn.BatchRows` per micro-batch (gradient accumulation), each
    naming that micro-batch's rows of the global batch. ``apply`` ends a phase: it averages the
    gradients over processes, checks losses and gradients for NaN/inf (the same verdict on every
    process, so none is left waiting in a collective), and steps the optimiser.
    """

    optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator
    rows: list[BatchRows]
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def for_batch(
        cls,
        optimizers: dict[str, torch.optim.Optimizer],
        generator: torch.Generator,
        batch_size: int,
        scaler: torch.amp.GradScaler | None = None,
        accumulate: int = 1,
    ) -> StepContext:
        """One process holding the whole batch of ``batch_size`` in ``accumulate`` micro-batches."""
        return cls(optimizers, generator, BatchRows.whole(batch_size).split(accumulate), scaler)

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

    def params(self, name: str) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizers[name].param_groups for p in group["params"]]

    def apply(self, name: str, losses: dict[str, torch.Tensor]) -> None:
        """Average gradients over processes, check, then step optimiser ``name``.

        Without a gradient scaler a NaN/inf loss or gradient raises :class:`NonFiniteLossError`
        before the step; with one (fp16) the scaler skips steps whose gradients overflowed and only
        non-finite losses raise.
        """
        optimizer, params = self.optimizers[name], self.params(name)
        average_gradients(params)
        if self.scaler is None:
            check_finite({**losses, f"{name} gradient norm": gradient_norm(params)})
            optimizer.step()
        else:
            check_finite(losses)
            self.scaler.unscale_(optimizer)
            self.scaler.step(optimizer)


def world_size() -> int:
    """Processes in the default process group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over processes (``t`` itself with one process). NaN anywhere -> NaN everywhere."""
    if world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world_size()


def average_gradients(params: list[torch.nn.Parameter], bucket_bytes: int = 25 * 2**20) -> None:
    """Average ``.grad`` over processes in flat buckets (one collective per ~25 MB).

    kinema reduces gradients explicitly after each phase's backward instead of wrapping the
    networks in ``DistributedDataParallel``: DDP's reducer hooks assume one forward per backward
    and misbehave with the GAN objective's pattern (one D forward whose graph serves the G step via
    ``autograd.grad`` to its inputs and the D step later) and with the R1 penalty's double backward
    (pytorch/pytorch#47562, #63812). The price is no overlap of communication with the backward.
    Accumulation needs no ``no_sync``: gradients are only reduced once, after the last micro-step.
    """
    if world_size() == 1:
        return
    bucket: list[torch.Tensor] = []
    size = 0
    for grad in (p.grad for p in params if p.grad is not None):
        if bucket and (grad.dtype != bucket[0].dtype or size >= bucket_bytes):
            _all_reduce_mean_(bucket)
            bucket, size = [], 0
        bucket.append(grad)
        size += grad.numel() * grad.element_size()
    if bucket:
        _all_reduce_mean_(bucket)


def _all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def gradient_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of all gradients (0-d tensor, no host sync); NaN/inf if any gradient is."""
    norms = torch._foreach_norm([p.grad for p in params if p.grad is not None])
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


class Objective(Protocol):
    """The trainer's view of a training objective (GAN, likelihood, diffusion, ...).

    ``parameter_groups()`` names the parameter sets that get one optimiser each;
    ``ema_target`` is the attribute of the model to keep an EMA of (or ``None``);
    ``compile_targets`` names the model attributes that ``train.compile`` may ``torch.compile``;
    ``train_step(micro_batches, ctx)`` runs every phase of one iteration on this process's real
    micro-batches (each ``(b, C, T, H, W)``, rows ``ctx.rows[i]`` of the global batch), ending each
    phase with ``ctx.apply``, and returns scalar metrics as 0-d tensors (detached, still on the
    device, so the trainer converts -- and averages over processes -- only when it logs).
    """

    ema_target: str | None
    compile_targets: tuple[str, ...]

    def parameter_groups(self) -> dict[str, Iterable[torch.nn.Parameter]]: ...

    def train_step(self, micro_batches: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]: ...
