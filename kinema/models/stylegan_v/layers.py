"""StyleGAN2 building blocks in pure PyTorch (no custom CUDA ops), as StyleGAN-V uses them.

The official code (universome/stylegan-v, commit 3fecd69) runs NVIDIA's ``upfirdn2d`` / ``bias_act`` /
``conv2d_resample`` CUDA plugins. Here the same maths is written with ``F.pad`` / ``F.conv2d``:

- :func:`upfirdn2d` is the plugin's reference path (``src/torch_utils/ops/upfirdn2d.py``, ``_upfirdn2d_ref``):
  zero-insertion upsampling, padding, a depthwise FIR convolution with the flipped filter times ``gain``,
  then striding. With the separable ``[1, 3, 3, 1]`` filter normalised to sum 1 it is the same filter.
- :func:`conv2d_resample` follows ``conv2d_resample.py``'s padding arithmetic and fast paths: upsampling
  convolutions run "transposed stride-2 convolution, then FIR (gain 4)" (``conv2d_resample.py:124-142``: the
  convolution on the small input, a quarter of the multiply-adds of convolving the zero-stuffed upsampled
  grid), downsampling ones "FIR then strided convolve", 1x1 downsampling "FIR with down 2 then 1x1".
- :func:`bias_act` is ``bias_act`` with ``linear`` (gain 1) or ``lrelu`` (slope 0.2, gain sqrt 2) and the
  optional clamp.

Equalised learning rate: weights are stored as ``randn / lr_multiplier`` and scaled at run time by
``lr_multiplier / sqrt(fan_in)`` (``layers.py:108-138``, ``EqLRConv1d`` ``layers.py:332-373``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinema.nn.shapes import assert_shape

LRELU_GAIN = math.sqrt(2.0)


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """The separable 2-D FIR filter ``outer(f, f) / sum`` (``upfirdn2d.setup_filter``)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
              padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample (zero insertion), pad ``(x0, x1, y0, y1)``, FIR filter, downsample. ``x``: (N, C, H, W)."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, list(padding))
    weight = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """``upfirdn2d.upsample2d``: 2x upsampling with the FIR filter (gain up^2)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


UpsampleImpl = Literal["transpose", "upfirdn"]


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
                    padding: int = 0, up_impl: UpsampleImpl = "transpose", groups: int = 1) -> torch.Tensor:
    """``conv2d_resample.conv2d_resample`` with ``flip_weight = (up == 1)`` as every caller sets it
    (``networks.py:136``).

    ``up_impl`` picks how an upsampling convolution is computed; both are the same linear map (equal within
    float rounding, ``tests/models/stylegan_v``):

    - ``"transpose"`` (default): the official fast path (``conv2d_resample.py:124-142``): a transposed
      stride-``up`` convolution of the input with the weight as is (``flip_weight`` False turned into the
      transposed call's correlation), then the FIR filter (gain ``up**2``) with the remaining padding. The
      convolution runs on the input grid: ``up**2`` times fewer multiply-adds, forward and backward.
    - ``"upfirdn"``: the generic fallback (``conv2d_resample.py:149-153``): zero-stuffed upsampling and FIR
      first, then a true convolution (weights flipped) on the upsampled grid.
    """
    c_out, c_in_group, kh, kw = w.shape
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    fw = f.shape[-1]
    p0 = p1 = padding
    if up > 1:
        p0 += (fw + up - 1) // 2
        p1 += (fw - up) // 2
        assert down == 1, "StyleGAN-V never up- and downsamples in one layer"
        if up_impl == "transpose":
            p0 -= kw - 1
            p1 -= kw - up
            pt = max(min(-p0, -p1), 0)
            assert kh == kw, "square kernels only"
            # (O, I/g, k, k) -> (I, O/g, k, k) per group (conv2d_resample.py:126-131)
            wt = w.reshape(groups, c_out // groups, c_in_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * c_in_group, c_out // groups, kh, kw)
            x = F.conv_transpose2d(x, wt, stride=up, padding=pt, groups=groups)
            return upfirdn2d(x, f, padding=(p0 + pt, p1 + pt, p0 + pt, p1 + pt), gain=up * up)
        if up_impl != "upfirdn":
            raise ValueError(f"unknown up_impl {up_impl!r} (transpose, upfirdn)")
        x = upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)
        return F.conv2d(x, w.flip([2, 3]), groups=groups)  # flip_weight=False for upsampling layers: a true convolution
    p0 += (fw - down + 1) // 2
    p1 += (fw - down) // 2
    if kh == 1 and kw == 1:
        x = upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w, groups=groups)
    x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
    return F.conv2d(x, w, stride=down, groups=groups)


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, dim: int = 1) -> torch.Tensor:
    """Add ``b`` along ``dim``, activation, multiply by ``gain`` (default: the activation's), clamp."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = LRELU_GAIN if gain is None else gain
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    gain = 1.0 if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp > 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Equalised-lr linear layer (``layers.py:108-138``). ``x``: (N, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        return bias_act(x.matmul(w.t()), b, self.activation)


class EqLRConv1d(nn.Module):
    """Equalised-lr 1-D convolution (``EqLRConv1d``, ``layers.py:332-373``). ``x``: (N, C_in, L)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, padding: int = 0,
                 activation: str = "linear", lr_multiplier: float = 1.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features, kernel_size) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features * kernel_size)
        self.bias_gain = lr_multiplier
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 3, f"EqLRConv1d expects (N, C, L), got {tuple(x.shape)}"
        y = F.conv1d(x, self.weight.to(x.dtype) * self.weight_gain, (self.bias * self.bias_gain).to(x.dtype),
                     padding=self.padding)
        return F.leaky_relu(y, 0.2) if self.activation == "lrelu" else y  # no sqrt(2) gain, as in the official


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution with optional FIR up/downsampling (``layers.py:142-197``). (N, C, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, self.up, self.down, self.padding)
        act_gain = (LRELU_GAIN if self.activation == "lrelu" else 1.0) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp else None
        return bias_act(x, self.bias, self.activation, act_gain, clamp)


DemodImpl = Literal["factored", "per_sample"]


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor,
                       impl: DemodImpl = "factored") -> torch.Tensor:
    """StyleGAN2's demodulation coefficients ``rsqrt(sum_{i,k} (W[o,i,k] s[n,i])^2 + 1e-8)`` (N, O)
    (``networks.py:59-62``). ``weight`` (O, I, kh, kw), ``styles`` (N, I).

    - ``"factored"`` (default): the same sum as ``sum_i s[n,i]^2 sum_k W[o,i,k]^2`` -- one (N, I) x (I, O)
      matmul; nothing of size N x O x I x kh x kw is formed, forward or backward.
    - ``"per_sample"``: the official code as written: the per-sample weights ``W * s`` (N, O, I, kh, kw),
      squared and summed.
    Equal up to float rounding (summation order); ``tests/models/stylegan_v`` checks both.
    """
    if impl == "factored":
        return (styles.square().matmul(weight.square().sum(dim=[2, 3]).t()) + 1e-8).rsqrt()
    if impl != "per_sample":
        raise ValueError(f"unknown demodulation impl {impl!r} (factored, per_sample)")
    w = weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)  # (N, O, I, k, k)
    return (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, f: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, demodulate: bool = True, fused: bool = False,
                     up_impl: UpsampleImpl = "transpose", demod_impl: DemodImpl = "factored") -> torch.Tensor:
    """StyleGAN2 modulated convolution (``networks.py:30-86``). ``x``: (N, C_in, H, W), ``styles`` (N, C_in).

    ``fused=False`` (default; the path the official code takes while training, ``networks.py:232``): scale the
    input channels by ``styles``, convolve with the shared weight, scale the outputs by the demodulation
    coefficients. ``fused=True`` (the official inference path in fp32): per-sample weights
    ``W * s * dcoef`` and one grouped convolution with ``groups = N`` (``networks.py:76-86``). The same map,
    equal up to float rounding (``tests/models/stylegan_v``). kinema's layers use the non-fused form for
    sampling too; ``fused`` is here for that equality check, not timed as a sampling option."""
    n = x.shape[0]
    c_out, c_in = weight.shape[:2]
    assert_shape(styles, [n, c_in], "styles (N, C_in)")
    dcoefs = demod_coefficients(weight, styles, demod_impl) if demodulate else None  # (N, O)
    if fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # (N, O, I, k, k)
        if dcoefs is not None:
            w = w * dcoefs.reshape(n, -1, 1, 1, 1)
        x = x.reshape(1, -1, *x.shape[2:])
        w = w.reshape(-1, c_in, *weight.shape[2:]).to(x.dtype)
        x = conv2d_resample(x, w, f, up=up, padding=padding, up_impl=up_impl, groups=n)
        return x.reshape(n, -1, *x.shape[2:])
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    x = conv2d_resample(x, weight.to(x.dtype), f, up=up, padding=padding, up_impl=up_impl)
    if dcoefs is not None:
        x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + bias + lrelu, no noise input (``use_noise: false``); ``networks.py:90-144``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, up: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.up, self.conv_clamp = up, conv_clamp
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C_in, H, W), ``w`` (N, w_dim) -> (N, C_out, H * up, W * up)."""
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, self.resample_filter, up=self.up, padding=1)
        return bias_act(x, self.bias, "lrelu", LRELU_GAIN, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation (``networks.py:148-163``)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, "linear", 1.0, self.conv_clamp)


class MinibatchStdLayer(nn.Module):
    """Minibatch standard deviation over groups of ``group_size`` (``networks.py:492-514``)."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"minibatch-stddev: batch {n} is not a multiple of the group size {g} "
                             "(model.mbstd_group_size); use a batch divisible by it")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)
