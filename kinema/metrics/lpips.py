"""LPIPS (Zhang et al., CVPR 2018), AlexNet v0.1, from a weights file the user provides (nothing downloaded).

The network is the ``lpips`` package's ``LPIPS(net="alex", version="0.1")`` (github.com/richzhang/
PerceptualSimilarity, ``lpips/lpips.py``): inputs in [-1, 1] shifted by ``[-.030, -.088, -.188]`` and
scaled by ``[.458, .448, .450]``; torchvision's AlexNet ``features`` tapped after its five ReLUs; each tap
unit-normalised over channels (eps 1e-10), squared difference, a learnt 1x1 convolution without bias to one
channel, the spatial mean; the sum over the five taps.

The weights file is that module's state dict (keys ``net.slice1.0.weight`` ..., ``lin0.model.1.weight``
...; ``.pth`` or ``.safetensors``). Where ``lpips`` and ``torchvision`` are installed (they download the
ImageNet AlexNet on first use) it is written by::

    python -c "import lpips, torch; torch.save(lpips.LPIPS(net='alex').state_dict(), 'lpips_alex.pth')"

Frames must be at least 31 pixels on each side (AlexNet's second max-pool needs a 3x3 map).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["LPIPS", "LPIPSError"]

# torchvision alexnet().features, by index; the lpips package slices it at 2, 5, 8, 10, 12
_FEATURES = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
             10: (256, 256, 3, 1, 1)}
_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
_CHANNELS = (64, 192, 384, 256, 256)
MAKE_FILE = ("python -c \"import lpips, torch; torch.save(lpips.LPIPS(net='alex').state_dict(), "
             "'lpips_alex.pth')\" where lpips and torchvision are installed")


class LPIPSError(ValueError):
    """The LPIPS weights file is missing or is not an AlexNet LPIPS state dict."""


def _layer(index: int) -> nn.Module:
    if index in _FEATURES:
        cin, cout, k, s, p = _FEATURES[index]
        return nn.Conv2d(cin, cout, k, s, p)
    return nn.MaxPool2d(3, 2) if index in (2, 5) else nn.ReLU()


class LPIPS(nn.Module):
    """``forward(x, y)``: images ``(N, 3, H, W)`` in [-1, 1] -> distances ``(N,)`` (0 for equal images)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = nn.Module()
        for k, (start, stop) in enumerate(_SLICES, 1):
            block = nn.Sequential()
            for index in range(start, stop):
                block.add_module(str(index), _layer(index))
            self.net.add_module(f"slice{k}", block)
        for k, c in enumerate(_CHANNELS):  # lpips' NetLinLayer: [Dropout, Conv2d(c, 1, 1, bias=False)]
            self.add_module(f"lin{k}", nn.Module())
            getattr(self, f"lin{k}").model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))

    @classmethod
    def from_file(cls, path: str | Path) -> LPIPS:
        file = Path(path)
        if not file.is_file():
            raise LPIPSError(f"LPIPS weights {path}: no such file; write one with {MAKE_FILE}")
        from kinema.foreign import load_tensor_file

        state = load_tensor_file(file, f"an AlexNet LPIPS state dict; write one with {MAKE_FILE}", LPIPSError)
        model = cls()
        wanted = {k for k in model.state_dict() if k.startswith(("net.", "lin"))}
        missing = sorted(wanted - set(state))
        if missing:
            raise LPIPSError(f"LPIPS weights {path}: not an AlexNet LPIPS state dict (missing {', '.join(missing[:4])}"
                             f"{' ...' if len(missing) > 4 else ''}); write one with {MAKE_FILE}")
        try:
            model.load_state_dict({k: state[k] for k in wanted}, strict=False)
        except RuntimeError as exc:
            raise LPIPSError(f"LPIPS weights {path}: {exc}") from None
        return model.requires_grad_(False).eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.shift) / self.scale
        taps = []
        for k in range(1, 6):
            h = getattr(self.net, f"slice{k}")(h)
            taps.append(h)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS compares images (N, 3, H, W) of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < 31:
            raise ValueError(f"LPIPS (AlexNet) needs frames of at least 31x31 pixels, got {x.shape[-2]}x{x.shape[-1]}")
        total = x.new_zeros(len(x))
        for k, (a, b) in enumerate(zip(self.features(x), self.features(y))):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{k}").model((a - b) ** 2).mean((1, 2, 3))
        return total
