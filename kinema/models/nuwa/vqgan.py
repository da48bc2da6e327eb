"""NÜWA stage 1 -- the per-frame 2-D VQ-GAN tokenizer (Wu et al. 2021, arXiv 2111.12417, §3.1 / §4.1).

NÜWA tokenizes images and every video frame with one 2-D VQ-GAN (paper, via secondary notes: F16,
336x336 -> 21x21 tokens, codebook 12,288; unverified against the PDF). No official code exists; the
layer layout here is kinema's, informed by lucidrains/nuwa-pytorch ``vqgan_vae.py`` (L288-406): strided
4x4 convs down, upsample + 3x3 convs up, residual blocks with GroupNorm, a PatchGAN-style discriminator.

- Encoder: 3x3 conv, then per stage a residual block and a 4x4 stride-2 conv (width ``hidden *
  min(2^i, max_mult)``), ``res_blocks`` residual blocks, GroupNorm + SiLU, 1x1 conv to ``embedding_dim``.
  Feature map ``resolution / downsample`` -- ``downsample`` is a power of 2 and the map size is derived
  from it (lucidrains' ``fmap_size = image_size // num_layers ** 2``, vqgan_vae.py L324, is right only
  for 4 layers).
- Quantiser: :class:`kinema.nn.codebook.Codebook` -- the same EMA codebook as VideoGPT's VQ-VAE (data
  init from random encoder outputs, EMA counts/sums, dead-code restarts); ``codebook_init = "kmeans"``
  refines the init by ``kmeans_iters`` k-means iterations over the first batch's encoder outputs
  (lucidrains uses vector-quantize-pytorch with k-means init, vqgan_vae.py L369-376); no cosine codes.
- Decoder: 1x1 conv, residual blocks, per stage nearest-neighbour x2 upsampling + 3x3 conv + residual
  block, GroupNorm + SiLU, 3x3 conv to 3 channels (no output activation). Decoding looks code vectors up
  in the codebook and sends them through the same 1x1 conv as training (lucidrains' ``generate``
  skips the quantiser's output projection, nuwa_pytorch.py, see the card).
- Discriminator: PatchGAN-style 2-D convs (4x4, stride 2, LeakyReLU 0.2) on single frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinema.errors import ConfigError
from kinema.models.base import FirstStageAutoencoder
from kinema.nn import assert_shape
from kinema.nn.codebook import Codebook


@dataclass
class NUWAVQGANConfig:
    """Per-frame VQ-GAN hyper-parameters (defaults: a small 32x32 tokenizer; see configs/nuwa_vqgan_*.toml)."""

    name: Literal["nuwa_vqgan"] = "nuwa_vqgan"
    frames: int = 8
    resolution: int = 32
    downsample: int = 8  # spatial factor per axis, a power of 2 (paper NÜWA-336: 16)
    hidden: int = 64  # width of the first stage; stage i has hidden * min(2^i, max_mult)
    max_mult: int = 4
    res_blocks: int = 1  # residual blocks at the bottleneck of the encoder and of the decoder
    codebook_size: int = 512  # paper: 12,288 (unverified)
    embedding_dim: int = 64  # paper NÜWA-256 variant: 256 (unverified)
    ema_decay: float = 0.99
    restart_threshold: float = 1.0
    codebook_init: Literal["data", "kmeans"] = "data"  # random encoder outputs, or those refined by k-means
    kmeans_iters: int = 10  # Lloyd iterations of codebook_init = "kmeans" over the first batch
    disc_hidden: int = 64
    disc_layers: int = 3  # stride-2 convs of the discriminator

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.resolution // self.downsample
        return (self.frames, s, s)

    @property
    def stages(self) -> int:
        return int(math.log2(self.downsample))

    def widths(self) -> list[int]:
        return [self.hidden * min(2 ** i, self.max_mult) for i in range(self.stages + 1)]

    def validate(self) -> None:
        for key in ("frames", "resolution", "downsample", "hidden", "max_mult", "codebook_size", "embedding_dim",
                    "disc_hidden", "disc_layers"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0, got {getattr(self, key)}")
        if self.res_blocks < 0:
            raise ConfigError(f"model.res_blocks must be >= 0, got {self.res_blocks}")
        if self.downsample & (self.downsample - 1) or self.resolution % self.downsample:
            raise ConfigError(f"model.downsample = {self.downsample} must be a power of 2 dividing model.resolution "
                              f"= {self.resolution} (the token grid is resolution / downsample per side)")
        if self.hidden % 8:
            raise ConfigError(f"model.hidden = {self.hidden} must be a multiple of 8 (GroupNorm with 8 groups)")
        if self.codebook_init == "kmeans" and self.kmeans_iters < 1:
            raise ConfigError(f"model.kmeans_iters must be >= 1 with codebook_init = 'kmeans', got {self.kmeans_iters}")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"model.ema_decay must be in (0, 1), got {self.ema_decay}")


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                   norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder2d(nn.Module):
    """Frames ``(N, 3, H, W)`` -> latents ``(N, embedding_dim, H/f, W/f)``."""

    def __init__(self, cfg: NUWAVQGANConfig) -> None:
        super().__init__()
        w = cfg.widths()
        layers: list[nn.Module] = [nn.Conv2d(3, w[0], 3, padding=1)]
        for i in range(cfg.stages):
            layers += [ResBlock(w[i]), nn.Conv2d(w[i], w[i + 1], 4, stride=2, padding=1)]
        layers += [ResBlock(w[-1]) for _ in range(cfg.res_blocks)]
        layers += [norm(w[-1]), nn.SiLU(), nn.Conv2d(w[-1], cfg.embedding_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder2d(nn.Module):
    """Code vectors ``(N, embedding_dim, h, w)`` -> frames ``(N, 3, h*f, w*f)`` (not clamped)."""

    def __init__(self, cfg: NUWAVQGANConfig) -> None:
        super().__init__()
        w = cfg.widths()
        layers: list[nn.Module] = [nn.Conv2d(cfg.embedding_dim, w[-1], 1)]
        layers += [ResBlock(w[-1]) for _ in range(cfg.res_blocks)]
        for i in reversed(range(cfg.stages)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w[i + 1], w[i], 3, padding=1),
                       ResBlock(w[i])]
        layers += [norm(w[0]), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(w[0], 3, 3, padding=1)  # the "last layer" of the adaptive GAN weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.net(z))


class PatchDiscriminator(nn.Module):
    """Per-patch realness logits of single frames ``(N, 3, H, W)`` -> ``(N, 1, h', w')``."""

    def __init__(self, cfg: NUWAVQGANConfig) -> None:
        super().__init__()
        c = cfg.disc_hidden
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, cfg.disc_layers):
            c_in, c = c, cfg.disc_hidden * min(2 ** i, 8)
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), norm(c), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(c, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B*T, C, H, W)`` (frame-major within each video)."""
    return video.transpose(1, 2).flatten(0, 1)


