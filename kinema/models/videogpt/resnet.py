"""The official VideoGPT conditioning-frame encoder: a 3-D ResNet-34 with channel layer norms.

Official ``videogpt/resnet.py`` (wilson1yan/VideoGPT at 733d2b1), as ``gpt.py:36-45`` builds it:
``resnet34(1, (1, 4, 4), resnet_dim=240)`` -- CIFAR stem (3x3x3 conv, no bias, + layer norm + ReLU), four
groups of 3, 4, 6, 3 residual blocks of 64, 128, 256, ``out_dim`` channels; groups 2 and 3 halve H and W
(stride (1, 2, 2)), so space shrinks by 4 and time not at all. Every "batch norm" of the official code is a
layer norm over channels (``ChannelLayerNorm``: ``nn.LayerNorm``, eps 1e-5). Parameter names follow the
official module tree, so the authors' ``resnet.*`` weights load by name (``kinema convert videogpt_prior``).

Used by the prior when ``model.cond_encoder = "resnet34"``; kinema's own smaller encoder is
:class:`kinema.models.videogpt.prior.FrameEncoder`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the channels of ``(B, C, T, H, W)`` (official resnet.py:10-20)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class NormReLU(nn.Module):
    """Layer norm (in float32) then ReLU unless ``relu=False`` (official resnet.py:23-37)."""

    def __init__(self, channels: int, relu: bool = True) -> None:
        super().__init__()
        self.relu = relu
        self.norm = ChannelLayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.float()).to(x.dtype)
        return F.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    """``relu(NormReLU(conv2(NormReLU(conv1(x)))) + shortcut)``; the shortcut is a strided 1x1x1 conv +
    layer norm in the first block of a group (official resnet.py:40-66)."""

    def __init__(self, cin: int, cout: int, stride, projection: bool = False) -> None:
        super().__init__()
        if projection:
            self.proj_conv = nn.Conv3d(cin, cout, 1, stride=stride, bias=False)
            self.proj_bnr = NormReLU(cout, relu=False)
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bnr1 = NormReLU(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bnr2 = NormReLU(cout)
        self.projection = projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.proj_bnr(self.proj_conv(x)) if self.projection else x
        return F.relu(self.bnr2(self.conv2(self.bnr1(self.conv1(x)))) + shortcut)


class BlockGroup(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, stride) -> None:
        super().__init__()
        self.start_block = ResidualBlock(cin, cout, stride, projection=True)
        self.blocks = nn.Sequential(*[ResidualBlock(cout, cout, 1) for _ in range(1, blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.start_block(x))


class ResNet34(nn.Module):
    """``(B, 3, n, H, W)`` -> ``(B, n, H/4, W/4, out_dim)`` (channels last, as the official returns it)."""

    def __init__(self, out_dim: int = 240, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 64, 3, padding=1, bias=False), NormReLU(64))
        self.group1 = BlockGroup(64, 64, layers[0], 1)
        self.group2 = BlockGroup(64, 128, layers[1], (1, 2, 2))
        self.group3 = BlockGroup(128, 256, layers[2], (1, 2, 2))
        self.group4 = BlockGroup(256, out_dim, layers[3], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for group in (self.group1, self.group2, self.group3, self.group4):
            x = group(x)
        return x.movedim(1, -1)
