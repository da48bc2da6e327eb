"""Inception-v3 of the TF FID code (the ``inception-2015-12-05`` graph), as ported by pytorch-fid.

The feature network of frame FID. The architecture is torchvision's ``Inception3`` with the four
patches pytorch-fid found by comparing with the TF graph (``use_fid_inception=True``):

* the 3x3 average pools of Mixed_5b..5d, 6b..6e and 7b exclude padding from the mean
  (``count_include_pad=False``, like TF's ``avg_pool`` with SAME padding);
* Mixed_7c pools its fourth branch with a 3x3 *max* pool (a quirk of that graph);
* ``fc`` is 2048 -> 1008 (the graph's ``softmax/logits``), and there is no auxiliary classifier.

Every stride-2 conv / pool of Inception-v3 is VALID and every stride-1 conv has an odd kernel with
symmetric padding, so PyTorch's padding equals TF's SAME here (unlike I3D, no asymmetric padding).
BasicConv2d = conv (no bias) -> BatchNorm (eps 1e-3, running statistics only) -> ReLU.

Input conventions (kinema's own frames are in [-1, 1]; the network wants neither of these as is):

* ``FIDInceptionV3.forward(x)`` takes RGB ``(B, 3, H, W)`` float in **[0, 1]**, like pytorch-fid's
  ``InceptionV3``: it resizes to 299x299 and maps to [-1, 1] itself.
* ``FIDInceptionV3.frame_features(frames)`` takes uint8 ``(N, H, W, 3)`` and returns pool3 features.

Two preprocessing protocols (``resize=``), both from uint8 RGB:

* ``"torch"`` (default, = pytorch-fid): ``u / 255`` -> ``F.interpolate(bilinear, align_corners=False)``
  (half-pixel centres) to 299 -> ``2 x - 1``.
* ``"tf1"`` (= the TF graph): TF1 ``ResizeBilinear`` (asymmetric ``src = dst * in / out``, see
  :func:`kinema.metrics.networks.i3d.resize_bilinear_tf1`) of the 0..255 values to 299, then the
  graph's ``Sub 128`` / ``Mul 1/128``, i.e. ``(u - 128) / 128`` (255 -> 0.9921875, not 1).

The two differ a little in FID (pytorch-fid reports this as its main remaining difference to TF);
pass the same protocol for every set you compare.

State-dict names are pytorch-fid's (torchvision's), e.g. ``Conv2d_1a_3x3.conv.weight``,
``Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}``, ``Mixed_5b.branch1x1.conv.weight``,
``fc.weight (1008, 2048)``, ``fc.bias``; BatchNorm keeps no ``num_batches_tracked`` (the converter drops
it). Weights: :func:`convert_inception` turns pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
into a safetensors file; :func:`load_inception` reads it.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kinema.foreign import load_tensor_file
from kinema.metrics.networks.i3d import resize_bilinear_tf1
from kinema.metrics.networks.weights import (
    WeightsError,
    check_state_dict,
    file_sha256,
    load_weights,
    save_weights,
    uint8_tensor,
)
from kinema.files import file_sha256

NETWORK = "inception"
INPUT_SIZE = 299
MIN_SIZE = 75  # the smallest input the VALID stride-2 layers leave a 1x1 map for (torchvision's bound)
NUM_CLASSES = 1008
FEATURE_DIM = 2048
BN_EPS = 1e-3
RESIZE_MODES = ("torch", "tf1")
PUBLISHED_FILE = "pt_inception-2015-12-05-6726825d.pth"
PUBLISHED_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PUBLISHED_FILE
_RANGE_TOL = 1e-3  # float slack on [0, 1]; still catches [-1, 1] and [0, 255] inputs


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

class FrozenBatchNorm2d(nn.Module):
    """Inference BatchNorm: ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``.

    Same keys as ``nn.BatchNorm2d`` minus ``num_batches_tracked``: the metric network never trains,
    so batch statistics (and a counter of them) would only be a way to get wrong features.
    """

    def __init__(self, channels: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> same shape."""
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)


class BasicConv2d(nn.Module):
    """conv (no bias) -> FrozenBatchNorm2d (eps 1e-3) -> ReLU; keys ``conv.weight``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = FrozenBatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, cin, H, W)`` -> ``(B, cout, H', W')``."""
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME avg_pool divides by the number of real pixels; torchvision's default counts the zeros.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b..5d (35x35): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1. ``(B, cin, H, W)`` ->
    ``(B, 224 + pool_features, H, W)``."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_tf(x)),
        ], 1)


