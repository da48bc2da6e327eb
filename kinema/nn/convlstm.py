"""Convolutional LSTM (Shi et al. 2015) without peepholes, as used by TGANv2's temporal generator."""

from __future__ import annotations

import torch
from torch import nn

from kinema.nn.shapes import assert_shape


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: a single convolution over ``concat(x, h)`` gives the four gates.

    Shapes: ``x (B, C_in, H, W)``, state ``(h, c)`` each ``(B, C_hidden, H, W)``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Runs a :class:`ConvLSTMCell` over time from a zero state.

    ``forward(x)`` takes ``x (B, C_in, T, H, W)`` and returns the hidden maps ``(B, C_hidden, T, H, W)``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert_shape(x, [None, self.cell.in_channels, None, None, None], "ConvLSTM input (B, C, T, H, W)")
        b, _, t, h, w = x.shape
        state = (x.new_zeros(b, self.cell.hidden_channels, h, w),) * 2
        outputs = []
        for step in range(t):
            state = self.cell(x[:, :, step], state)
            outputs.append(state[0])
        return torch.stack(outputs, dim=2)
