"""VideoGPT stage 1 -- the 3-D VQ-VAE (Yan, Zhang, Abbeel, Srinivas 2021, "VideoGPT: Video Generation
using VQ-VAE and Transformers"). Stage 2, the transformer prior, is :mod:`kinema.models.videogpt.prior`.

Facts from the official code (wilson1yan/VideoGPT, ``videogpt/vqvae.py``):

- Encoder: ``max(log2 d)`` convs of kernel 4 with stride 2 on each axis that still has to shrink
  (stride 1 on the others), "same" padding ``k - s`` split ``(p//2 + p%2, p//2)``, ReLU after each;
  then a 3x3x3 conv and ``res_layers`` attention residual blocks, then BN + ReLU.
- Attention residual block: ``x + [BN, ReLU, conv3 (n -> n/2, no bias), BN, ReLU, conv1 (n/2 -> n,
  no bias), BN, ReLU, axial attention]``; axial attention = the sum of three 2-head attentions, each
  over one of T, H, W.
- Pre-/post-quantisation 1x1x1 convs (hidden <-> embedding_dim). Decoder mirrors the encoder with
  transposed convs (kernel 4, stride 2), ReLU between them, no output activation.
- Codebook: 2048 codes (the code's default, vqvae.py:79; the paper's BAIR and UCF-101 models use 1024,
  paper Table 8) x 256 dims, data-dependent init from the first batch's encoder outputs, EMA
  (decay 0.99) of counts ``N`` and sums ``z_avg``, Laplace-smoothed normalisation (1e-7), then every
  code whose EMA count ``N < 1`` is replaced by a random encoder output of the batch (outputs are
  tiled with noise ``0.01 / sqrt(D)`` when there are fewer outputs than codes).
- Loss: ``mse(x_hat, x) / 0.06 + 0.25 * mse(z_e, sg[e])`` with pixels in ``[-0.5, 0.5]``
  (0.06 is the data variance there). kinema's pixels are in ``[-1, 1]`` (4x the variance), so the
  reconstruction term is ``mse / (4 * data_variance)`` -- the same number the official code gives.
  Adam, betas (0.9, 0.999), no schedule (vqvae.py:73); lr 7e-4 in the paper (Table 8), 3e-4 in the code.

Deviation: the official encoder's 3x3x3 conv takes 3 input channels when there is a single
downsampling stage (a bug that crashes); here it always takes ``hidden`` channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinema.errors import ConfigError
from kinema.models.base import FirstStageAutoencoder
from kinema.nn import assert_shape
from kinema.nn.attention import AxialAttention, MultiHeadAttention
from kinema.nn.codebook import Codebook  # shared with the NÜWA VQ-GAN; still importable from here
from kinema.nn.convs import SamePadConv3d, SamePadConvTranspose3d


@dataclass
class VideoGPTVQVAEConfig:
    """VQ-VAE hyper-parameters; defaults are the official code's (16x64x64 clips -> 4x16x16 codes, 2048
    codes), not the paper's settings (configs/videogpt_vqvae_{bair_64,ucf101_128}.toml)."""

    # Loss weights moved to the "vqvae" objective, which replaced "likelihood" for this model.
    MOVED_KEYS: ClassVar[dict[str, str]] = {"commitment": "objective.commitment",
                                            "data_variance": "objective.data_variance"}
    RENAMED_OBJECTIVES: ClassVar[dict[str, str]] = {"likelihood": "vqvae"}

    name: Literal["videogpt_vqvae"] = "videogpt_vqvae"
    frames: int = 16
    resolution: int = 64
    downsample: list[int] = field(default_factory=lambda: [4, 4, 4])  # (T, H, W) factors, powers of 2
    hidden: int = 240  # n_hiddens
    res_layers: int = 4  # attention residual blocks in the encoder and in the decoder
    attention_heads: int = 2  # per axial attention
    codebook_size: int = 2048  # n_codes
    embedding_dim: int = 256
    ema_decay: float = 0.99
    restart_threshold: float = 1.0  # codes whose EMA count is below this are restarted (official: 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        t, h, w = self.downsample
        return (self.frames // t, self.resolution // h, self.resolution // w)

    def validate(self) -> None:
        for key in ("frames", "resolution", "hidden", "res_layers", "attention_heads", "codebook_size",
                    "embedding_dim"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0, got {getattr(self, key)}")
        check_downsample(self.downsample, (self.frames, self.resolution, self.resolution), "model")
        if self.hidden % 2 or self.hidden % self.attention_heads:
            raise ConfigError(f"model.hidden = {self.hidden} must be even and divisible by model.attention_heads "
                              f"= {self.attention_heads} (the residual blocks halve it; attention splits it)")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"model.ema_decay must be in (0, 1), got {self.ema_decay}")


def check_downsample(downsample: list[int], size: tuple[int, int, int], section: str = "model") -> None:
    """Raise ConfigError unless ``downsample`` is three powers of 2 dividing ``size = (T, H, W)``."""
    if len(downsample) != 3 or any(d < 1 or d & (d - 1) for d in downsample):
        raise ConfigError(f"{section}.downsample must be three powers of 2 for (T, H, W), got {downsample}")
    if any(s % d for s, d in zip(size, downsample)):
        raise ConfigError(
            f"clip shape (T, H, W) = {tuple(size)} is not divisible by {section}.downsample {list(downsample)}; "
            f"choose frames/resolution that are multiples of the factors (or smaller factors)")


# --------------------------------------------------------------------------- layers


class AttentionResidualBlock(nn.Module):
    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.BatchNorm3d(channels), nn.ReLU(),
            SamePadConv3d(channels, channels // 2, 3, bias=False),
            nn.BatchNorm3d(channels // 2), nn.ReLU(),
            SamePadConv3d(channels // 2, channels, 1, bias=False),
            nn.BatchNorm3d(channels), nn.ReLU(),
            AxialAttention(channels, heads),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _stage_strides(downsample: list[int]) -> list[tuple[int, int, int]]:
    """Per stage, stride 2 on the axes that still have to shrink: [4, 4, 2] -> [(2,2,2), (2,2,1)]."""
    steps = [int(math.log2(d)) for d in downsample]
    return [tuple(2 if s > i else 1 for s in steps) for i in range(max(steps))]


class Encoder(nn.Module):
    """``(B, 3, T, H, W)`` -> ``(B, hidden, T/dt, H/dh, W/dw)``."""

    def __init__(self, cfg: VideoGPTVQVAEConfig) -> None:
        super().__init__()
        strides = _stage_strides(cfg.downsample)
        self.convs = nn.ModuleList(SamePadConv3d(3 if i == 0 else cfg.hidden, cfg.hidden, 4, stride=s)
                                   for i, s in enumerate(strides))
        self.conv_last = SamePadConv3d(cfg.hidden if strides else 3, cfg.hidden, 3)
        self.res_stack = nn.Sequential(*[AttentionResidualBlock(cfg.hidden, cfg.attention_heads)
                                         for _ in range(cfg.res_layers)], nn.BatchNorm3d(cfg.hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.res_stack(self.conv_last(x))


class Decoder(nn.Module):
    """``(B, hidden, t, h, w)`` -> ``(B, 3, t*dt, h*dh, w*dw)`` (no output activation, as official)."""

    def __init__(self, cfg: VideoGPTVQVAEConfig) -> None:
        super().__init__()
        strides = _stage_strides(cfg.downsample)
        self.res_stack = nn.Sequential(*[AttentionResidualBlock(cfg.hidden, cfg.attention_heads)
                                         for _ in range(cfg.res_layers)], nn.BatchNorm3d(cfg.hidden), nn.ReLU())
        self.convts = nn.ModuleList(
            SamePadConvTranspose3d(cfg.hidden, 3 if i == len(strides) - 1 else cfg.hidden, 4, stride=s)
            for i, s in enumerate(strides))
        self.conv_out = None if strides else SamePadConv3d(cfg.hidden, 3, 3)  # no upsampling at all

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_stack(x)
        for i, convt in enumerate(self.convts):
            x = convt(x)
            if i < len(self.convts) - 1:
                x = F.relu(x)
        return self.conv_out(x) if self.conv_out is not None else x


# --------------------------------------------------------------------------- model


class VideoGPTVQVAE(FirstStageAutoencoder):
    """The VQ-VAE. ``forward(video (B, 3, T, H, W))`` -> dict with ``reconstruction`` (same shape),
    ``indices (B, t, h, w)``, ``commitment`` (unweighted), ``perplexity`` and the codebook statistics."""

    default_objective = "vqvae"

    def __init__(self, config: VideoGPTVQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.pre_vq = SamePadConv3d(config.hidden, config.embedding_dim, 1)
        self.codebook = Codebook(config.codebook_size, config.embedding_dim, config.ema_decay,
                                 config.restart_threshold)
        self.post_vq = SamePadConv3d(config.embedding_dim, config.hidden, 1)
        self.decoder = Decoder(config)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    def check_video(self, x: torch.Tensor, name: str = "video") -> None:
        """Any ``(B, 3, T, H, W)`` whose T, H, W the downsampling factors divide."""
        assert_shape(x, [None, 3, None, None, None], f"{name} (B, 3, T, H, W)")
        try:
            check_downsample(self.config.downsample, tuple(x.shape[2:]))
        except ConfigError as exc:
            raise ValueError(f"{name}: {exc}") from None

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> pre-quantisation latents ``(B, D, t, h, w)``."""
        self.check_video(x)
        return self.pre_vq(self.encoder(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> code indices ``(B, t, h, w)`` (long)."""
        return self.codebook.quantize(self.encode_latents(x))["indices"]

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, t, h, w)`` -> video ``(B, 3, T, H, W)`` (not clamped)."""
        assert_shape(indices, [None, None, None, None], "code indices (B, t, h, w)")
        return self.decoder(self.post_vq(self.codebook.lookup(indices)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.codebook.quantize(self.encode_latents(x))
        out["reconstruction"] = self.decoder(self.post_vq(out["embeddings"]))
        return out

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        raise ValueError(
            "a VideoGPT VQ-VAE is an autoencoder, not a generative model: it cannot sample. Train a prior "
            "on its codes (kinema train --config configs/videogpt_prior_tiny.toml --set model.vqvae=THIS_RUN "
            "--out PRIOR_RUN) and sample from the prior checkpoint")
