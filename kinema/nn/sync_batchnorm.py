"""Batch norm whose training statistics cover the batch of every data-parallel process.

TGANv2 synchronised its generator's batch norm across its 4 GPUs (Chainer's multi-node BN). PyTorch's
``nn.SyncBatchNorm`` does the same but only on CUDA; this layer is plain autograd around two
differentiable all-reduces (:class:`AllReduceSum`), so it runs on CPU with gloo as well as on GPUs
with NCCL, and supports double backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from kinema.dist import AllReduceSum, is_distributed


class DistributedBatchNorm(_BatchNorm):
    """Drop-in replacement of ``BatchNorm{1,2,3}d``: the same parameters and buffers (checkpoints
    load either way); in training mode with more than one process, mean and variance are computed
    over all processes' samples. Input ``(N, C, ...)``; evaluation uses the running statistics.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"DistributedBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
        xf = x.float()
        # Two reductions, [sum, count] then the sum of squared deviations from the global mean: the
        # one-pass E[x^2] - E[x]^2 cancels catastrophically when a channel's mean is large against its
        # spread, and then differed from one-process batch norm by ~1e-4 after a single step. Their
        # backward all-reduces the gradients, so every process gets the global normalisation's gradient.
        c = x.shape[1]
        stats = AllReduceSum.apply(torch.cat([xf.sum(dims), count.expand(1)]))
        n = stats[-1]
        mean = stats[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        centred = xf - mean.view(shape)
        var = AllReduceSum.apply(centred.pow(2).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm{1,2,3}d`` in ``module`` by :class:`DistributedBatchNorm` (in place,
    same names and values); returns ``module`` (or the replacement if ``module`` itself is one)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, DistributedBatchNorm):
        new = DistributedBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats, device=_device_of(module))
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        replacement = convert_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return None
