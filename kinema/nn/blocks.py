"""Residual blocks shared by the GAN models: 2-D up-sampling blocks and 3-D down-sampling blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UpBlock2d(nn.Module):
    """TGANv2 ``Up(C)`` block: BN-ReLU-up2-conv3x3-BN-ReLU-conv3x3, shortcut up2-conv1x1.

    ``(N, C_in, H, W) -> (N, C_out, 2H, 2W)``; nearest-neighbour up-sampling as in the official code.
    """

    def __init__(self, in_channels: int, out_channels: int, bn_eps: float = 2e-5) -> None:
        super().__init__()
        # eps 2e-5 and momentum 0.1 are Chainer's BatchNormalization defaults (official code).
        self.bn1 = nn.BatchNorm2d(in_channels, eps=bn_eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


def downsample3d(x: torch.Tensor, pad_singleton: bool = True) -> torch.Tensor:
    """TGANv2's ``DownSample`` of ``(B, C, T, H, W)``: 2x average pooling on every axis of size > 1.

    Mirrors the official Chainer call ``average_pooling_nd(x, ksize, pad=0 if even else 1)``: an odd
    axis is zero-padded by one on *both* sides (the zeros count in the average, and the trailing pad
    falls outside the last window), so size 3 becomes 2 and size 5 becomes 3. Chainer also pads an
    axis of size 1 (kernel 1, pad 1): it grows to 3 with a zero slice on each side. That quirk of the
    official code changes the scores of levels that reach ``T = 1``; ``pad_singleton = False`` leaves
    such axes alone instead.
    """
    kernel, pads = [], []
    for size in x.shape[2:]:
        kernel.append(2 if size > 1 else 1)
        odd = size % 2 == 1 and (size > 1 or pad_singleton)
        pads.append(1 if odd else 0)
    if any(pads):
        # F.pad lists the last axis first: (W_lo, W_hi, H_lo, H_hi, T_lo, T_hi)
        x = F.pad(x, [p for pad in reversed(pads) for p in (pad, pad)])
    return F.avg_pool3d(x, kernel_size=kernel, stride=kernel)


class DisBlock3d(nn.Module):
    """Discriminator block: ReLU-conv3-ReLU-conv3-DownSample, shortcut conv1-DownSample.

    The hidden width equals ``in_channels`` (this is what reproduces the published parameter count).
    ``(B, C_in, T, H, W) -> (B, C_out, ceil(T/2), ceil(H/2), ceil(W/2))`` (see :func:`downsample3d`
    for axes of size 1).
    """

    def __init__(self, in_channels: int, out_channels: int, pad_singleton: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1)
        self.pad_singleton = pad_singleton

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        return downsample3d(h, self.pad_singleton) + downsample3d(self.shortcut(x), self.pad_singleton)


class OptimizedDisBlock3d(nn.Module):
    """First discriminator block, fed with pixels: conv3-ReLU-conv3-pool, shortcut pool-conv1.

    Pools space only (``(B, 3, T, H, W) -> (B, C_out, T, H/2, W/2)``), keeping every input frame.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1)

    @staticmethod
    def _pool_space(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(x, kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._pool_space(self.conv2(F.relu(self.conv1(x))))
        return h + self.shortcut(self._pool_space(x))
