"""NÜWA stage 2 -- a 3DNA encoder-decoder transformer over per-frame VQ-GAN tokens (Wu et al. 2021,
arXiv 2111.12417). No official code exists; the paper facts below come from secondary notes quoting §3
and §4.1 (unverified against the PDF, see docs/models/nuwa.md).

- The target video is a ``(T, h, w)`` grid of tokens of the frozen per-frame VQ-GAN (:mod:`.vqgan`),
  flattened T-major. The decoder input at cell ``p`` is the embedding of the token at ``p - 1`` (a
  learned ``<bos>`` vector at ``p = 0``) plus a position embedding: three learned per-axis tables
  (T, H, W) summed (paper: per-axis tables added to condition and target; lucidrains/nuwa-pytorch
  ``nuwa_pytorch.py`` L1786-1790 sums axial tables too).
- Encoder: the condition on its own grid -- the first ``cond_frames`` frames' tokens ``(k, h, w)`` (video
  prediction), or the learned "None" token on a ``(1, 1, 1)`` grid (unconditional; the paper's V2V
  pre-training uses a constant "None" condition). Non-causal 3DNA self-attention.
- Decoder: causal 3DNA self-attention, 3DNA cross-attention (each target cell projected onto the
  condition grid), feed-forward; logits over the codebook (paper Eq. 16: next-token cross-entropy).
  Pre-LayerNorm blocks with a GELU MLP of 4x width (kinema's choice: the paper's block internals are not
  in the notes; lucidrains uses sandwich norm and GEGLU).
- Sampling: token by token with per-layer key/value caches, temperature, top-k, and classifier-free
  guidance ``logits = u + g (c - u)`` (the unconditional pass uses the "None" condition; trained by
  condition dropout in the ``nuwa`` objective). Prediction prefills the tokens of the given frames.

Sampling "noise" is one int64 seed per video (as the VideoGPT prior): video i draws from its own
``torch.Generator`` seeded with ``noise[i]``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinema.config import build_dataclass
from kinema.errors import CheckpointError, ConfigError
from kinema.models.base import Capabilities, VideoModel
from kinema.models.nuwa.attention import NearbyAttention, check_extent, make_neighbourhood
from kinema.models.nuwa.vqgan import NUWAVQGAN, NUWAVQGANConfig
from kinema.nn import assert_shape
from kinema.nn.noise import draw_seeds
from kinema.progress import steps as progress_steps
from kinema.runs import checkpoint_with_model, first_stage_model_config


@dataclass
class NUWAConfig:
    """Transformer hyper-parameters. ``vqgan``: the VQ-GAN run or checkpoint; its model config is copied
    into ``vqgan_config`` when the config is built, and the checkpoint stores the tokenizer's weights.
    Extents are per axis ``(T, H, W)``; see :mod:`kinema.models.nuwa.attention` for their meaning."""

    name: Literal["nuwa"] = "nuwa"
    vqgan: str = ""
    vqgan_config: str = ""  # filled from `vqgan` automatically; do not edit
    frames: int = 8
    resolution: int = 32
    downsample: int = 8
    codebook_size: int = 512
    hidden: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 4
    dropout: float = 0.0
    cond_frames: int = 0  # 0: unconditional ("None" condition); k: condition on the first k frames' tokens
    self_extent: list[int] = field(default_factory=lambda: [3, 3, 3])  # decoder, causal
    self_dilation: list[int] = field(default_factory=lambda: [1, 1, 1])
    cross_extent: list[int] = field(default_factory=lambda: [3, 3, 3])  # decoder -> condition grid
    encoder_extent: list[int] = field(default_factory=lambda: [3, 3, 3])  # condition self-attention
    extent_unit: Literal["window", "radius"] = "window"  # "window": extent 3 = 3 cells (radius 1)
    causal_window: Literal["centred", "one_sided"] = "centred"  # decoder neighbourhood shape
    block_frames: int = 1  # query frames per block of the memory-lean attention
    temperature: float = 1.0
    top_k: int = 0
    guidance: float = 1.0  # classifier-free guidance scale (1 = none)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        s = self.resolution // self.downsample
        return (self.frames, s, s)

    @property
    def cond_grid(self) -> tuple[int, int, int]:
        t, h, w = self.token_grid
        return (self.cond_frames, h, w) if self.cond_frames else (1, 1, 1)

    def vqgan_model_config(self) -> NUWAVQGANConfig:
        if self.vqgan_config:
            return build_dataclass(NUWAVQGANConfig, json.loads(self.vqgan_config), "model.vqgan_config")
        return NUWAVQGANConfig(frames=self.frames, resolution=self.resolution, downsample=self.downsample,
                               codebook_size=self.codebook_size)

    def validate(self) -> None:
        for key in ("frames", "resolution", "downsample", "codebook_size", "hidden", "heads", "encoder_layers",
                    "decoder_layers", "block_frames", "temperature"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0, got {getattr(self, key)}")
        if self.top_k < 0 or self.top_k > self.codebook_size:
            raise ConfigError(f"model.top_k must be in 0..codebook_size ({self.codebook_size}), got {self.top_k}")
        if self.hidden % self.heads:
            raise ConfigError(f"model.hidden = {self.hidden} must be divisible by model.heads = {self.heads}")
        if self.downsample & (self.downsample - 1) or self.resolution % self.downsample:
            raise ConfigError(f"model.downsample = {self.downsample} must be a power of 2 dividing model.resolution")
        if not 0 <= self.cond_frames < self.frames:
            raise ConfigError(f"model.cond_frames = {self.cond_frames} must be in 0..frames-1 = {self.frames - 1}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for key in ("self_extent", "self_dilation", "cross_extent", "encoder_extent"):
            value = getattr(self, key)
            if len(value) != 3 or any(int(v) != v or v < 0 for v in value):
                raise ConfigError(f"model.{key} must be three integers >= 0 for (T, H, W), got {value}")
        if any(d < 1 for d in self.self_dilation):
            raise ConfigError(f"model.self_dilation must be >= 1 per axis, got {self.self_dilation}")
        checks = [("self_extent", self.self_extent, self.self_dilation, self.token_grid, self.causal_window)]
        if self.cond_frames:
            checks += [("cross_extent", self.cross_extent, [1, 1, 1], self.cond_grid, "centred"),
                       ("encoder_extent", self.encoder_extent, [1, 1, 1], self.cond_grid, "centred")]
        for key, extent, dilation, grid, shape in checks:
            try:
                make_neighbourhood(extent, dilation, self.extent_unit, shape)
                check_extent(extent, dilation, grid, self.extent_unit, shape, f"model.{key} on the grid {grid}")
            except ValueError as exc:
                raise ConfigError(str(exc) if str(exc).startswith("model.") else f"model.{key}: {exc}") from None
        if self.vqgan and not self.vqgan_config:
            self.vqgan_config = json.dumps(read_vqgan_config(self.vqgan))
        if self.vqgan_config:
            self.check_matches(self.vqgan_model_config())

    def check_matches(self, vq: NUWAVQGANConfig) -> None:
        mine = (self.frames, self.resolution, self.downsample, self.codebook_size)
        theirs = (vq.frames, vq.resolution, vq.downsample, vq.codebook_size)
        if mine[1:] != theirs[1:]:
            raise ConfigError(
                f"the transformer's token grid does not match its VQ-GAN ({self.vqgan or 'model.vqgan_config'}): the "
                f"VQ-GAN has resolution {vq.resolution}, downsample {vq.downsample}, {vq.codebook_size} codes; the "
                f"transformer expects resolution {self.resolution}, downsample {self.downsample}, "
                f"{self.codebook_size} codes. Set model.resolution={vq.resolution}, model.downsample={vq.downsample}, "
                f"model.codebook_size={vq.codebook_size}")


def read_vqgan_config(path: str | Path) -> dict:
    """The model section of a NÜWA VQ-GAN checkpoint's config.json; clear errors for a missing/wrong one."""
    return first_stage_model_config(path, "vqgan", "nuwa_vqgan", "NÜWA VQ-GAN", "tokenizer", "nuwa_vqgan_tiny")


