"""Video Diffusion Models (Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet; NeurIPS 2022, arXiv 2204.03458).

The denoiser is the paper's factorised space-time 3-D U-Net (Section 3, Figure 1): a 2-D diffusion
U-Net (Ho et al. 2020 / ADM layout) whose every 3x3 convolution becomes a space-only 1x3x3
convolution, whose down/up-sampling is spatial only, and which, after each spatial self-attention
block (attention within each frame), has a temporal self-attention block (attention across frames
at each pixel) with a learned relative-position bias. Frames are otherwise processed independently,
so a frame can be made an independent *image* by masking temporal attention (joint image-video
training, Section 3). GroupNorm normalises each frame on its own (frames folded into the batch) so
that such images really are independent of the other frames -- see docs/models/vdm.md.

Schedule, parameterisations and samplers live in :mod:`kinema.diffusion`; training lives in
:mod:`kinema.objectives.diffusion`. This file knows nothing of the trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kinema import diffusion
from kinema.errors import ConfigError
from kinema.models.base import Capabilities, VideoModel
from kinema.nn.noise import draw_noise
from kinema.nn import assert_shape


@dataclass
class VDMConfig:
    """VDM hyper-parameters. Defaults: the paper's UCF-101 16x64x64 model as far as stated (docs/models/vdm.md)."""

    # Training settings that earlier configs kept here (see kinema.config.migrate).
    MOVED_KEYS: ClassVar[dict[str, str]] = {"cond_drop_prob": "objective.cond_drop_prob"}

    name: Literal["vdm"] = "vdm"
    channels: int = 3  # video channels
    frames: int = 16
    resolution: int = 64
    base_channels: int = 256
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # one entry per resolution level
    num_res_blocks: int = 2  # ResNet blocks per level (the up path has one more, for the down-sampler's skip)
    attention_resolutions: list[int] = field(default_factory=lambda: [8, 16, 32])  # spatial + temporal attention
    head_channels: int = 64  # channels per attention head (heads = width // head_channels, at least 1)
    max_frames: int = 64  # temporal attention's relative-position bias covers distances < max_frames
    embed_channels: int = 1024  # noise-level (and class) embedding width
    dropout: float = 0.1
    norm_groups: int = 32  # GroupNorm groups (gcd with the width)
    # GroupNorm statistics: "frame" over (C/G, H, W) of each frame (frames folded into the batch, so joint-training
    # image frames stay independent); "video" over (C/G, T, H, W) of the video's frames together -- the layout of
    # video-diffusion-pytorch (GroupNorm on the 5-D tensor) -- and per frame for the image frames. The paper does
    # not say; docs/models/vdm.md, "Deviations".
    norm_statistics: Literal["frame", "video"] = "frame"
    num_classes: int = 0  # > 0: class-conditional with a learned null label (classifier-free guidance)
    guidance_scale: float = 0.0  # sampling: classifier-free guidance weight w, (1 + w) f(z, c) - w f(z)
    # Diffusion process (kinema.diffusion): continuous-time cosine schedule with clipped log-SNR.
    parameterization: Literal["eps", "v"] = "eps"
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    # Default sampler for model.sample (sample grids, `kinema sample`, `kinema evaluate`).
    sampler: Literal["ancestral", "ddim"] = "ancestral"
    sampling_steps: int = 256
    ddim_eta: float = 0.0
    variance_gamma: float = 0.1  # ancestral: log-variance interpolation (paper eq. 5)
    clip_denoised: bool = True  # clip x_hat to [-1, 1] while sampling
    # Inside the U-Net, keep activations with the frames folded into the batch, (B*T, C, H, W): the per-frame
    # GroupNorm then needs no transpose copies and the 1x3x3 / 1x1x1 Conv3d weights run as 2-D convolutions
    # (the same weights, squeezed at the call). The same maths in another layout (a float64 test); only the
    # convolution kernels' float32 rounding differs. False: (B, C, T, H, W) throughout, per-frame copies for
    # GroupNorm and spatial attention.
    fold_frames: bool = True

    @property
    def norm_over_video(self) -> bool:
        return self.norm_statistics == "video"

    @property
    def level_resolutions(self) -> list[int]:
        return [self.resolution // 2**i for i in range(len(self.channel_mult))]

    def validate(self) -> None:
        for key in ("channels", "frames", "resolution", "base_channels", "num_res_blocks", "head_channels",
                    "max_frames", "embed_channels", "norm_groups", "sampling_steps"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0, got {getattr(self, key)}")
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            raise ConfigError(f"model.channel_mult must be a non-empty list of positive integers, got {self.channel_mult}")
        levels = len(self.channel_mult)
        if self.resolution % 2 ** (levels - 1):
            raise ConfigError(
                f"model.resolution = {self.resolution} cannot be halved {levels - 1} times for {levels} levels "
                f"(channel_mult {self.channel_mult}); use a multiple of {2 ** (levels - 1)} or fewer levels"
            )
        unknown = sorted(set(self.attention_resolutions) - set(self.level_resolutions))
        if unknown:
            raise ConfigError(f"model.attention_resolutions {unknown} are not level resolutions "
                              f"{self.level_resolutions}; pick from those")
        if self.frames > self.max_frames:
            raise ConfigError(f"model.frames = {self.frames} exceeds model.max_frames = {self.max_frames}, the "
                              "span of temporal attention's relative-position bias; raise model.max_frames")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes < 0 or self.guidance_scale < 0:
            raise ConfigError("model.num_classes and model.guidance_scale must be >= 0")
        if not self.logsnr_min < self.logsnr_max:
            raise ConfigError(f"model.logsnr_min ({self.logsnr_min}) must be below model.logsnr_max ({self.logsnr_max})")
        try:
            diffusion.check_sampler(self.sampler, self.sampling_steps, self.ddim_eta, self.variance_gamma)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None


# --------------------------------------------------------------------------- layers


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """``(B,)`` -> ``(B, dim)``: ``[cos(x f_k), sin(x f_k)]`` with ``f_k = max_period^(-k / (dim / 2))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def spatial_conv(c_in: int, c_out: int) -> nn.Conv3d:
    """A 2-D 3x3 convolution applied to every frame: a 1x3x3 3-D convolution."""
    return nn.Conv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1))


def conv(layer: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A space-only Conv3d (kernel 1 x k x k) on ``(B, C, T, H, W)``, or as the same 2-D convolution on
    frames-in-batch ``(B*T, C, H, W)`` (its weight ``(O, I, 1, k, k)`` squeezed to ``(O, I, k, k)``)."""
    if x.dim() == 5:
        return layer(x)
    return F.conv2d(x, layer.weight.squeeze(2), layer.bias, layer.stride[1:], layer.padding[1:])


def add_per_video(h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``h + e`` for ``e (B, C)`` broadcast over frames and pixels of ``h`` (5-D, or frames-in-batch 4-D)."""
    if h.dim() == 5:
        return h + e[:, :, None, None, None]
    b = e.shape[0]
    return (h.view(b, h.shape[0] // b, *h.shape[1:]) + e[:, None, :, None, None]).view(h.shape)


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm of ``(B, C, T, H, W)``, or of frames-in-batch ``(B*T, C, H, W)`` (``VDMConfig.fold_frames``).

    ``over_video`` False: statistics over ``(C / G, H, W)`` of each frame (none across frames). True: over
    ``(C / G, T_v, H, W)`` of the first ``video_frames`` frames together, and per frame for the rest (joint
    training's image frames); the call then passes ``frames`` (T) and ``video_frames`` (T_v)."""

    def __init__(self, groups: int, channels: int, over_video: bool = False) -> None:
        super().__init__(groups, channels)
        self.over_video = over_video

    def forward(self, x: torch.Tensor, frames: int | None = None, video_frames: int | None = None) -> torch.Tensor:
        folded = x.dim() == 4
        if self.over_video:
            if folded and frames is None:
                raise ValueError("a video GroupNorm of frames-in-batch input needs the frame count")
            t = frames if folded else x.shape[2]
            tv = t if video_frames is None else video_frames
            v = rearrange(x, "(b t) c h w -> b c t h w", t=t) if folded else x
            parts = [F.group_norm(v[:, :, :tv], self.num_groups, self.weight, self.bias, self.eps)]
            if tv < t:  # image frames: each on its own
                parts.append(self._per_frame(v[:, :, tv:]))
            y = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
            return rearrange(y, "b c t h w -> (b t) c h w") if folded else y
        return super().forward(x) if folded else self._per_frame(x)

    def _per_frame(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


def norm(channels: int, groups: int, over_video: bool = False) -> FrameGroupNorm:
    return FrameGroupNorm(math.gcd(groups, channels), channels, over_video)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv1x3x3 -> + Linear(embedding) -> GN -> SiLU -> dropout -> conv1x3x3, plus skip."""

    def __init__(self, c_in: int, c_out: int, emb: int, dropout: float, groups: int, over_video: bool = False) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(norm(c_in, groups, over_video), nn.SiLU(), spatial_conv(c_in, c_out))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb, c_out))
        self.out_layers = nn.Sequential(norm(c_out, groups, over_video), nn.SiLU(), nn.Dropout(dropout),
                                        zero_init(spatial_conv(c_out, c_out)))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv3d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, video_frames: int | None = None) -> torch.Tensor:
        """``x (B, C, T, H, W)`` or frames-in-batch ``(B*T, C, H, W)``; ``emb (B, E)``."""
        norm1, act1, conv1 = self.in_layers
        norm2, act2, drop, conv2 = self.out_layers
        frames = x.shape[0] // emb.shape[0] if x.dim() == 4 else x.shape[2]
        h = add_per_video(conv(conv1, act1(norm1(x, frames, video_frames))), self.emb(emb))
        skip = x if isinstance(self.skip, nn.Identity) else conv(self.skip, x)
        return skip + conv(conv2, drop(act2(norm2(h, frames, video_frames))))


class Attention(nn.Module):
    """Multi-head self-attention with a pre-norm and a zero-initialised output projection (residual).

    ``axis="space"``: tokens are the ``H*W`` pixels of each frame. ``axis="time"``: tokens are the ``T``
    frames at each pixel, with a learned bias per head and relative distance ``j - i`` (|j - i| <
    ``max_frames``) and an optional boolean mask ``(T, T)`` (True = may attend).
    """

    def __init__(self, channels: int, head_channels: int, groups: int, axis: str, max_frames: int = 0,
                 over_video: bool = False) -> None:
        super().__init__()
        self.axis, self.heads, self.max_frames = axis, max(1, channels // head_channels), max_frames
        self.norm = norm(channels, groups, over_video)
        self.qkv = nn.Conv3d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv3d(channels, channels, 1))
        if axis == "time":
            self.relative_bias = nn.Parameter(torch.zeros(self.heads, 2 * max_frames - 1))

    def time_bias(self, frames: int, mask: torch.Tensor | None, device) -> torch.Tensor:
        """Additive attention bias ``(heads, T, T)``: relative-position bias, ``-inf`` where masked."""
        pos = torch.arange(frames, device=device)
        rel = (pos[None, :] - pos[:, None]).clamp(-(self.max_frames - 1), self.max_frames - 1) + self.max_frames - 1
        bias = self.relative_bias[:, rel]
        if mask is not None:
            bias = bias.masked_fill(~mask.to(device), float("-inf"))
        return bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, video_frames: int | None = None,
                frames: int | None = None) -> torch.Tensor:
        """``x (B, C, T, H, W)``, or frames-in-batch ``(B*T, C, H, W)`` with ``frames = T``."""
        if x.dim() == 4:
            if self.axis == "time":
                self._check_frames(video_frames or frames)
            return x + self._folded(self.norm(x, frames, video_frames), frames, mask)
        b, _, t, h, _ = x.shape
        qkv = conv(self.qkv, self.norm(x, t, video_frames))
        if self.axis == "space":
            q, k, v = rearrange(qkv, "b (n g d) t h w -> n (b t) g (h w) d", n=3, g=self.heads)
            out = F.scaled_dot_product_attention(q, k, v)
            out = rearrange(out, "(b t) g (h w) d -> b (g d) t h w", b=b, h=h)
        else:
            self._check_frames(video_frames or t)
            q, k, v = rearrange(qkv, "b (n g d) t h w -> n (b h w) g t d", n=3, g=self.heads)
            bias = self.time_bias(t, mask, x.device).to(q.dtype)
            # softmax(q k^T / sqrt(d) + bias) v written out, as SDPA's math backend computes it: a learned bias
            # rules out the fused CPU kernel, and on these short sequences (T frames) the explicit form avoids
            # SDPA's math-path overhead (~25% less time, forward + backward, at T = 16 on one CPU thread).
            scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2)) + bias
            out = torch.matmul(scores.softmax(dim=-1), v)
            out = rearrange(out, "(b h w) g t d -> b (g d) t h w", b=b, h=h)
        return x + self.proj(out)

    def _check_frames(self, frames: int) -> None:
        if frames > self.max_frames:
            raise ValueError(
                f"temporal attention got {frames} frames but its relative-position bias covers at most "
                f"model.max_frames = {self.max_frames}; sample at most {self.max_frames} frames per window (or "
                "train a model with a larger max_frames)"
            )

    def _folded(self, x: torch.Tensor, frames: int, mask: torch.Tensor | None) -> torch.Tensor:
        """The attention's update (before the residual) for normalised frames-in-batch ``x (B*T, C, H, W)``.

        The same sums as the 5-D path in another order: the input goes to tokens-major once (C channels) and
        the 1x1 projections run there as ``F.linear`` of the squeezed Conv3d weights, so q, k and v are views of
        the qkv tensor (last-dimension stride 1, what SDPA's fused kernel and ``bmm`` take) instead of a copy
        of all 3C channels; the temporal scores take their bias and scale in one ``baddbmm``."""
        bt, c, h, w = x.shape
        b, g = bt // frames, self.heads
        qkv_weight, proj_weight = self.qkv.weight.flatten(1), self.proj.weight.flatten(1)
        if self.axis == "space":
            tokens = rearrange(x, "bt c h w -> bt (h w) c")
            q, k, v = F.linear(tokens, qkv_weight, self.qkv.bias).view(bt, h * w, 3, g, c // g).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bt, h * w, c)  # (B*T, HW, C)
            return rearrange(F.linear(out, proj_weight, self.proj.bias), "bt (h w) c -> bt c h w", h=h)
        tokens = rearrange(x, "(b t) c h w -> (b h w) t c", t=frames)
        qkv = F.linear(tokens, qkv_weight, self.qkv.bias).view(b * h * w, frames, 3 * g, c // g)
        parts = qkv.unbind(2)  # q of each head, then k, then v: (B*H*W, T, d) views, one stack in the backward
        bias = self.time_bias(frames, mask, x.device).to(x.dtype)  # (heads, T, T)
        heads = []
        for i in range(g):  # explicit softmax(q k^T / sqrt(d) + bias) v, as the 5-D path (see there why)
            q, k, v = parts[i], parts[g + i], parts[2 * g + i]
            scores = torch.baddbmm(bias[i], q, k.transpose(1, 2), alpha=q.shape[-1] ** -0.5)
            heads.append(torch.bmm(scores.softmax(dim=-1), v))
        out = torch.cat(heads, dim=-1) if g > 1 else heads[0]  # (B*H*W, T, C)
        return rearrange(F.linear(out, proj_weight, self.proj.bias), "(b h w) t c -> (b t) c h w", b=b, h=h)


class Downsample(nn.Module):
    """Spatial 2x down-sampling: a 1x3x3 convolution with stride (1, 2, 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv(self.conv, x)


class Upsample(nn.Module):
    """Spatial 2x nearest up-sampling, then a 1x3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = spatial_conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv(self.conv, F.interpolate(x, scale_factor=(1, 2, 2) if x.dim() == 5 else 2, mode="nearest"))


class Block(nn.Module):
    """A ResBlock, then (at attention resolutions) spatial attention followed by temporal attention."""

    def __init__(self, c_in: int, c_out: int, cfg: VDMConfig, attention: bool) -> None:
        super().__init__()
        video = cfg.norm_over_video
        self.res = ResBlock(c_in, c_out, cfg.embed_channels, cfg.dropout, cfg.norm_groups, video)
        self.space = Attention(c_out, cfg.head_channels, cfg.norm_groups, "space", over_video=video) if attention else None
        self.time = (Attention(c_out, cfg.head_channels, cfg.norm_groups, "time", cfg.max_frames, video)
                     if attention else None)

    def forward(self, x, emb, mask, video_frames, frames: int | None = None):
        x = self.res(x, emb, video_frames)
        if self.space is not None:
            x = self.time(self.space(x, video_frames=video_frames, frames=frames), mask, video_frames, frames=frames)
        return x


def temporal_mask(video_frames: int, image_frames: int, device=None) -> torch.Tensor | None:
    """``(T, T)`` boolean, ``T = video_frames + image_frames``: the video frames attend to each other;
    each trailing image frame attends only to itself. ``None`` when there are no image frames."""
    if image_frames == 0:
        return None
    total = video_frames + image_frames
    mask = torch.eye(total, dtype=torch.bool, device=device)
    mask[:video_frames, :video_frames] = True
    return mask


class UNet3D(nn.Module):
    """The factorised space-time U-Net: ``(z (B, C, T, H, W), log-SNR (B,), labels (B,) | None)`` -> ``(B, C, T, H, W)``."""

    def __init__(self, cfg: VDMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, emb = cfg.base_channels, cfg.embed_channels
        self.time_embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        # index num_classes is the learned null label (unconditional branch of classifier-free guidance)
        self.label_embed = nn.Embedding(cfg.num_classes + 1, emb) if cfg.num_classes > 0 else None
        self.input = spatial_conv(cfg.channels, ch)
        self.down = nn.ModuleList()
        skips, width, res = [ch], ch, cfg.resolution
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(Block(width, ch * mult, cfg, res in cfg.attention_resolutions))
                width = ch * mult
                skips.append(width)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(Downsample(width))
                skips.append(width)
                res //= 2
        self.middle = nn.ModuleList([Block(width, width, cfg, True), Block(width, width, cfg, False)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(Block(width + skips.pop(), ch * mult, cfg, res in cfg.attention_resolutions))
                width = ch * mult
            if level > 0:
                self.up.append(Upsample(width))
                res *= 2
        self.out = nn.Sequential(norm(width, cfg.norm_groups, cfg.norm_over_video), nn.SiLU(),
                                 zero_init(spatial_conv(width, cfg.channels)))

    def embed(self, logsnr: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        cfg = self.cfg
        # log-SNR mapped linearly onto DDPM's timestep range [0, 1000] before the sinusoidal embedding
        c_noise = 1000 * (cfg.logsnr_max - logsnr) / (cfg.logsnr_max - cfg.logsnr_min)
        emb = self.time_embed(sinusoidal_embedding(c_noise, cfg.base_channels))
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((logsnr.shape[0],), cfg.num_classes, device=logsnr.device, dtype=torch.long)
            emb = emb + self.label_embed(labels)
        return emb

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor | None = None,
                image_frames: int = 0) -> torch.Tensor:
        """``z (B, C, T + k, H, W)``; the last ``k = image_frames`` frames are independent images."""
        cfg = self.cfg
        assert_shape(z, [None, cfg.channels, None, cfg.resolution, cfg.resolution], "VDM input (B, C, T, H, W)")
        b, _, t, _, _ = z.shape
        assert_shape(logsnr, [b], "log-SNR per sample (B,)")
        if not 0 <= image_frames < t:
            raise ValueError(f"image_frames must be in [0, {t}), got {image_frames}")
        mask = temporal_mask(t - image_frames, image_frames, z.device)
        emb = self.embed(logsnr, labels)
        if cfg.fold_frames:  # frames in the batch inside the network (VDMConfig.fold_frames)
            z = rearrange(z, "b c t h w -> (b t) c h w")
        x = conv(self.input, z)
        skips = [x]
        for layer in self.down:
            x = layer(x) if isinstance(layer, Downsample) else layer(x, emb, mask, t - image_frames, t)
            skips.append(x)
        for layer in self.middle:
            x = layer(x, emb, mask, t - image_frames, t)
        for layer in self.up:
            if isinstance(layer, Upsample):
                x = layer(x)
            else:
                x = layer(torch.cat([x, skips.pop()], dim=1), emb, mask, t - image_frames, t)
        norm_out, act, conv_out = self.out
        out = conv(conv_out, act(norm_out(x, t, t - image_frames)))
        return rearrange(out, "(b t) c h w -> b c t h w", b=b) if cfg.fold_frames else out


# --------------------------------------------------------------------------- the model


def noise_seed(noise: torch.Tensor) -> int:
    """A seed derived from the initial noise, so ``sample(noise)`` is a function of ``noise`` alone."""
    return int(noise.detach().double().abs().sum().mul(1e6).item()) % (2**63 - 1)


class VDM(VideoModel):
    """Video diffusion model: a 3-D U-Net denoiser (``self.denoiser``) plus the sampling procedures."""

    default_objective = "diffusion"

    def __init__(self, config: VDMConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.denoiser = UNet3D(config)

    @property
    def prediction_target(self) -> str:
        """What the denoiser predicts: ``"eps"`` or ``"v"`` (``model.parameterization``)."""
        return self.config.parameterization

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(conditions=frozenset({"labels"}) if self.config.num_classes else frozenset())

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """The schedule's log-SNR at ``t in [0, 1]``."""
        return diffusion.cosine_logsnr(t, self.config.logsnr_min, self.config.logsnr_max)

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``z_1 ~ N(0, I)``, ``(n, C, T, H, W)``; drawn on the generator's device, then moved."""
        return draw_noise("normal", (n, *self.video_shape), generator, device if device is not None else self.device)

    def x0(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
           guidance_scale: float | None = None) -> torch.Tensor:
        """Denoised prediction ``x_hat(z_t)`` at times ``t (B,)``, with classifier-free guidance for a
        class-conditional model (``guidance_scale`` defaults to the config's)."""
        cfg = self.config
        logsnr = self.logsnr(t).to(z.device)
        alpha, sigma = diffusion.alpha_sigma(logsnr)
        scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        out = self.denoiser(z, logsnr, labels)
        if cfg.num_classes > 0 and labels is not None and scale > 0:
            out = diffusion.classifier_free(out, self.denoiser(z, logsnr, None), scale)
        return diffusion.x0_from_output(out, z, alpha, sigma, cfg.parameterization)

    def default_labels(self, n: int, device) -> torch.Tensor | None:
        """Class-conditional models label a batch ``0, 1, ..., num_classes - 1, 0, ...`` (one of each class)."""
        if self.config.num_classes == 0:
            return None
        return torch.arange(n, device=device) % self.config.num_classes

    def _sampling(self, noise, labels, guidance_scale, sampler, steps, eta, generator):
        cfg = self.config
        assert_shape(noise, [None, *self.video_shape], "VDM noise (B, C, T, H, W)")
        labels = self.default_labels(noise.shape[0], noise.device) if labels is None else labels
        generator = generator if generator is not None else torch.Generator().manual_seed(noise_seed(noise))
        kwargs = {"logsnr_fn": self.logsnr, "eta": cfg.ddim_eta if eta is None else eta,
                  "gamma": cfg.variance_gamma, "clip": cfg.clip_denoised}
        sampler = cfg.sampler if sampler is None else sampler
        steps = cfg.sampling_steps if steps is None else steps
        return (lambda z, t: self.x0(z, t, labels, guidance_scale)), sampler, steps, generator, kwargs

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, labels: torch.Tensor | None = None, guidance_scale: float | None = None,
               sampler: str | None = None, steps: int | None = None, eta: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Videos ``(B, C, T, H, W)`` in [-1, 1] from ``z_1 = noise`` with the config's sampler (or the one given).

        Per-step noise comes from ``generator``, by default a CPU generator seeded from ``noise``
        itself: the same noise gives the same video, and the global RNG is not touched.
        """
        fn, sampler, steps, generator, kwargs = self._sampling(noise, labels, guidance_scale, sampler, steps, eta,
                                                               generator)
        return diffusion.sample_loop(fn, noise, steps, sampler, generator=generator, **kwargs)

    def extend(self, context: torch.Tensor, noise: torch.Tensor, method: str = "reconstruction",
               weight: float = 2.0, labels=None, guidance_scale=None, sampler=None, steps=None, eta=None,
               generator=None, trace: list[float] | None = None) -> torch.Tensor:
        """One window ``(B, C, T, H, W)`` whose first frames continue ``context (B, C, T_a, H, W)``; the
        last ``T - T_a`` frames are new (see :func:`kinema.diffusion.sample_extension`)."""
        _, c, _, h, w = noise.shape
        if context.shape[0] != noise.shape[0] or tuple(context.shape[1:2] + context.shape[3:]) != (c, h, w):
            raise ValueError(f"conditioning frames: expected (B={noise.shape[0]}, {c}, T_a, {h}, {w}), "
                             f"got {tuple(context.shape)}")
        fn, sampler, steps, generator, kwargs = self._sampling(noise, labels, guidance_scale, sampler, steps, eta,
                                                               generator)
        return diffusion.sample_extension(fn, context, noise, steps, sampler, method=method, weight=weight,
                                          generator=generator, trace=trace, **kwargs)

    def super_resolve(self, low: torch.Tensor, noise: torch.Tensor, method: str = "reconstruction",
                      weight: float = 2.0, labels=None, guidance_scale=None, sampler=None, steps=None, eta=None,
                      generator=None, trace: list[float] | None = None) -> torch.Tensor:
        """A full-resolution video whose box down-sampling matches ``low (B, C, T, h, w)``
        (see :func:`kinema.diffusion.sample_super_resolution`)."""
        fn, sampler, steps, generator, kwargs = self._sampling(noise, labels, guidance_scale, sampler, steps, eta,
                                                               generator)
        return diffusion.sample_super_resolution(fn, low, noise, steps, sampler, method=method, weight=weight,
                                                 generator=generator, trace=trace, **kwargs)
