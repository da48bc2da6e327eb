"""Convolutions with TensorFlow-style "same" padding (VideoGPT's encoder and decoder use them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _same_pad(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad amounts for 'same' padding: total ``k - s`` per axis, the extra pixel first (official)."""
    pads: list[int] = []
    for k, s in zip(reversed(kernel), reversed(stride)):
        p = k - s
        pads += [p // 2 + p % 2, p // 2]
    return tuple(pads)


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v, v)


class SamePadConv3d(nn.Module):
    """Conv3d whose output is ``input / stride`` on each axis (input divisible by the stride)."""

    def __init__(self, cin: int, cout: int, kernel=3, stride=1, bias: bool = True) -> None:
        super().__init__()
        kernel, stride = _triple(kernel), _triple(stride)
        self.pad = _same_pad(kernel, stride)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class SamePadConvTranspose3d(nn.Module):
    """ConvTranspose3d whose output is ``input * stride`` on each axis."""

    def __init__(self, cin: int, cout: int, kernel=4, stride=2, bias: bool = True) -> None:
        super().__init__()
        kernel, stride = _triple(kernel), _triple(stride)
        self.pad = _same_pad(kernel, stride)
        self.convt = nn.ConvTranspose3d(cin, cout, kernel, stride=stride, bias=bias,
                                        padding=tuple(k - 1 for k in kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convt(F.pad(x, self.pad))
