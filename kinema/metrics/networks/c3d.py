"""C3D v1 fine-tuned on UCF-101: the classifier of the video Inception Score.

The weights are Caffe's ``c3d_ucf101_finetune_whole_iter_20000``, as converted to a Chainer
``.npz`` by TGAN / TGANv2 (``conv3d_deepnetA_ucf.npz``; ``tgan2/models/c3d/c3d_ucf101.py``).
The Caffe -> Chainer copy is a plain ``ravel()`` of each blob, and Chainer's ``ConvolutionND`` /
``Linear`` use PyTorch's layouts ``(out, in, kT, kH, kW)`` / ``(out, in)``, so the arrays load as
they are, with no transposes.

Architecture (input ``(B, 3, 16, 112, 112)``, BGR, mean-subtracted, see :func:`preprocess_for_c3d`):
conv1a 3->64, pool1 (1,2,2); conv2a 64->128, pool2; conv3a/b 256, pool3; conv4a/b 512, pool4;
conv5a/b 512, pool5 -> ``(B, 512, 1, 4, 4)``; fc6 8192->4096, fc7 4096->4096, fc8 4096->101.
Convs are 3x3x3, pad 1, + ReLU; pools 2x2x2 stride 2 except pool1. Dropout is inference-off.

Pooling: Chainer's ``max_pooling_nd`` defaults to ``cover_all=True`` (Caffe pools round up as
well): output ``ceil((n - k) / s) + 1``, the last window hanging over the edge. PyTorch's
``ceil_mode=True`` gives the same windows (padding 0, so no window starts outside the input); it
matters at pool5, where H = W = 7 -> 4 (floor mode would give 3 and a 4608-d fc6 input).

Flatten before fc6: the pool5 map ``(B, C=512, T=1, H=4, W=4)`` is flattened in C order, index
``c * 16 + h * 4 + w`` (T = 1) -- the (C, T, H, W) order of Caffe's blob and of Chainer's
``Linear`` on a 5-D input. ``torch.flatten(x, 1)`` on the NCDHW map is that order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kinema.metrics.networks.weights import WeightsError, load_weights, save_weights
from kinema.files import file_sha256
from kinema.nn.shapes import assert_shape

NETWORK = "c3d"
CONV_LAYERS = ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
FC_LAYERS = ("fc6", "fc7", "fc8")
INPUT_SHAPE = (3, 16, 112, 112)  # (C, T, H, W) the network takes
MEAN_CLIP_SHAPE = (3, 16, 128, 171)  # Caffe's UCF-101/Sports-1M mean clip, BGR, (C, T, H, W)
PROTOCOLS = ("tganv2", "tgan")


def chainer_pool_size(n: int, k: int, s: int) -> int:
    """Output length of Chainer max pooling with ``cover_all=True`` and no padding: ``ceil((n-k)/s) + 1``."""
    return (n - k + s - 1) // s + 1


class C3D(nn.Module):
    """C3D v1 (UCF-101 fine-tuned). ``forward(x (B, 3, 16, 112, 112)) -> probs (B, 101)``."""

    def __init__(self, num_classes: int = 101) -> None:
        super().__init__()
        widths = (3, 64, 128, 256, 256, 512, 512, 512, 512)
        for name, cin, cout in zip(CONV_LAYERS, widths[:-1], widths[1:]):
            setattr(self, name, nn.Conv3d(cin, cout, 3, padding=1))
        self.fc6 = nn.Linear(512 * 1 * 4 * 4, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2), ceil_mode=True)  # time kept at 16
        self.pool = nn.MaxPool3d(2, 2, ceil_mode=True)  # ceil_mode == Chainer cover_all (module docstring)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pool5 map: ``(B, 3, 16, 112, 112) -> (B, 512, 1, 4, 4)``."""
        assert_shape(x, [None, *INPUT_SHAPE], "C3D input (pass videos through preprocess_for_c3d)")
        h = self.pool1(F.relu(self.conv1a(x)))  # (B, 64, 16, 56, 56)
        h = self.pool(F.relu(self.conv2a(h)))  # (B, 128, 8, 28, 28)
        h = self.pool(F.relu(self.conv3b(F.relu(self.conv3a(h)))))  # (B, 256, 4, 14, 14)
        h = self.pool(F.relu(self.conv4b(F.relu(self.conv4a(h)))))  # (B, 512, 2, 7, 7)
        return self.pool(F.relu(self.conv5b(F.relu(self.conv5a(h)))))  # (B, 512, 1, 4, 4)

    def classify(self, pool5: torch.Tensor) -> torch.Tensor:
        """fc6-fc8 on the pool5 map: ``(B, 512, 1, 4, 4) -> logits (B, 101)``."""
        h = pool5.flatten(1)  # (B, 8192) in (C, T, H, W) order, as Caffe / Chainer
        h = F.relu(self.fc7(F.relu(self.fc6(h))))
        return self.fc8(h)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 16, 112, 112) -> (B, 101)`` fc8 outputs (before softmax)."""
        return self.classify(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 16, 112, 112) -> (B, 101)`` softmax probabilities."""
        return self.logits(x).softmax(-1)


