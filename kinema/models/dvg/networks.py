"""DVG's networks: the DCGAN frame encoder/decoder with skip connections and the deterministic LSTM.

Both follow the official code (github.com/shgaurav1/DVG at e882473, itself a fork of Denton & Fergus'
SVG): ``models/dcgan_64.py`` (encoder lines 28-54, decoder 57-88) and ``models/lstm.py`` (class
``lstm``, lines 5-35). The widths are ``nf, 2nf, 4nf, 8nf`` (official nf = 64 at 64x64: 64 -> 32 -> 16
-> 8 -> 4, then a valid 4x4 conv to ``g_dim``). ``levels`` generalises the fixed four stride-2 blocks to
other resolutions (``resolution = 4 * 2**levels``: 32 px -> 3 blocks); at 64 px it is exactly the
official network. Card: docs/models/dvg.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dcgan_init(module: nn.Module) -> None:
    """The official ``utils.init_weights`` (utils.py:304-311), applied to encoder, decoder and LSTM
    (train.py:79-83): conv / transposed conv / linear weights N(0, 0.02), biases 0; batch-norm scales
    N(1, 0.02), shifts 0. LSTM cells keep PyTorch's default initialisation (their class name matches
    neither pattern)."""
    name = type(module).__name__
    if "Conv" in name or "Linear" in name:
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif "BatchNorm" in name:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _down(nin: int, nout: int) -> nn.Sequential:  # dcgan_conv (dcgan_64.py:4-14)
    return nn.Sequential(nn.Conv2d(nin, nout, 4, 2, 1), nn.BatchNorm2d(nout), nn.LeakyReLU(0.2, inplace=True))


def _up(nin: int, nout: int) -> nn.Sequential:  # dcgan_upconv (dcgan_64.py:16-26)
    return nn.Sequential(nn.ConvTranspose2d(nin, nout, 4, 2, 1), nn.BatchNorm2d(nout), nn.LeakyReLU(0.2, inplace=True))


def widths(nf: int, levels: int) -> list[int]:
    """Channel widths of the stride-2 blocks, ``nf * 2**i`` (official: 64, 128, 256, 512)."""
    return [nf * 2**i for i in range(levels)]


class FrameEncoder(nn.Module):
    """``(B, C, H, W)`` -> ``h`` ``(B, g_dim)`` in (-1, 1) (BatchNorm + tanh) and the ``levels`` skip
    maps, finest first (official ``encoder.forward`` returns ``h5.view(-1, dim), [h1, h2, h3, h4]``)."""

    def __init__(self, g_dim: int, channels: int, nf: int, levels: int) -> None:
        super().__init__()
        w = widths(nf, levels)
        self.blocks = nn.ModuleList(_down(cin, cout) for cin, cout in zip([channels, *w[:-1]], w))
        self.head = nn.Sequential(nn.Conv2d(w[-1], g_dim, 4, 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
        conv, bn, tanh = self.head
        assert x.shape[-2:] == conv.kernel_size, f"encoder head: expected 4x4 maps, got {tuple(x.shape)}"
        # the valid 4x4 conv on a 4x4 map is a matrix product (same sums; 4x faster than the conv kernel here)
        h = F.linear(x.flatten(1), conv.weight.flatten(1), conv.bias)
        return tanh(bn(h[:, :, None, None])).flatten(1), skips


def conv_transpose(x: torch.Tensor, conv: nn.ConvTranspose2d, weight: torch.Tensor, bias: torch.Tensor | None,
                   ) -> torch.Tensor:
    """``conv``'s transposed convolution of ``x (B, C_in, h, w)`` with ``weight`` (a slice of its input channels).

    With few output channels (the last layer: 1 or 3) PyTorch's CPU kernel is slow (2.8 ms for 8 x 64 x 32^2 -> 1
    channel at one thread); the same sums as a matrix product then ``F.fold`` (col2im) take 0.4 ms. Wider layers
    keep the native kernel, which is faster there."""
    if weight.shape[1] > 4:
        return F.conv_transpose2d(x, weight, bias, conv.stride, conv.padding)
    b, c, h, w = x.shape
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    cols = torch.bmm(weight.flatten(1).t().expand(b, -1, -1), x.flatten(2))  # (B, C_out k k, h w); no copy of x
    out = F.fold(cols, ((h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k), k, padding=p, stride=s)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class SkipTerms(list):
    """Each up-sampling level's share of the skip maps, finest last: ``FrameDecoder.skip_terms`` output,
    accepted by ``FrameDecoder.forward`` in place of the maps."""


class FrameDecoder(nn.Module):
    """``(h (B, g_dim), skips)`` -> frame ``(B, C, H, W)``: a 4x4 transposed conv from the latent, then
    per level [concatenate the skip map, transposed conv 4x4 s2, BN, LeakyReLU 0.2], the last one a bare
    transposed conv to ``channels`` followed by the output activation (official: tanh, dcgan_64.py:75-79;
    SVG: sigmoid).

    A transposed convolution is linear in its input channels, so the conv of ``cat[x, skip]`` is the conv of
    ``x`` by the weight's first input channels plus the conv of ``skip`` by the rest (the same sum, in another
    order: equal to float rounding). The official decoder concatenates and convolves on every call
    (dcgan_64.py:80-88); but every frame after the context is decoded with the same skip maps (``skip_frame``),
    three times a frame in training. ``skip_terms(maps)`` computes the skip half once, and ``forward`` takes
    its result in place of the maps: about half the decoder's arithmetic is then done once per video instead
    of once per call (benchmarks: docs/benchmarks.md, DVG)."""

    def __init__(self, g_dim: int, channels: int, nf: int, levels: int, activation: str) -> None:
        super().__init__()
        w = widths(nf, levels)
        self.g_dim = g_dim
        self.stem = nn.Sequential(nn.ConvTranspose2d(g_dim, w[-1], 4, 1, 0), nn.BatchNorm2d(w[-1]),
                                  nn.LeakyReLU(0.2, inplace=True))
        rev = w[::-1]  # 512, 256, 128, 64
        self.blocks = nn.ModuleList(_up(2 * cin, cout) for cin, cout in zip(rev[:-1], rev[1:]))
        self.out = nn.ConvTranspose2d(2 * rev[-1], channels, 4, 2, 1)
        self.activation = {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid()}[activation]

    def _convs(self) -> list[nn.ConvTranspose2d]:
        return [*(block[0] for block in self.blocks), self.out]

    def skip_terms(self, skips: list[torch.Tensor]) -> SkipTerms:
        """The skip maps' part of every level's transposed conv (no bias), coarsest level first:
        ``(B, c_out, 2h, 2w)`` per level, from the encoder's maps (finest first)."""
        if isinstance(skips, SkipTerms):
            return skips
        terms = SkipTerms()
        for conv, skip in zip(self._convs(), skips[::-1]):
            half = conv.in_channels - skip.shape[1]
            terms.append(conv_transpose(skip, conv, conv.weight[half:], None))
        return terms

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor] | SkipTerms) -> torch.Tensor:
        """``skips``: the encoder's maps (finest first) or their ``skip_terms``."""
        terms = self.skip_terms(skips)
        stem, bn, act = self.stem
        k = stem.kernel_size
        # the 4x4 transposed conv of a 1x1 input is a matrix product (same sums; 3.5x faster than the kernel here)
        x = (h.reshape(-1, self.g_dim) @ stem.weight.flatten(1)).view(-1, stem.out_channels, *k)
        x = act(bn(x + stem.bias.view(1, -1, 1, 1)))
        for conv, term, level in zip(self._convs(), terms, [*self.blocks, None]):
            x = conv_transpose(x, conv, conv.weight[: x.shape[1]], conv.bias) + term
            if level is not None:
                x = level[2](level[1](x))  # BN, LeakyReLU
        return self.activation(x)


class LatentLSTM(nn.Module):
    """The deterministic frame predictor (official ``lstm``, models/lstm.py:5-35): Linear embed
    ``g_dim -> hidden``, ``layers`` stacked ``LSTMCell(hidden, hidden)``, Linear ``hidden -> g_dim``,
    tanh. The recurrent state is passed explicitly instead of living on the module (the official keeps
    it as an attribute allocated with ``.cuda()`` for a fixed batch size)."""

    def __init__(self, g_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.embed = nn.Linear(g_dim, hidden)
        self.cells = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        self.output = nn.Sequential(nn.Linear(hidden, g_dim), nn.Tanh())

    def init_state(self, batch: int, device, dtype=torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
        zeros = lambda: torch.zeros(batch, self.hidden, device=device, dtype=dtype)  # noqa: E731
        return [(zeros(), zeros()) for _ in range(self.layers)]

    def forward(self, h: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        x = self.embed(h)
        new_state = []
        for cell, s in zip(self.cells, state):
            hx, cx = cell(x, s)
            new_state.append((hx, cx))
            x = hx
        return self.output(x), new_state