class InceptionB(nn.Module):
    """Mixed_6a (35 -> 17): 3x3/2 | 1x1->3x3->3x3/2 | maxpool 3/2. ``(B, cin, H, W)`` ->
    ``(B, 480 + cin, (H-3)//2+1, (W-3)//2+1)``."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (17x17), factorised 7x7: 1x1 | 1x1->1x7->7x1 | 1x1->7x1->1x7->7x1->1x7 |
    avgpool->1x1. ``(B, cin, H, W)`` -> ``(B, 768, H, W)``."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = layer(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(_avg_pool_tf(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a (17 -> 8): 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool 3/2. ``(B, cin, H, W)`` ->
    ``(B, 512 + cin, (H-3)//2+1, (W-3)//2+1)``."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b / 7c (8x8), expanded: 1x1 | 1x1->(1x3, 3x1) | 1x1->3x3->(1x3, 3x1) | pool->1x1.
    ``(B, cin, H, W)`` -> ``(B, 2048, H, W)``. ``pool="max"`` is the FID graph's Mixed_7c."""

    def __init__(self, cin: int, pool: str = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        # max_pool2d pads with -inf, which is what TF's SAME max pool does too.
        pooled = _avg_pool_tf(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3),
            self.branch_pool(pooled),
        ], 1)


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

# Forward order; "maxpool1/2" are the parameter-free stem pools (3x3, stride 2, VALID).
BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3, inference only.

    ``forward(x (B, 3, H, W) float RGB in [0, 1]) -> pool3 (B, 2048)`` (or ``layer="logits"`` ->
    ``(B, 1008)``), resizing to 299x299 first. ``trunk`` / ``features`` take network input that is
    already in [-1, 1]. There is no dropout (the TF graph has none on the pool3 -> logits path).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self.eval()

    def trunk(self, x: torch.Tensor, return_blocks: bool = False):
        """Network input ``(B, 3, H, W)`` in [-1, 1] (299² for the real protocol, >= 75²) -> Mixed_7c
        map ``(B, 2048, h, w)`` (8x8 at 299), or with ``return_blocks`` an ordered dict of every
        entry of :data:`BLOCKS` -> its output."""
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[2:]) < MIN_SIZE:
            raise ValueError(f"the Inception trunk takes (B, 3, H, W) with H, W >= {MIN_SIZE}, "
                             f"got shape {tuple(x.shape)}")
        outputs: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name in BLOCKS:
            x = F.max_pool2d(x, 3, stride=2) if name.startswith("maxpool") else getattr(self, name)(x)
            if return_blocks:
                outputs[name] = x
        return outputs if return_blocks else x

    def features(self, x: torch.Tensor, layer: str = "pool3") -> torch.Tensor:
        """Network input ``(B, 3, H, W)`` in [-1, 1] -> pool3 ``(B, 2048)`` or logits ``(B, 1008)``."""
        if layer not in ("pool3", "logits"):
            raise ValueError(f"layer must be 'pool3' or 'logits', got {layer!r}")
        pool3 = self.trunk(x).mean((2, 3))  # TF: 8x8 VALID avg_pool at 299 = the global mean
        return pool3 if layer == "pool3" else self.fc(pool3)

    def forward(self, x: torch.Tensor, layer: str = "pool3", resize: str = "torch") -> torch.Tensor:
        """RGB ``(B, 3, H, W)`` float in [0, 1] -> pool3 ``(B, 2048)`` or logits ``(B, 1008)``."""
        return self.features(preprocess(x, resize), layer)

    @torch.no_grad()
    def frame_features(self, frames, batch_size: int = 64, resize: str = "torch",
                       layer: str = "pool3") -> torch.Tensor:
        """uint8 RGB frames ``(N, H, W, 3)`` (numpy or tensor) -> float32 CPU ``(N, 2048)`` pool3
        (or ``(N, 1008)`` logits). Batches of ``batch_size`` go to the model's device, so only
        that many frames ever exist at 299²."""
        frames = uint8_tensor(frames, 4, "frames (N, H, W, 3) (flatten videos with reshape(-1, H, W, 3))",
                              "frame_features", "frames")
        if len(frames) == 0:
            raise ValueError("no frames given")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(frames), batch_size):
            batch = frames[start:start + batch_size].to(device).permute(0, 3, 1, 2).float() / 255.0
            out.append(self.features(preprocess(batch, resize), layer).float().cpu())
        return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------