# --- preprocessing -------------------------------------------------------------------------------

def _check_mean_clip(mean_clip) -> torch.Tensor:
    m = mean_clip if isinstance(mean_clip, torch.Tensor) else torch.as_tensor(np.asarray(mean_clip))
    if m.ndim == 5 and m.shape[0] == 1:
        m = m[0]
    if tuple(m.shape) != MEAN_CLIP_SHAPE:
        raise ValueError(f"mean clip must have shape {MEAN_CLIP_SHAPE} or (1, *{MEAN_CLIP_SHAPE}), Caffe layout "
                         f"(C=BGR, T, H, W), got {tuple(m.shape)}; load it with load_mean_clip")
    return m.float()


def load_mean_clip(path: str | Path) -> torch.Tensor:
    """Read the C3D mean clip -> ``(3, 16, 128, 171)`` float32, BGR.

    Accepts ``.npy`` of shape ``(3, 16, 128, 171)`` or ``(1, 3, 16, 128, 171)``, or the ``.npz``
    the TGAN code ships (``mean2.npz``, array under key ``"mean"``). Never unpickles.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"C3D mean clip {path} does not exist; pass the mean2.npz of the TGAN / TGANv2 "
                                "evaluation code or a .npy of shape (3, 16, 128, 171)")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path} is not a plain .npy/.npz array file ({exc})") from exc
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = list(data.keys())
            if "mean" not in keys and len(keys) != 1:
                raise ValueError(f"{path} holds arrays {keys}; expected the mean clip under key 'mean'")
            data = data["mean" if "mean" in keys else keys[0]]
    return _check_mean_clip(data)


def _resize_frames(x: torch.Tensor, size: tuple[int, int], **kw) -> torch.Tensor:
    """``(N, C, T, H, W) -> (N, C, T, *size)``, each frame resized in 2-D."""
    n, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # fold time into batch
    frames = F.interpolate(frames, size=size, antialias=False, **kw)
    return frames.reshape(n, t, c, *size).permute(0, 2, 1, 3, 4)


def preprocess_for_c3d(videos, protocol: str, mean_clip) -> torch.Tensor:
    """Videos ``(N, 3, 16, H, W)`` float RGB in [-1, 1] -> C3D input ``(N, 3, 16, 112, 112)`` float32.

    ``protocol``:

    - ``"tganv2"`` (TGANv2 ``c3d_ucf101.py``): RGB -> BGR, ``x * 128``, bilinear resize of the
      whole frame to 112x112 with Chainer's ``resize_images`` semantics (``align_corners=True``, no
      antialiasing), then ``+ (128 - mean_clip[:, :, 8:120, 8:120])``. The net sees
      ``(x + 1) * 128 - mean`` in BGR. The mean crop is rows 8:120 and columns 8:120 of the
      128x171 clip -- left of centre in width, but that is what the reference does.
    - ``"tgan"`` (TGAN v1 ``evaluation/calc_inception.py``, copied by TGAN-ODE):
      ``x * 128 + 128``, each frame resized to 128x128 with OpenCV ``INTER_CUBIC``, RGB -> BGR,
      minus the mean clip's central 128 columns (``[..., 21:149]``), then the centre 112x112 crop
      ``[8:120, 8:120]``. Here bicubic is PyTorch's (``a = -0.75`` and edge-clamped taps like
      OpenCV's); not checked against cv2 bit for bit, expect round-off-level differences.

    ``mean_clip``: ``(3, 16, 128, 171)`` BGR (see :func:`load_mean_clip`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown C3D preprocessing protocol {protocol!r}; use one of {PROTOCOLS} "
                         "(tganv2: TGANv2 / TGANv2-ODE numbers, tgan: TGAN v1 / TGAN-ODE numbers)")
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(videos)
    if not isinstance(videos, torch.Tensor):
        raise TypeError(f"videos must be a torch tensor or numpy array, got {type(videos).__name__}")
    if not videos.is_floating_point():
        raise ValueError(f"videos have dtype {videos.dtype}; pass floats in [-1, 1] of shape (N, 3, 16, H, W) "
                         "(uint8 frames: x.float() / 127.5 - 1)")
    assert_shape(videos, [None, 3, 16, None, None], "videos for C3D (N, 3, 16, H, W) RGB")
    lo, hi = videos.min().item(), videos.max().item()
    if lo < -1.001 or hi > 1.001 or not np.isfinite([lo, hi]).all():
        raise ValueError(f"videos span [{lo:.4g}, {hi:.4g}]; pass floats in [-1, 1] (clamp generator outputs "
                         "with x.clamp(-1, 1), as the TGANv2 code does)")
    x = videos.float().clamp(-1, 1)  # within the tolerance above; the TGANv2 sampler clips the same way
    mean = _check_mean_clip(mean_clip).to(x.device)
    if protocol == "tganv2":
        x = x.flip(1) * 128  # RGB -> BGR, [-128, 128]
        x = _resize_frames(x, (112, 112), mode="bilinear", align_corners=True)
        return x + (128 - mean[:, :, 8:120, 8:120])
    x = x * 128 + 128  # [0, 256], RGB
    x = _resize_frames(x, (128, 128), mode="bicubic", align_corners=False)
    # mean[..., 21:149] then crop [8:120, 8:120] == crop the mean at columns 29:141 directly
    return x.flip(1)[..., 8:120, 8:120] - mean[:, :, 8:120, 29:141]


