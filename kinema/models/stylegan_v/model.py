"""StyleGAN-V (Skorokhodov, Tulyakov, Elhoseiny, "StyleGAN-V: A Continuous Video Generator with the Price,
Image Quality and Perks of StyleGAN2", CVPR 2022); card: docs/models/stylegan_v.md.

Follows the official code, universome/stylegan-v at commit 3fecd69 (file:line references below):

- Generator: StyleGAN2 ``skip`` synthesis without noise inputs; one ``w`` per video (2-layer mapping) shared
  by all frames; motion enters only at the 4x4 input, concatenated to the learned constant
  (``networks.py:270-366``, ``layers.py:230-251``, ``configs/model/stylegan-v.yaml``).
- Motion: noise codes every ``motion_z_distance`` frames through two unpadded kernel-11 Conv1d layers (lr
  multiplier 0.01), linear interpolation between anchors, and the aligned acyclic time encoder
  (``motion.py:18-222``).
- Discriminator: StyleGAN2 ``resnet`` D on every frame down to ``concat_res``, channels divided by 2 and the
  frames concatenated, then joint; minibatch stddev; projection on the time gaps between the frames
  (``networks.py:405-673``, ``layers.py:255-327``).
- Sparse training: 3 frames per clip at random gaps (``layers.py:387-411``), fractional times for fakes
  (``training_loop.py:341-348``).

Through the ``gan`` objective: one "level" per clip, ``(B, C + 1, F, H, W)`` -- the ``F`` sampled frames and,
as channel ``C``, each frame's time stamp (constant over the frame). :meth:`StyleGANV.discriminate` reads the
time stamps from that channel, detached, so the R1 penalty differentiates the pixels only. Augmentation
(ADA) sits between the R1 leaf and D (:meth:`StyleGANV.augment_levels`, called by the ``gan`` objective), so
R1 differentiates the reals before augmentation, as the official loss does (``loss.py:57-64,144-145``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinema.dist import all_reduce_sum_
from kinema.errors import ConfigError, SamplingError
from kinema.models.base import Capabilities, VideoModel
from kinema.models.stylegan_v.layers import (
    Conv2dLayer,
    EqLRConv1d,
    FullyConnectedLayer,
    MinibatchStdLayer,
    SynthesisLayer,
    ToRGBLayer,
    normalize_2nd_moment,
    setup_filter,
    upsample2d,
)
from kinema.nn.batch import BatchRows
from kinema.nn.noise import draw_noise
from kinema.nn.shapes import assert_shape


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass
class StyleGANVConfig:
    """StyleGAN-V. Defaults are the official 256x256 settings (``configs/model/stylegan-v.yaml``, the
    ``auto`` spec of ``src/train.py:139-178``: fmaps 0.5 -> channel_base 16384, 2 mapping layers)."""

    name: Literal["stylegan_v"] = "stylegan_v"
    frames: int = 16  # frames of a training clip (and of the default sample); the model is continuous in t
    resolution: int = 256
    channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.995  # moving average of w (truncation)
    channel_base: int = 16384  # channels at resolution r: min(channel_base // r, channel_max), G and D
    channel_max: int = 512
    conv_clamp: float = 0.0  # the official 256 runs with fp16 layers and clamp 256; 0 = off (fp32)
    # Motion (configs/model/stylegan-v.yaml:11-45)
    motion_z_dim: int = 512
    motion_u_dim: int = 512  # motion.v_dim: output of the motion conv1d, input of the time encoder
    motion_kernel: int = 11
    motion_z_distance: int = 16  # frames between motion anchors (= time_enc.min_period_len); sky: 256
    time_enc_dim: int = 256  # frequencies; the embedding is 2x this (sin and cos)
    min_period_len: int = 16
    max_period_len: int = 1024
    max_num_frames: int = 1024  # sampling.max_num_frames: Δt embedding table size and default noise span
    # Sparse training (configs/sampling/random.yaml)
    frames_per_clip: int = 3  # frames the discriminator sees per clip
    max_dist: int = 32  # total gap (last - first frame) is a power of two in [frames_per_clip - 1, max_dist]
    # Length (frames) of the videos the fake clips' times are drawn in: offsets in [0, span - gap - 1], gaps
    # clipped to span - 1. 0 = `frames`. With sparse data (data.sparse_frames, long videos) set it to the
    # videos' length, at most max_num_frames (official: min(video length, max_num_frames), training_loop.py:345).
    time_span: int = 0
    fractional_t: bool = True  # fake clips start at a fractional time (motion.use_fractional_t)
    # Discriminator
    concat_res: int = 16  # resolution at which the frames' features are concatenated
    frames_div_factor: int = 2  # the per-frame channels are divided by this before concatenation
    dt_embed_dim: int = 256  # nn.Embedding size of a time gap (TemporalDifferenceEncoder.d)
    cmap_dim: int = 0  # 0: the channels at 4x4 (official default)
    mbstd_group_size: int = 4
    mbstd_channels: int = 1
    # Clip-consistent augmentation (the same transform on every frame of a clip); 0 = off.
    # Ops of ADA's `bgc` pipe kept: xflip, integer translation, brightness, contrast, saturation (RGB only).
    augment_p: float = 0.0  # fixed p, or the starting p when augment_target > 0
    # ADA (StyleGAN2-ADA, as the official run uses it: --aug=ada, target 0.6, src/train.py:244-245,
    # training_loop.py:407-410): every `augment_interval` steps p += sign(mean sign(D(real)) - target) *
    # batch * interval / (augment_kimg * 1000), p >= 0. 0 = p stays fixed.
    augment_target: float = 0.0
    augment_interval: int = 4
    # Thousands of clips for p to move by 1. 100 is what the official runs use: training_loop.py:121 defaults to
    # 500, but src/train.py:315-316 sets ada_kimg = 100 whenever c.resume is not 'noresume'/'latest' -- which
    # includes the configs' `resume: ~` (configs/training/base.yaml:13), i.e. every run from scratch.
    augment_kimg: float = 100.0
    augment_ops: list[str] = field(default_factory=lambda: ["xflip", "xint", "brightness", "contrast", "saturation"])

    def validate(self) -> None:
        if not _is_pow2(self.resolution) or self.resolution < 8:
            raise ConfigError(f"model.resolution must be a power of two >= 8 (StyleGAN2 blocks double from 4x4), "
                              f"got {self.resolution}")
        if not (_is_pow2(self.concat_res) and 8 <= self.concat_res < self.resolution):
            raise ConfigError(f"model.concat_res must be a power of two in [8, resolution), got {self.concat_res}")
        if self.frames_per_clip < 2:
            raise ConfigError(f"model.frames_per_clip must be >= 2 (the D is conditioned on time gaps), got "
                              f"{self.frames_per_clip}")
        if not self.total_gaps():
            raise ConfigError(f"no frame gap fits: model.frames = {self.frames} (model.time_span = {self.time_span}) "
                              f"and model.max_dist = {self.max_dist} leave no power of two in "
                              f"[{self.frames_per_clip - 1}, min(span - 1, max_dist)]; use longer clips or fewer "
                              "frames_per_clip")
        if max(self.total_gaps()) >= self.max_num_frames:
            raise ConfigError(f"model.max_num_frames ({self.max_num_frames}, the Δt embedding table size) must exceed "
                              f"the largest frame gap {max(self.total_gaps())}")
        if self.motion_kernel < 1 or self.motion_z_distance < 1:
            raise ConfigError("model.motion_kernel and model.motion_z_distance must be >= 1")
        if not 0 <= self.augment_p <= 1:
            raise ConfigError(f"model.augment_p must be in [0, 1], got {self.augment_p}")
        if not 0 <= self.augment_target < 1:
            raise ConfigError(f"model.augment_target must be in [0, 1) (0 = fixed p; ADA: 0.6), got {self.augment_target}")
        if self.augment_interval < 1 or self.augment_kimg <= 0:
            raise ConfigError("model.augment_interval must be >= 1 and model.augment_kimg > 0")
        if self.time_span and not 2 <= self.time_span <= self.max_num_frames:
            raise ConfigError(f"model.time_span must be 0 (= frames) or in [2, max_num_frames = {self.max_num_frames}], "
                              f"got {self.time_span}")
        unknown = sorted(set(self.augment_ops) - set(AUGMENT_OPS))
        if unknown:
            raise ConfigError(f"model.augment_ops: unknown {unknown}; known: {', '.join(AUGMENT_OPS)}")
        for key in ("z_dim", "w_dim", "motion_z_dim", "motion_u_dim", "time_enc_dim", "channel_base", "channel_max"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0")

    def total_gaps(self) -> list[int]:
        """Total gaps a fake clip's frames can span: powers of two in ``[F - 1, min(span - 1, max_dist)]``,
        ``span = time_span or frames``. Clips shorter than the largest gap clip the set, as
        ``random_frame_sampling`` does (layers.py:388-394)."""
        hi = min(self.span - 1, self.max_dist)
        return [2**k for k in range(12) if self.frames_per_clip - 1 <= 2**k <= hi]

    @property
    def span(self) -> int:
        """Length in frames of the videos the fake clips' times are drawn in (``time_span or frames``)."""
        return self.time_span or self.frames

    def channels_at(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


AUGMENT_OPS = ("xflip", "xint", "brightness", "contrast", "saturation")


# --------------------------------------------------------------------------- generator


class MappingNetwork(nn.Module):
    """z (or a condition) -> w through ``num_layers`` lrelu FC layers (``layers.py:22-104``).
    With ``c_dim > 0`` and ``z_dim = 0`` it is the discriminator's condition mapping (embed, normalise, FCs)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_layers: int, lr_multiplier: float = 0.01,
                 w_avg_beta: float | None = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_avg_beta = z_dim, c_dim, w_avg_beta
        embed = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed)
        dims = [z_dim + embed] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnectedLayer(dims[i], dims[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            for i in range(num_layers))
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1.0):
        parts = []
        if self.z_dim > 0:
            assert_shape(z, [None, self.z_dim], "z (B, z_dim)")
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            assert_shape(c, [None, self.c_dim], "condition (B, c_dim)")
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1)
        for layer in self.layers:
            x = layer(x)
        if self.w_avg_beta is not None and self.training:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


def linspaced_frequencies(num: int, min_period: float, max_period: float) -> torch.Tensor:
    """``2 pi / 2^linspace(log2 min, log2 max, num)``, reversed: lowest frequency first (motion.py:218-222)."""
    periods = 2.0 ** torch.linspace(math.log2(min_period), math.log2(max_period), num, dtype=torch.float64)
    return (2 * math.pi / periods).flip(0).float().unsqueeze(0)  # (1, num)


class AlignedTimeEncoder(nn.Module):
    """The acyclic positional embedding of ``motion.py:160-214``.

    ``v(t) = e(t) - lerp(e(t_l), e(t_r), a) + lerp(A u_l, A u_r, a)`` with
    ``e(tau) = [sin, cos](omega * s * tau + phi * phase_scale)``, ``s = tanh(P u_l) + 1`` and ``phi = Q u_l``;
    at an anchor (a = 0) ``v = A u_l`` exactly, so ``v`` is continuous across segments.
    """

    def __init__(self, u_dim: int, num_freqs: int, min_period: int, max_period: int):
        super().__init__()
        freqs = linspaced_frequencies(num_freqs, min_period, max_period)
        self.register_buffer("freqs", freqs, persistent=False)
        self.register_buffer("phase_scales", max_period / (2 * math.pi / freqs), persistent=False)
        # bias-free "to prevent motion mode collapse" (motion.py:173-180)
        self.periods_predictor = FullyConnectedLayer(u_dim, num_freqs, bias=False)
        self.phase_predictor = FullyConnectedLayer(u_dim, num_freqs, bias=False)
        self.aligners_predictor = FullyConnectedLayer(u_dim, 2 * num_freqs, bias=False)

    @property
    def dim(self) -> int:
        return 2 * self.freqs.shape[1]

    def forward(self, t, u_left, u_right, alpha, t_left, t_right) -> torch.Tensor:
        """``t, t_left, t_right, alpha`` (N,), ``u_left, u_right`` (N, u_dim) -> ``v`` (N, 2 num_freqs)."""
        periods = self.periods_predictor(u_left).tanh() + 1
        phases = self.phase_predictor(u_left) * self.phase_scales

        def embed(tau: torch.Tensor) -> torch.Tensor:
            raw = self.freqs * periods * tau.float().unsqueeze(1) + phases
            return torch.cat([raw.sin(), raw.cos()], dim=1)

        a = alpha.unsqueeze(1)
        remove = embed(t_left) * (1 - a) + embed(t_right) * a
        add = self.aligners_predictor(u_left) * (1 - a) + self.aligners_predictor(u_right) * a
        return embed(t) - remove + add


class MotionMappingNetwork(nn.Module):
    """Motion noise ``(B, L, z)`` -> anchor codes ``u`` every ``motion_z_distance`` frames (two unpadded
    Conv1d, kernel k, lr multiplier 0.01: ``2 (k - 1)`` extra noise codes are consumed) -> ``v(t)`` for any real
    ``t >= 0`` (``motion.py:18-156``)."""

    def __init__(self, cfg: StyleGANVConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.motion_kernel
        self.conv = nn.Sequential(
            EqLRConv1d(cfg.motion_z_dim, cfg.motion_z_dim, k, activation="lrelu", lr_multiplier=0.01),
            EqLRConv1d(cfg.motion_z_dim, cfg.motion_u_dim, k, activation="lrelu", lr_multiplier=0.01),
        )
        self.num_additional_codes = 2 * (k - 1)
        self.time_encoder = AlignedTimeEncoder(cfg.motion_u_dim, cfg.time_enc_dim, cfg.min_period_len,
                                               cfg.max_period_len)

    def num_codes(self, t_max: float = 0.0) -> int:
        """Noise codes needed for times up to ``t_max`` (``get_max_traj_len`` + the conv's extra codes)."""
        span = max(self.cfg.max_num_frames - 1, float(t_max))
        return math.ceil(span / self.cfg.motion_z_distance) + 2 + self.num_additional_codes

    def anchors(self, motion_z: torch.Tensor) -> torch.Tensor:
        """``(B, L, z)`` noise -> ``(B, L - 2(k-1), u)`` anchor codes."""
        return self.conv(motion_z.float().transpose(1, 2)).transpose(1, 2)

    def forward(self, motion_z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``motion_z`` (B, L, motion_z_dim), ``t`` (B, T) in frames, ``t >= 0`` -> ``v`` (B * T, 2 time_enc_dim)."""
        b, n = t.shape
        assert_shape(motion_z, [b, None, self.cfg.motion_z_dim], "motion noise (B, L, motion_z_dim)")
        if bool((t < 0).any()):
            raise SamplingError(f"StyleGAN-V's motion codes are defined for t >= 0 (frame units); got t = "
                                f"{float(t.min()):g}. Shift the time window (--t-start >= 0)")
        need = self.num_codes(float(t.max()))
        if motion_z.shape[1] < need:
            raise SamplingError(f"times up to t = {float(t.max()):g} need {need} motion noise codes, the noise has "
                                f"{motion_z.shape[1]}: draw it with model.sample_noise(n, t_max=...) (kinema sample "
                                "does this for you)")
        trajs = self.anchors(motion_z[:, :need])
        d = self.cfg.motion_z_distance
        t = t.float()
        left = (t / d).floor().long()
        u_left = torch.gather(trajs, 1, left.unsqueeze(-1).expand(-1, -1, trajs.shape[2]))
        u_right = torch.gather(trajs, 1, (left + 1).unsqueeze(-1).expand(-1, -1, trajs.shape[2]))
        t_left = t - t % d
        alpha = (t % d) / d
        flat = lambda x: x.reshape(b * n, *x.shape[2:])  # noqa: E731
        return self.time_encoder(flat(t), flat(u_left), flat(u_right), flat(alpha), flat(t_left), flat(t_left + d))

    def motion_u(self, motion_z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The interpolated codes ``u(t) = lerp(u_left, u_right, alpha)`` (B, T, u_dim) (motion.py:104-115)."""
        trajs = self.anchors(motion_z[:, : self.num_codes(float(t.max()))])
        d = self.cfg.motion_z_distance
        left = (t.float() / d).floor().long()
        idx = lambda i: i.unsqueeze(-1).expand(-1, -1, trajs.shape[2])  # noqa: E731
        alpha = ((t.float() % d) / d).unsqueeze(-1)
        return torch.gather(trajs, 1, idx(left)) * (1 - alpha) + torch.gather(trajs, 1, idx(left + 1)) * alpha


class SynthesisBlock(nn.Module):
    """One ``skip`` block (``networks.py:167-266``): [upsampling conv0], conv1, toRGB; img upsampled by FIR.
    The 4x4 block's input is the learned constant concatenated with the motion code ``v``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, motion_dim: int, img_channels: int,
                 conv_clamp: float | None):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(1, out_channels, 4, 4))  # TemporalInput.const
            conv1_in = out_channels + motion_dim
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, up=2, conv_clamp=conv_clamp)
            conv1_in = out_channels
        self.conv1 = SynthesisLayer(conv1_in, out_channels, w_dim, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(self, x, img, w, motion_v=None):
        """``w`` (N, w_dim) per frame; ``x`` (N, C, r/2, r/2) or None; ``motion_v`` (N, D) at 4x4."""
        if self.in_channels == 0:
            n = w.shape[0]
            x = torch.cat([self.const.expand(n, -1, -1, -1),
                           motion_v.to(self.const.dtype)[:, :, None, None].expand(-1, -1, 4, 4)], dim=1)
        else:
            x = self.conv0(x, w)
        x = self.conv1(x, w)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, w).float()
        return x, (img + y if img is not None else y)


class StyleGANVGenerator(nn.Module):
    """Mapping (z -> w, one per video), motion network (noise -> v(t)), synthesis (w, v(t) -> frame)."""

    def __init__(self, cfg: StyleGANVConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.z_dim, 0, cfg.w_dim, cfg.mapping_layers, cfg.mapping_lr_multiplier,
                                      cfg.w_avg_beta)
        self.motion = MotionMappingNetwork(cfg)
        motion_dim = self.motion.time_encoder.dim
        clamp = cfg.conv_clamp or None
        self.resolutions = [2**i for i in range(2, int(math.log2(cfg.resolution)) + 1)]
        self.blocks = nn.ModuleDict()
        for res in self.resolutions:
            c_in = cfg.channels_at(res // 2) if res > 4 else 0
            self.blocks[f"b{res}"] = SynthesisBlock(c_in, cfg.channels_at(res), cfg.w_dim, motion_dim, cfg.channels,
                                                    clamp)

    def forward(self, z: torch.Tensor, motion_z: torch.Tensor, t: torch.Tensor,
                truncation_psi: float = 1.0) -> torch.Tensor:
        """``z`` (B, z_dim), ``motion_z`` (B, L, motion_z_dim), ``t`` (B, T) -> frames (B, C, T, H, W)."""
        cfg = self.cfg
        b, n = t.shape
        assert_shape(z, [b, cfg.z_dim], "z (B, z_dim)")
        w = self.mapping(z, truncation_psi=truncation_psi)  # (B, w_dim): one w per video
        v = self.motion(motion_z, t)  # (B*T, 2 time_enc_dim)
        w = w.repeat_interleave(n, dim=0)  # ws.repeat_interleave(num_frames) (networks.py:348)
        x = img = None
        for res in self.resolutions:
            x, img = self.blocks[f"b{res}"](x, img, w, v if res == 4 else None)
        img = img.reshape(b, n, cfg.channels, cfg.resolution, cfg.resolution).transpose(1, 2)
        return img  # (B, C, T, H, W)


# --------------------------------------------------------------------------- discriminator


def log_spaced_time_freqs(max_num_frames: int) -> torch.Tensor:
    """``FixedTimeEncoder`` frequencies ``pi 2^k / R``, ``R = 2^ceil(log2 max_num_frames)``, k < log2 R
    (``layers.py:439-446``)."""
    resolution = 2 ** math.ceil(math.log2(max_num_frames))
    k = torch.arange(int(math.log2(resolution)), dtype=torch.float32)
    return (2.0**k * math.pi / resolution).unsqueeze(0)


class TemporalDifferenceEncoder(nn.Module):
    """Embeds the consecutive time gaps of a clip: ``Embedding[round dt] ++ [sin, cos](freqs dt)`` per gap
    (``layers.py:255-327``)."""

    def __init__(self, cfg: StyleGANVConfig):
        super().__init__()
        self.frames = cfg.frames_per_clip
        self.const_embed = nn.Embedding(cfg.max_num_frames, cfg.dt_embed_dim)
        self.register_buffer("fourier_coefs", log_spaced_time_freqs(cfg.max_num_frames), persistent=False)

    @property
    def dim(self) -> int:
        return (self.const_embed.embedding_dim + 2 * self.fourier_coefs.shape[1]) * (self.frames - 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (B, F) -> (B, (F - 1) (d + 2 n_freqs))."""
        assert_shape(t, [None, self.frames], "clip times (B, F)")
        diffs = (t[:, 1:] - t[:, :-1]).reshape(-1).float()
        raw = self.fourier_coefs * diffs.unsqueeze(1)
        out = torch.cat([self.const_embed(diffs.round().long()), raw.sin(), raw.cos()], dim=1)
        return out.reshape(t.shape[0], -1)


class DiscriminatorBlock(nn.Module):
    """``resnet`` block (``networks.py:405-488``): [fromRGB], conv0, conv1 (down 2), 1x1 skip (down 2)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 conv_clamp: float | None):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        c0 = in_channels if in_channels > 0 else tmp_channels
        self.conv0 = Conv2dLayer(c0, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(c0, out_channels, 1, bias=False, down=2)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class StyleGANVDiscriminator(nn.Module):
    """Per-frame StyleGAN2 trunk down to ``concat_res``, frames' features concatenated along channels,
    joint blocks to 4x4, epilogue (mbstd, conv, fc, out) with projection on the mapped time-gap condition."""

    def __init__(self, cfg: StyleGANVConfig):
        super().__init__()
        self.cfg = cfg
        clamp = cfg.conv_clamp or None
        self.resolutions = [2**i for i in range(int(math.log2(cfg.resolution)), 2, -1)]
        self.blocks = nn.ModuleDict()
        for res in self.resolutions:
            c_in = cfg.channels_at(res) if res < cfg.resolution else 0
            c_out = cfg.channels_at(res // 2)
            if res // 2 == cfg.concat_res:
                c_out //= cfg.frames_div_factor
            if res == cfg.concat_res:
                c_in = (c_in // cfg.frames_div_factor) * cfg.frames_per_clip
            self.blocks[f"b{res}"] = DiscriminatorBlock(c_in, cfg.channels_at(res), c_out, cfg.channels, clamp)
        c4 = cfg.channels_at(4)
        cmap = cfg.cmap_dim or c4
        self.time_encoder = TemporalDifferenceEncoder(cfg)
        self.mapping = MappingNetwork(0, self.time_encoder.dim, cmap, num_layers=2, lr_multiplier=0.01)
        self.mbstd = MinibatchStdLayer(cfg.mbstd_group_size, cfg.mbstd_channels)
        self.conv = Conv2dLayer(c4 + cfg.mbstd_channels, c4, 3, activation="lrelu", conv_clamp=clamp)
        self.fc = FullyConnectedLayer(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnectedLayer(c4, cmap)
        self.cmap_dim = cmap

    def forward(self, frames: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``frames`` (B, C, F, H, W), ``t`` (B, F) -> logits (B,)."""
        cfg = self.cfg
        b = frames.shape[0]
        assert_shape(frames, [b, cfg.channels, cfg.frames_per_clip, cfg.resolution, cfg.resolution],
                     "discriminator input (B, C, F, H, W)")
        assert_shape(t, [b, cfg.frames_per_clip], "clip times (B, F)")
        img = frames.transpose(1, 2).reshape(b * cfg.frames_per_clip, cfg.channels, cfg.resolution, cfg.resolution)
        x = None
        for res in self.resolutions:
            if res == cfg.concat_res:  # [B*F, c, h, w] -> [B, F*c, h, w] (networks.py:659-662)
                x = x.reshape(b, -1, *x.shape[2:])
            x = self.blocks[f"b{res}"](x, img)
        cmap = self.mapping(None, self.time_encoder(t))
        x = self.conv(self.mbstd(x.float()))
        x = self.out(self.fc(x.flatten(1)))
        return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)


# --------------------------------------------------------------------------- the model


class StyleGANV(VideoModel):
    """StyleGAN-V behind the model contract. The noise of one video is ``z`` followed by its motion noise,
    flattened: ``(n, z_dim + L * motion_z_dim)`` (see :meth:`split_noise`). Motion codes are drawn
    anchor-major, so noise drawn for a longer span starts with the codes of a shorter one: a longer video
    repeats the frames of a shorter one at the shared times."""

    default_objective = "gan"
    augments_reals = True  # GANModel: augment_levels between the R1 leaf and D (ADA; real_levels(augmented=False))

    def __init__(self, config: StyleGANVConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.generator = StyleGANVGenerator(config)
        self.discriminator = StyleGANVDiscriminator(config)
        if config.augment_target > 0:
            # ADA's probability and its running (sum of signs of D(real), count) since the last update: saved
            # with the model, so a resume continues them (only with ADA on: other checkpoints keep their keys)
            self.register_buffer("ada_p", torch.tensor(float(config.augment_p)))
            self.register_buffer("ada_stats", torch.zeros(2))

    @property
    def augment_p_now(self) -> float:
        """The augmentation probability in use: ``model.augment_p``, or ADA's current p."""
        return float(self.ada_p) if self.config.augment_target > 0 else self.config.augment_p

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(continuous_time=True, conditions=frozenset({"times"}), sparse_frames=True)

    # ----- noise
    def num_motion_codes(self, t_max: float = 0.0) -> int:
        return self.generator.motion.num_codes(t_max)

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None,
                     t_max: float | None = None) -> torch.Tensor:
        """``(n, z_dim + L * motion_z_dim)``: ``z ~ N(0, I)`` then motion noise for times up to
        ``max(t_max, max_num_frames - 1)``, drawn code-major (``(L, n, D)``) so longer spans extend it."""
        cfg = self.config
        device = device if device is not None else self.device
        length = self.num_motion_codes(0.0 if t_max is None else t_max)
        z = draw_noise("normal", (n, cfg.z_dim), generator, device)
        motion = draw_noise("normal", (length, n, cfg.motion_z_dim), generator, device).transpose(0, 1)
        return torch.cat([z, motion.reshape(n, -1)], dim=1)

    def split_noise(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``noise`` -> content ``z`` (B, z_dim) and motion noise (B, L, motion_z_dim)."""
        cfg = self.config
        if noise.ndim != 2 or (noise.shape[1] - cfg.z_dim) % cfg.motion_z_dim or noise.shape[1] <= cfg.z_dim:
            raise ValueError(f"StyleGAN-V noise must be (B, z_dim + L * motion_z_dim) = (B, {cfg.z_dim} + L * "
                             f"{cfg.motion_z_dim}), got {tuple(noise.shape)}")
        return noise[:, : cfg.z_dim], noise[:, cfg.z_dim :].reshape(noise.shape[0], -1, cfg.motion_z_dim)

    def join_noise(self, z: torch.Tensor, motion_z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`split_noise` (content of one video with the motion of another)."""
        return torch.cat([z, motion_z.reshape(motion_z.shape[0], -1)], dim=1)

    # ----- sampling
    def synthesize(self, noise: torch.Tensor, times: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """Frames at ``times`` ((T,) shared or (B, T), frame units, >= 0): (B, C, T, H, W), not clamped."""
        z, motion_z = self.split_noise(noise)
        times = times.to(noise.device, torch.float32)
        if times.ndim == 1:
            times = times.expand(noise.shape[0], -1)
        return self.generator(z, motion_z, times, truncation_psi)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, times: torch.Tensor | None = None, truncation_psi: float = 1.0,
               chunk: int = 64) -> torch.Tensor:
        """Videos (B, C, T, H, W) in [-1, 1] at ``times`` (default the trained grid 0..frames-1), rendered
        ``chunk`` frames at a time (frames are independent given w and v(t))."""
        was = self.training
        self.eval()
        try:
            times = torch.arange(self.config.frames, dtype=torch.float32) if times is None else torch.as_tensor(times)
            if times.ndim != 1:
                raise SamplingError(f"times must be a 1-D tensor of time points, got shape {tuple(times.shape)}")
            parts = [self.synthesize(noise, times[i : i + chunk], truncation_psi) for i in range(0, len(times), chunk)]
            return torch.cat(parts, dim=2).clamp(-1, 1)
        finally:
            self.train(was)

    # ----- sparse training (the GAN objective's interface)
    def draw_clip_times(self, rows: BatchRows, generator: torch.Generator | None, fractional: bool,
                        device=None) -> torch.Tensor:
        """``random_frame_sampling`` (layers.py:387-411) for every row of the global batch, sliced by ``rows``:
        a total gap from :meth:`StyleGANVConfig.total_gaps`, a (fractional) offset in ``[0, T - gap - 1]``, the
        inner frames distinct integers inside the gap, sorted. Returns (b, F) times in frames."""
        cfg = self.config
        n, f = rows.total, cfg.frames_per_clip
        gaps = torch.tensor(cfg.total_gaps(), dtype=torch.float32)
        gen_device = generator.device if generator is not None else "cpu"
        gap = gaps[torch.randint(len(gaps), (n,), generator=generator, device=gen_device).cpu()]
        u = torch.rand(n, generator=generator, device=gen_device).cpu()
        span = cfg.span - gap - 1
        offset = u * span if fractional else torch.floor(u * (span + 1)).clamp(max=span)
        times = [offset, offset + gap]
        if f > 2:
            keys = torch.rand(n, max(int(gaps.max()) - 1, 1), generator=generator, device=gen_device).cpu()
            inner = torch.arange(1, keys.shape[1] + 1, dtype=torch.float32)
            keys = keys.masked_fill(inner.unsqueeze(0) >= gap.unsqueeze(1), 2.0)  # only 1..gap-1
            picks = keys.argsort(dim=1)[:, : f - 2].float() + 1
            times.extend((offset.unsqueeze(1) + picks).unbind(1))
        times = torch.stack(times, dim=1).sort(dim=1).values
        return times[rows.start : rows.stop].to(device)

    def augment(self, clips: torch.Tensor, rows: BatchRows, generator: torch.Generator | None) -> torch.Tensor:
        """Clip-consistent augmentation of ``clips`` (b, C, F, H, W): each op applies to a clip with the current
        probability ``augment_p_now`` (``augment_p``, adapted by ADA when ``augment_target > 0``) and with the
        same parameters on all its frames; colour ops never mix frames, and saturation is skipped for non-RGB
        clips. Draws are made for the whole global batch."""
        cfg = self.config
        p = self.augment_p_now
        if p <= 0:
            return clips
        n, (b, c, f, h, w) = rows.total, clips.shape
        gen_device = generator.device if generator is not None else "cpu"
        dev = clips.device

        def draw(kind: str, shape=(n,)) -> torch.Tensor:
            x = (torch.rand if kind == "u" else torch.randn)(shape, generator=generator, device=gen_device)
            return x.cpu()[rows.start : rows.stop].to(dev)

        def on(values: torch.Tensor, identity: float) -> torch.Tensor:
            mask = draw("u") < p
            return torch.where(mask, values, torch.full_like(values, identity))

        ops = set(cfg.augment_ops)
        if "xflip" in ops:
            flip = on(torch.floor(draw("u") * 2), 0.0).bool()
            clips = torch.where(flip[:, None, None, None, None], clips.flip(-1), clips)
        if "xint" in ops:  # integer translation up to 1/8 of the size, reflect padding (ADA xint, xint_max 0.125)
            tx = on(torch.round((draw("u") * 2 - 1) * 0.125 * w), 0.0).long()
            ty = on(torch.round((draw("u") * 2 - 1) * 0.125 * h), 0.0).long()

            def reflect(i: torch.Tensor, size: int) -> torch.Tensor:
                period = 2 * size - 2
                i = i % period
                return torch.where(i >= size, period - i, i)

            iy = reflect(torch.arange(h, device=dev).unsqueeze(0) - ty.unsqueeze(1), h)  # (b, H)
            ix = reflect(torch.arange(w, device=dev).unsqueeze(0) - tx.unsqueeze(1), w)  # (b, W)
            clips = torch.gather(clips, 3, iy[:, None, None, :, None].expand(b, c, f, h, w))
            clips = torch.gather(clips, 4, ix[:, None, None, None, :].expand(b, c, f, h, w))
        if "brightness" in ops:
            clips = clips + on(draw("n") * 0.2, 0.0)[:, None, None, None, None]
        if "contrast" in ops:
            clips = clips * on(torch.exp2(draw("n") * 0.5), 1.0)[:, None, None, None, None]
        if "saturation" in ops and c == 3:
            s = on(torch.exp2(draw("n") * 1.0), 1.0)[:, None, None, None, None]
            luma = clips.mean(dim=1, keepdim=True)  # projection on the (1,1,1)/sqrt(3) axis
            clips = luma + (clips - luma) * s
        return clips

    def _with_times(self, frames: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = frames.shape
        plane = times.to(frames.device, torch.float32)[:, None, :, None, None].expand(b, 1, f, h, w)
        return torch.cat([frames.float(), plane], dim=1)

    def generate_levels(self, z: torch.Tensor, generator: torch.Generator | None = None,
                        rows: BatchRows | None = None) -> list[torch.Tensor]:
        """Fake clips: ``[(b, C + 1, F, H, W)]`` -- F frames at fractional random times, channel C = the times."""
        rows = BatchRows.whole(z.shape[0]) if rows is None else rows
        times = self.draw_clip_times(rows, generator, self.config.fractional_t, z.device)
        frames = self.synthesize(z, times)
        return [self._with_times(self.augment(frames, rows, generator), times)]

    def real_levels(self, video: torch.Tensor, generator: torch.Generator | None = None,
                    rows: BatchRows | None = None, times: torch.Tensor | None = None,
                    augmented: bool = True) -> list[torch.Tensor]:
        """Real clips -> ``[(b, C + 1, F, H, W)]``. Dense clips (b, C, T, H, W), ``times`` None: F frames at
        integer random gaps drawn here. Sparse clips (b, C, F, H, W) with their ``times`` (b, F) (a dataset
        built with ``data.sparse_frames``, :mod:`kinema.data.sparse_frames`): used as they are.
        ``augmented=False`` returns them before augmentation: the ``gan`` objective then makes them the R1
        leaf and augments them with :meth:`augment_levels` (the same draws: augmentation is drawn after the
        times either way)."""
        cfg = self.config
        rows = BatchRows.whole(video.shape[0]) if rows is None else rows
        levels = self._real_clips(video, generator, rows, times)
        return self.augment_levels(levels, generator, rows) if augmented else levels

    def augment_levels(self, levels: list[torch.Tensor], generator: torch.Generator | None = None,
                       rows: BatchRows | None = None) -> list[torch.Tensor]:
        """:meth:`augment` the frames of ``[(b, C + 1, F, H, W)]`` clips, the time channel kept as it is.
        Differentiable in the frames: the ``gan`` objective calls it between the R1 leaf and D, so the
        penalty differentiates the reals before augmentation, as the official loss does (augmentation inside
        ``run_D``, ``loss.py:57-64``; R1 w.r.t. ``real_img_tmp``, ``loss.py:144-145,161``)."""
        c = self.config.channels
        (x,) = levels
        rows = BatchRows.whole(x.shape[0]) if rows is None else rows
        return [torch.cat([self.augment(x[:, :c], rows, generator), x[:, c:]], dim=1)]

    def _real_clips(self, video: torch.Tensor, generator: torch.Generator | None, rows: BatchRows,
                    times: torch.Tensor | None) -> list[torch.Tensor]:
        """:meth:`real_levels` before augmentation."""
        cfg = self.config
        if times is not None:
            f = cfg.frames_per_clip
            assert_shape(video, [None, cfg.channels, f, cfg.resolution, cfg.resolution],
                         f"sparse real clips (B, {cfg.channels}, frames_per_clip = {f}, {cfg.resolution}, "
                         f"{cfg.resolution}): set data.sparse_frames = model.frames_per_clip")
            assert_shape(times, [video.shape[0], f], "times of the sparse real clips (B, frames_per_clip)")
            times = times.to(video.device, torch.float32)
            gaps = times[:, -1] - times[:, 0]
            if bool((times[:, 1:] <= times[:, :-1]).any()) or float(gaps.max()) >= cfg.max_num_frames:
                raise ConfigError(f"sparse real clips need increasing frame times with a total gap < model.max_num_frames "
                                  f"({cfg.max_num_frames}, the Δt embedding size); got gaps up to {float(gaps.max()):g}: "
                                  "lower data.sparse_max_gap")
            return [self._with_times(video.float(), times)]
        if cfg.time_span > cfg.frames:
            raise ConfigError(f"model.time_span ({cfg.time_span}) > model.frames ({cfg.frames}) draws fake clips over "
                              f"longer spans than the {cfg.frames}-frame real clips hold: use sparse data "
                              "(data.sparse_frames = 3, data.sparse_max_gap = model.max_dist) or time_span = 0")
        assert_shape(video, [None, cfg.channels, cfg.frames, cfg.resolution, cfg.resolution],
                     f"real video (B, {cfg.channels}, {cfg.frames}, {cfg.resolution}, {cfg.resolution})")
        times = self.draw_clip_times(rows, generator, False, video.device)
        idx = times.long()[:, None, :, None, None].expand(-1, cfg.channels, -1, cfg.resolution, cfg.resolution)
        frames = torch.gather(video, 2, idx)
        return [self._with_times(frames, times)]

    @torch.no_grad()
    def observe_real_scores(self, scores: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """ADA's update of the augmentation probability (``training_loop.py:407-410``), called by the ``gan``
        objective once per step with that step's real scores (all micro-batches, this process). Signs are
        summed over every process; after the steps with ``step % augment_interval == 0``,
        ``p += sign(mean sign - augment_target) * batch * interval / (augment_kimg * 1000)``, ``p >= 0``.
        Returns ``{"augment_p": p}`` for the log (nothing when augmentation is off)."""
        cfg = self.config
        if cfg.augment_target <= 0:
            return {"augment_p": torch.tensor(cfg.augment_p)} if cfg.augment_p > 0 else {}
        stats = torch.stack([scores.detach().float().sign().sum(), torch.tensor(float(scores.numel()),
                                                                                  device=scores.device)])
        all_reduce_sum_(stats)  # signs of every process's real scores (kinema.dist: identity with one process)
        self.ada_stats += stats.to(self.ada_stats.device)
        if step % cfg.augment_interval == 0:
            batch = float(stats[1])
            sign = torch.sign(self.ada_stats[0] / self.ada_stats[1] - cfg.augment_target)
            p = self.ada_p + sign * batch * cfg.augment_interval / (cfg.augment_kimg * 1000)
            self.ada_p.copy_(p.clamp(min=0))
            self.ada_stats.zero_()
        return {"augment_p": self.ada_p.detach().clone()}

    def discriminate(self, videos: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[(b, C + 1, F, H, W)]`` -> ``[(b,)]`` logits; the time channel is read detached."""
        (x,) = videos
        c = self.config.channels
        times = x[:, c, :, 0, 0].detach()
        return [self.discriminator(x[:, :c], times)]
