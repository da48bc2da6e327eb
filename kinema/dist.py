"""Every collective kinema uses, in one place. Without ``torch.distributed`` initialised (one process)
each is the identity or a no-op, so callers never branch on the process count themselves.

This is the one home of talking to other processes, on the bottom floor: layers (synchronised batch norm),
objectives (gradient averaging, the NaN verdict, SVC broadcasts) and model families (StyleGAN-V's ADA
statistics) call it without reaching into the training package, and nothing else imports
``torch.distributed`` for a collective. :mod:`kinema.training.distributed` is not a second home: it *joins*
the job torchrun started (process group, device per rank) and orders each rank's data -- what only the
trainer does -- and uses this module for every collective.

kinema averages gradients explicitly after each phase's backward instead of wrapping the networks in
``DistributedDataParallel``: DDP's reducer hooks assume one forward per backward and misbehave with the
GAN objective's pattern (one D forward whose graph serves the G step via ``autograd.grad`` to its inputs
and the D step later) and with the R1 penalty's double backward (pytorch/pytorch#47562, #63812). The
price is no overlap of communication with the backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """More than one process in an initialised default process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes in place; returns ``t``."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max_(t: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of ``t`` over processes in place; returns ``t``."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` with rank ``src``'s copy in place; returns ``t``."""
    if world_size() > 1:
        dist.broadcast(t, src=src)
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_module_(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every process (so all start identical)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def average_gradients(params: list[torch.nn.Parameter], also: torch.Tensor | None = None,
                      bucket_bytes: int = 25 * 2**20) -> torch.Tensor | None:
    """Average ``.grad`` over processes in flat buckets (one collective per ~25 MB); ``also`` (the step's loss
    values) rides in the last bucket and is returned averaged (itself with one process): the loss check then
    needs no collective of its own. NaN anywhere -> NaN everywhere.

    Accumulation needs no ``no_sync``: gradients are only reduced once, after the last micro-step.
    """
    if world_size() == 1:
        return also
    also = also.clone() if also is not None else None
    tensors = [p.grad for p in params if p.grad is not None] + ([also] if also is not None else [])
    bucket: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        if bucket and (tensor.dtype != bucket[0].dtype or tensor.device != bucket[0].device or size >= bucket_bytes):
            _all_reduce_mean_(bucket)
            bucket, size = [], 0
        bucket.append(tensor)
        size += tensor.numel() * tensor.element_size()
    if bucket:
        _all_reduce_mean_(bucket)
    return also


def _all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


class AllReduceSum(torch.autograd.Function):
    """Sum of a tensor over processes, differentiable. Its gradient is again the sum of the incoming
    gradients over processes (each process's output depends on every input), computed with this same
    function, so higher-order gradients work too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return AllReduceSum.apply(grad.contiguous())