def preprocess(x: torch.Tensor, resize: str = "torch", size: int = INPUT_SIZE) -> torch.Tensor:
    """RGB ``(B, 3, H, W)`` float in [0, 1] -> network input ``(B, 3, size, size)`` in [-1, 1].

    ``resize="torch"``: pytorch-fid's torch bilinear (half-pixel) then ``2 x - 1``. ``resize="tf1"``:
    the TF graph's TF1 bilinear (asymmetric) then ``(255 x - 128) / 128``. See the module docstring.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"FIDInceptionV3 takes float RGB in [0, 1], got {kind}; "
                         "uint8 frames (N, H, W, 3) go through frame_features")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"FIDInceptionV3 takes (B, 3, H, W) RGB in [0, 1], got shape {tuple(x.shape)}"
                         + ("; channels-last input needs permute(0, 3, 1, 2)" if x.ndim == 4 and x.shape[-1] == 3
                            else ""))
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        lo, hi = lo.item(), hi.item()
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise ValueError(f"FIDInceptionV3 takes RGB in [0, 1] (as pytorch-fid), got values in "
                             f"[{lo:.4g}, {hi:.4g}]; kinema frames in [-1, 1] need (x + 1) / 2 "
                             "(or to_uint8 and frame_features)")
    if resize == "torch":
        if tuple(x.shape[2:]) != (size, size):  # at equal size the half-pixel map is the identity
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0
    # The graph resizes the 0..255 values (ResizeBilinear), then Sub 128 and Mul 1/128; bilinear is
    # affine-invariant, so resizing first and scaling after equals it up to float rounding.
    x = resize_bilinear_tf1(x.permute(0, 2, 3, 1), (size, size)).permute(0, 3, 1, 2)
    return (x * 255.0 - 128.0) / 128.0


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

def _check_published_hash(src: Path) -> None:
    # torch.hub names its files NAME-<sha256 prefix>.EXT; a file under that name with another hash is a
    # truncated or substituted download, and features from it would be silently wrong.
    m = re.fullmatch(r"pt_inception-2015-12-05-([0-9a-f]{8,})\.pth", src.name)
    if m is None:
        return
    digest = file_sha256(src)
    if not digest.startswith(m.group(1)):
        raise WeightsError(f"{src}: sha256 {digest[:16]}... does not start with {m.group(1)} as its "
                           f"name says; download it again from {PUBLISHED_URL}")


def convert_inception(src: str | Path, out: str | Path) -> Path:
    """Convert pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` to a kinema safetensors file.

    Keys map 1:1; BatchNorm ``num_batches_tracked`` counters (present or not in the source) are
    dropped. Missing, unexpected and misshapen keys are refused by name (:class:`WeightsError`).
    """
    src = Path(src)
    if not src.is_file():
        raise WeightsError(f"{src} does not exist; kinema downloads nothing: fetch {PUBLISHED_URL} yourself")
    _check_published_hash(src)
    state = load_tensor_file(src, f"pytorch-fid's {PUBLISHED_FILE} from {PUBLISHED_URL}", WeightsError)
    with torch.device("meta"):  # shapes only; nothing is allocated
        model = FIDInceptionV3()
    expected = model.state_dict()
    bn_layers = {k.rsplit(".", 1)[0] for k in expected if k.endswith(".running_var")}
    state = {k: v for k, v in state.items()
             if not (k.endswith(".num_batches_tracked") and k.rsplit(".", 1)[0] in bn_layers)}
    aux = any("AuxLogits" in k for k in state)
    check_state_dict(expected, state, f"{src} is not the FID Inception",
                     "; torchvision's ImageNet Inception is a different network" if aux else "")
    bad = sorted(k for k, v in state.items() if not torch.isfinite(v).all())
    if bad:
        raise WeightsError(f"{src} has non-finite values in {len(bad)} tensors (e.g. {bad[0]}); corrupted file?")
    state = {k: state[k].float().contiguous() for k in expected}
    model.to_empty(device="cpu").load_state_dict(state, strict=True)  # the final word on the key set
    return save_weights(state, out, NETWORK, source_sha256=file_sha256(src))


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3`, load a converted weights file strictly, eval mode on ``device``."""
    with torch.device("meta"):  # skip the random init: every tensor is overwritten by the strict load
        model = FIDInceptionV3()
    model.to_empty(device=device)
    load_weights(model, path, NETWORK)
    return model.eval()