# --- weights -------------------------------------------------------------------------------------

def expected_shapes() -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the C3D state dict (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in C3D().state_dict().items()}


_IGNORED = ("pre/", "mean/")  # TGANv2's preprocessing links; kinema does that in preprocess_for_c3d


def _rename_c3d_keys(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map ``[prefix/]conv1a/W`` (Chainer) or ``[prefix.]conv1a.weight`` keys to ``conv1a.weight``."""
    styles = {"chainer": ("/W", "/b"), "torch": (".weight", ".bias")}
    hits = [(key, style) for key in arrays for style, (w, _) in styles.items() if key.endswith("conv1a" + w)]
    if len(hits) != 1:
        found = ", ".join(sorted(arrays)[:6]) or "nothing"
        what = "no" if not hits else f"{len(hits)}"
        raise WeightsError(f"{what} conv1a weights found (keys: {found}...); expected the C3D UCF-101 npz with "
                           "Chainer keys conv1a/W, conv1a/b, ... fc8/b (or conv1a.weight-style)")
    key, style = hits[0]
    wsuffix, bsuffix = styles[style]
    prefix = key[: -len("conv1a" + wsuffix)]
    state, used = {}, set()
    for layer in CONV_LAYERS + FC_LAYERS:
        for suffix, name in ((wsuffix, "weight"), (bsuffix, "bias")):
            src = f"{prefix}{layer}{suffix}"
            if src in arrays:
                state[f"{layer}.{name}"] = arrays[src]
                used.add(src)
    missing = sorted(f"{layer}.{n}" for layer in CONV_LAYERS + FC_LAYERS for n in ("weight", "bias")
                     if f"{layer}.{n}" not in state)
    extra = sorted(k for k in arrays if k.startswith(prefix) and k not in used
                   and not k[len(prefix):].startswith(_IGNORED))
    if missing or extra:
        parts = [f"missing {', '.join(missing[:4])}"] if missing else []
        parts += [f"unexpected {', '.join(extra[:4])}"] if extra else []
        hint = "; bn* keys mean tgan2's C3DVersion1 with batch norm, a different network" if any(
            "bn" in k[len(prefix):] for k in extra) else ""
        raise WeightsError("the file is not the C3D v1 UCF-101 network (" + "; ".join(parts) + ")" + hint)
    return state


def convert_c3d(src_npz: str | Path, out_safetensors: str | Path) -> Path:
    """Convert the published C3D UCF-101 ``.npz`` (Chainer ``conv1a/W`` ... ``fc8/b``) to safetensors.

    Arrays are copied as they are (same layouts, see the module docstring), cast to float32, and
    checked against the network's shapes. Returns the written path.
    """
    src_npz = Path(src_npz)
    if not src_npz.is_file():
        raise WeightsError(f"C3D source file {src_npz} does not exist; pass the Chainer npz converted from "
                           "c3d_ucf101_finetune_whole_iter_20000 (conv3d_deepnetA_ucf.npz)")
    try:
        with np.load(src_npz, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zip / format errors come in several types
        # numpy's text for a pickle suggests allow_pickle=True (running the file's code): never say that
        detail = ("not a zip of plain arrays; kinema never unpickles weight files" if "pickle" in str(exc)
                  else str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__)
        raise WeightsError(f"{src_npz} is not a readable .npz file of arrays ({detail}); pass the Chainer npz "
                           "converted from c3d_ucf101_finetune_whole_iter_20000 (conv3d_deepnetA_ucf.npz)") from None
    state = _rename_c3d_keys(arrays)
    shapes = expected_shapes()
    for key, want in shapes.items():
        got = tuple(state[key].shape)
        if got != want:
            hint = " (fc6 of 2048 inputs is tgan2's 64x64 C3D, not this one)" if key == "fc6.weight" else ""
            raise WeightsError(f"{src_npz}: {key} has shape {got}, the C3D UCF-101 network needs {want}{hint}")
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    return save_weights(tensors, out_safetensors, NETWORK, source_sha256=file_sha256(src_npz))


def load_c3d(path: str | Path, device: str | torch.device = "cpu") -> C3D:
    """Build C3D and load converted weights (``kinema convert c3d``) -> eval-mode model on ``device``."""
    with torch.device("meta"):
        model = C3D()
    model = model.to_empty(device="cpu")  # skip the random init of 78M parameters: the file overwrites them
    load_weights(model, path, NETWORK)
    return model.to(device).eval()