def video_of(frames: torch.Tensor, b: int) -> torch.Tensor:
    """``(B*T, C, H, W)`` -> ``(B, C, T, H, W)``."""
    return frames.unflatten(0, (b, -1)).transpose(1, 2)


class NUWAVQGAN(FirstStageAutoencoder):
    """The per-frame VQ-GAN. ``forward(video (B, 3, T, H, W))`` -> dict with ``reconstruction`` (same
    shape), ``indices (B, T, h, w)``, unweighted ``commitment``, ``perplexity`` and the codebook's
    EMA statistics (``counts``, ``sums``, ``flat``); ``discriminate(frames)`` scores single frames."""

    default_objective = "nuwa_vqgan"

    def __init__(self, config: NUWAVQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder2d(config)
        self.codebook = Codebook(config.codebook_size, config.embedding_dim, config.ema_decay,
                                 config.restart_threshold,
                                 config.kmeans_iters if config.codebook_init == "kmeans" else 0)
        self.decoder = Decoder2d(config)
        self.discriminator = PatchDiscriminator(config)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    def check_video(self, x: torch.Tensor, name: str = "video") -> None:
        r = self.config.resolution
        assert_shape(x, [None, 3, None, r, r], f"{name} (B, 3, T, {r}, {r})")

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> per-frame latents ``(B*T, D, h, w)``."""
        self.check_video(x)
        return self.encoder(frames_of(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> code indices ``(B, T, h, w)`` (any T)."""
        return self.codebook.quantize(self.encode_latents(x))["indices"].unflatten(0, (len(x), -1))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, T, h, w)`` -> video ``(B, 3, T, H, W)`` (not clamped)."""
        assert_shape(indices, [None, None, None, None], "code indices (B, T, h, w)")
        return video_of(self.decoder(self.codebook.lookup(indices.flatten(0, 1))), len(indices))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.codebook.quantize(self.encode_latents(x))
        out["reconstruction"] = video_of(self.decoder(out["embeddings"]), len(x))
        out["indices"] = out["indices"].unflatten(0, (len(x), -1))
        return out

    def discriminate(self, frames: torch.Tensor) -> torch.Tensor:
        return self.discriminator(frames)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight (the adaptive GAN weight compares gradients there)."""
        return self.decoder.conv_out.weight

    def parameter_counts(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"encoder": count(self.encoder), "decoder": count(self.decoder),
                "discriminator (training only)": count(self.discriminator), "total": count(self)}

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        raise ValueError(
            "a NÜWA VQ-GAN is a tokenizer, not a generative model: it cannot sample. Train the transformer on "
            "its tokens (kinema train --config configs/nuwa_tiny.toml --set model.vqgan=THIS_RUN --out RUN) and "
            "sample from that checkpoint")