# --------------------------------------------------------------------------- transformer


class AxialPosition(nn.Module):
    """Three learned tables (T, H, W) of ``dim``, summed over a ``(t, h, w)`` grid -> ``(t*h*w, dim)``."""

    def __init__(self, shape: tuple[int, int, int], dim: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.tables = nn.ParameterList(nn.Parameter(torch.randn(s, dim) * 0.02) for s in shape)

    def forward(self) -> torch.Tensor:
        et, eh, ew = self.tables
        return (et[:, None, None] + eh[None, :, None] + ew[None, None, :]).flatten(0, 2)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: NUWAConfig) -> None:
        super().__init__()
        d, grid = cfg.hidden, cfg.cond_grid
        extent = cfg.encoder_extent if cfg.cond_frames else [0, 0, 0]
        nb = make_neighbourhood(extent, (1, 1, 1), cfg.extent_unit, "centred")
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = NearbyAttention(d, cfg.heads, grid, grid, nb, dropout=cfg.dropout, block_frames=cfg.block_frames)
        self.ff = FeedForward(d, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h))
        return x + self.drop(self.ff(self.norm2(x)))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: NUWAConfig) -> None:
        super().__init__()
        d, grid = cfg.hidden, cfg.token_grid
        self_nb = make_neighbourhood(cfg.self_extent, cfg.self_dilation, cfg.extent_unit, cfg.causal_window, True)
        cross_extent = cfg.cross_extent if cfg.cond_frames else [0, 0, 0]  # the single "None" cell
        cross_nb = make_neighbourhood(cross_extent, (1, 1, 1), cfg.extent_unit, "centred")
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = NearbyAttention(d, cfg.heads, grid, grid, self_nb, dropout=cfg.dropout,
                                    block_frames=cfg.block_frames)
        self.cross = NearbyAttention(d, cfg.heads, grid, cfg.cond_grid, cross_nb, dropout=cfg.dropout,
                                     block_frames=cfg.block_frames)
        self.ff = FeedForward(d, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        x = x + self.drop(self.cross(self.norm2(x), enc))
        return x + self.drop(self.ff(self.norm3(x)))

    def step(self, x: torch.Tensor, pos: int, cache: dict) -> torch.Tensor:
        x = x + self.attn.step(self.norm1(x), pos, cache["self"])
        x = x + self.cross.step(self.norm2(x), pos, cache["cross"])
        return x + self.ff(self.norm3(x))


class NUWATransformer(nn.Module):
    """Condition tokens ``(B, L_c)`` (index ``codebook_size`` = the "None" token) and target tokens
    ``(B, L)`` -> logits ``(B, L, codebook_size)``; logits at cell ``p`` depend on targets ``< p`` only."""

    def __init__(self, cfg: NUWAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.embed = nn.Embedding(cfg.codebook_size + 1, d)  # + the "None" token
        nn.init.normal_(self.embed.weight, std=0.02)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.enc_pos = AxialPosition(cfg.cond_grid, d)
        self.dec_pos = AxialPosition(cfg.token_grid, d)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.encoder_layers))
        self.enc_norm = nn.LayerNorm(d)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.to_logits = nn.Linear(d, cfg.codebook_size, bias=False)

    @property
    def null_token(self) -> int:
        return self.cfg.codebook_size

    def encode(self, cond: torch.Tensor) -> torch.Tensor:
        x = self.embed(cond) + self.enc_pos()
        for block in self.encoder:
            x = block(x)
        return self.enc_norm(x)

    def inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """Decoder inputs ``(B, L, hidden)``: ``<bos>``, then the embeddings of tokens ``0..L-2`` (right shift)."""
        return torch.cat([self.bos.expand(len(codes), 1, -1), self.embed(codes[:, :-1])], dim=1)

    def decode(self, inputs: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        """Decoder inputs (see :meth:`inputs`) and encoder output -> logits ``(B, L, codes)``."""
        x = inputs + self.dec_pos()
        for block in self.decoder:
            x = block(x, enc)
        return self.to_logits(self.norm(x))

    def forward(self, codes: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.decode(self.inputs(codes), self.encode(cond))

    def new_caches(self, enc: torch.Tensor) -> list[dict]:
        """Per decoder layer: an empty self-attention cache and the condition's keys/values."""
        caches = []
        for block in self.decoder:
            k, v = block.cross.keys_values(enc)
            caches.append({"self": {}, "cross": {"k": k, "v": v}})
        return caches

    def step(self, prev: torch.Tensor | None, pos: int, caches: list[dict], batch: int) -> torch.Tensor:
        """Logits ``(B, codes)`` of cell ``pos`` given the token of cell ``pos - 1`` (``prev (B,)``)."""
        x = self.bos.expand(batch, 1, -1) if prev is None else self.embed(prev[:, None])
        x = x + self.dec_pos()[pos : pos + 1]
        for block, cache in zip(self.decoder, caches):
            x = block.step(x, pos, cache)
        return self.to_logits(self.norm(x))[:, 0]


# --------------------------------------------------------------------------- model


class NUWA(VideoModel):
    """Frozen per-frame VQ-GAN (``self.vqgan``, without its discriminator) + trainable transformer."""

    default_objective = "nuwa"

    def __init__(self, config: NUWAConfig) -> None:
        super().__init__()
        self.config = config
        vq_config = config.vqgan_model_config()
        config.check_matches(vq_config)
        self.vqgan = NUWAVQGAN(vq_config)
        del self.vqgan.discriminator  # training-only; not part of a NÜWA checkpoint
        self.vqgan_loaded = False
        if config.vqgan and config.vqgan_config and not self.vqgan.codebook.embeddings.is_meta:
            ckpt = checkpoint_with_model(config.vqgan, config.vqgan_config)
            if ckpt is not None:
                from safetensors.torch import load_file

                state = {k: v for k, v in load_file(ckpt / "model.safetensors").items()
                         if not k.startswith("discriminator.")}
                self.vqgan.load_state_dict(state)
                self.vqgan_loaded = True
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "vqgan_loaded", True))
        self.vqgan.requires_grad_(False).eval()
        self.transformer = NUWATransformer(config)

    def train(self, mode: bool = True) -> NUWA:
        super().train(mode)
        self.vqgan.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        t = self.transformer
        enc = count(t.encoder) + count(t.enc_norm) + count(t.enc_pos)
        dec = count(t.decoder) + count(t.norm) + count(t.dec_pos) + t.bos.numel()
        return {"transformer (trained)": count(t), "  encoder": enc, "  decoder": dec,
                "  token embedding": count(t.embed), "  to_logits": count(t.to_logits),
                "vqgan (frozen, without discriminator)": count(self.vqgan), "total": count(self)}

    @property
    def token_grid(self) -> tuple[int, int, int]:
        return self.config.token_grid

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(conditions=frozenset({"frames"}))

    def check_trainable(self) -> None:
        if not self.config.vqgan and not self.config.vqgan_config:
            raise ConfigError("model.vqgan is empty: NÜWA is trained on the tokens of a trained VQ-GAN. Train one "
                              "first (kinema train --config nuwa_vqgan_tiny --out RUN1), then pass "
                              "--set model.vqgan=RUN1")
        if not self.vqgan_loaded:
            raise ConfigError(f"the VQ-GAN has no trained weights: model.vqgan = {self.config.vqgan!r} is missing "
                              "or no longer holds the VQ-GAN this config was built from")

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T', H, W)`` -> tokens ``(B, T', h, w)`` (any number of frames)."""
        return self.vqgan.encode(video)

    def condition_tokens(self, codes: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder input ``(B, L_c)``: the first ``cond_frames`` frames of ``codes (B, T, h, w)`` (or
        the "None" token), with ``drop`` rows replaced by "None" tokens."""
        b, k = len(codes), self.config.cond_frames
        null = self.transformer.null_token
        if not k:
            return torch.full((b, 1), null, dtype=torch.long, device=codes.device)
        cond = codes[:, :k].flatten(1)
        if drop is not None:
            cond = torch.where(drop[:, None], torch.full_like(cond, null), cond)
        return cond

    def logits(self, codes: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``(B, T, h, w)`` -> logits ``(B, T*h*w, codes)`` (teacher forcing)."""
        assert_shape(codes, [None, *self.token_grid], "tokens (B, T, h, w)")
        return self.transformer(codes.flatten(1), self.condition_tokens(codes, drop))

    def loss(self, video: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) over all target tokens of ``video (B, 3, T, H, W)``."""
        assert_shape(video, [None, *self.video_shape], "video (B, C, T, H, W)")
        codes = self.encode(video)
        logits = self.logits(codes, drop)
        return F.cross_entropy(logits.float().flatten(0, 1), codes.flatten())

    # ------------------------------------------------------------------ sampling

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return draw_seeds(n, generator, device if device is not None else self.device)

    def _prefix(self, frames: torch.Tensor | None, b: int) -> torch.Tensor | None:
        cfg = self.config
        if frames is None:
            if cfg.cond_frames:
                raise ValueError(f"this NÜWA predicts video from its first {cfg.cond_frames} frame(s) "
                                 "(model.cond_frames): pass them (kinema sample --condition VIDEO)")
            return None
        r = cfg.resolution
        assert_shape(frames, [b, 3, None, r, r], f"conditioning frames (B, 3, n, {r}, {r})")
        n = frames.shape[2]
        if not max(cfg.cond_frames, 1) <= n < cfg.frames:
            raise ValueError(f"got {n} conditioning frame(s); this model needs {max(cfg.cond_frames, 1)}.."
                             f"{cfg.frames - 1} (model.cond_frames = {cfg.cond_frames}, model.frames = {cfg.frames})")
        return self.encode(frames)

    @torch.no_grad()
    def sample_codes(self, noise: torch.Tensor, frames: torch.Tensor | None = None, temperature: float | None = None,
                     top_k: int | None = None, guidance: float | None = None, prefix: torch.Tensor | None = None,
                     use_cache: bool = True) -> torch.Tensor:
        """Tokens ``(B, T, h, w)`` for seeds ``noise (B,)``. ``frames (B, 3, n, H, W)``: the first ``n``
        frames' tokens are kept exactly (prediction) and the first ``cond_frames`` feed the encoder;
        ``prefix (B, n, h, w)``: the same with tokens. ``use_cache=False`` recomputes every position."""
        cfg = self.config
        temperature = cfg.temperature if temperature is None else temperature
        top_k = cfg.top_k if top_k is None else top_k
        guidance = cfg.guidance if guidance is None else guidance
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= top_k <= cfg.codebook_size:
            raise ValueError(f"top_k must be in 0..{cfg.codebook_size}, got {top_k}")
        assert_shape(noise, [None], "noise: one seed per video (B,)")
        b, (t, h, w) = len(noise), self.token_grid
        length = t * h * w
        device = self.transformer.bos.device
        gens = [torch.Generator().manual_seed(int(s)) for s in noise.tolist()]
        if prefix is None:
            prefix = self._prefix(frames, b)
        elif cfg.cond_frames and prefix.shape[1] < cfg.cond_frames:
            raise ValueError(f"prefix has {prefix.shape[1]} frame(s), the model conditions on {cfg.cond_frames}")
        codes = torch.zeros(b, t, h, w, dtype=torch.long, device=device)
        fixed = 0
        if prefix is not None:
            codes[:, : prefix.shape[1]] = prefix
            fixed = prefix.shape[1] * h * w
        cond = self.condition_tokens(codes)
        guided = guidance != 1 and cfg.cond_frames > 0
        if guided:
            cond = torch.cat([cond, torch.full_like(cond, self.transformer.null_token)])
        flat = codes.view(b, length)
        tr = self.transformer
        caches = tr.new_caches(tr.encode(cond)) if use_cache else None
        rows = 2 * b if guided else b
        for pos in progress_steps(range(length), length, "tokens"):
            if use_cache:
                prev = None if pos == 0 else flat[:, pos - 1]
                prev = prev.repeat(2) if guided and prev is not None else prev
                logits = tr.step(prev, pos, caches, rows)
            elif pos >= fixed:
                seq = flat.repeat(2, 1) if guided else flat
                logits = tr(seq, cond)[:, pos]
            if pos < fixed:
                continue
            if guided:
                c, u = logits.chunk(2)
                logits = u + guidance * (c - u)
            flat[:, pos] = draw(logits, gens, temperature, top_k).to(device)
        return codes

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, frames: torch.Tensor | None = None, temperature: float | None = None,
               top_k: int | None = None, guidance: float | None = None, use_cache: bool = True) -> torch.Tensor:
        codes = self.sample_codes(noise, frames, temperature, top_k, guidance, use_cache=use_cache)
        return self.vqgan.decode(codes).clamp(-1, 1)

    @torch.no_grad()
    def preview(self, noise: torch.Tensor, real) -> torch.Tensor:
        """Unconditional samples, or (prediction models) continuations of the first training clips."""
        if not self.config.cond_frames:
            return self.sample(noise)
        clips = real()[: len(noise)]
        return self.sample(noise, frames=clips[:, :, : self.config.cond_frames])


def draw(logits: torch.Tensor, generators: list[torch.Generator], temperature: float, top_k: int) -> torch.Tensor:
    """One token per row of ``logits (B, K)``, row i by inverse CDF with ``generators[i]`` (float64)."""
    logits = logits.double().cpu() / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = logits.softmax(-1).cumsum(-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(1).clamp_(max=logits.shape[1] - 1)
