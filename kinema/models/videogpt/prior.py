"""VideoGPT stage 2 -- an autoregressive transformer prior over the VQ-VAE's code grid.

Facts from the official code (wilson1yan/VideoGPT, ``videogpt/gpt.py``, ``videogpt/attention.py``):

- Input of position i: the frozen VQ-VAE codebook vector of code i-1 through
  ``Linear(embedding_dim, hidden, bias=False)`` (std 0.02) -- the sequence is right-shifted; position 0
  gets a learned start vector (official HEAD ``RightShift``, attention.py L513-530; ``model.start =
  "learned"``) or a zero vector (an older official version and earlier kinema; ``"zero"``, the dataclass
  default so that old checkpoints load) -- plus a factorised learned position embedding: one table per
  axis (T, H, W) of ``hidden / 3`` dims (init ``0.01 * randn``), broadcast and concatenated (widths that
  are not multiples of 3: see :func:`axis_widths`).
- Self-attention is full causal, or (``model.attention = "sparse"``) the official strided sparse layout
  computed as dense attention with a mask (same function, no speed-up).
- ``layers`` pre-norm blocks: LN -> causal self-attention -> dropout -> residual; [LN -> cross-attention
  to the conditioning frames' features -> dropout -> residual]; LN -> Linear(4x) -> GeLU2
  (``x * sigmoid(1.702 x)``) -> Linear -> dropout -> residual. Attention: q/k/v without bias,
  init std ``1/sqrt(dim)``; output with bias, std ``1/sqrt(dim * layers)``; attention dropout 0.3,
  residual dropout 0.2. Final LN, then ``Linear(hidden, codes, bias=False)`` initialised to zero.
- Class conditioning: every LN is conditional, ``g = 1 + W onehot``, ``b = W_b onehot`` (W init
  ``1/sqrt(classes)``). Frame conditioning: the first ``cond_frames`` frames of the training clip go
  through a conv net that downsamples space by 4 (official: a 3-D ResNet-34, 240 channels), get their own
  factorised position embedding, and every block reads them through cross-attention.
- Code defaults (not the paper's Table 9 sizes): hidden 576, 4 heads, 8 layers; Adam lr 3e-4 betas
  (0.9, 0.999), cosine schedule (gpt.py:162-183).
  The official sampler draws from softmax(logits); temperature and top-k are kinema additions.

Deviations, each a config option whose official value ``kinema convert videogpt_prior`` sets: the
conditioning encoder is by default a small residual conv net (``cond_layers`` blocks; ``model.cond_encoder =
"resnet34"``: the official ResNet-34, whose norms are per-sample layer norms); layer norm is by default the
standard one (``model.layer_norm = "official"``: the official adds its 1e-5 to the reciprocal square root, which
moves logits by ~1% relative when rows have a small variance, as the input embeddings at initialisation do).

Sampling "noise" is one int64 seed per video: video i is drawn with its own ``torch.Generator``
seeded with ``noise[i]``, so a video depends only on its seed, not on the batch it is drawn in.
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
from kinema.models.base import Capabilities, SecondStageModel, first_stage_loaded_alias
from kinema.models.videogpt.vqvae import VideoGPTVQVAE, VideoGPTVQVAEConfig, check_downsample
from kinema.nn import assert_shape
from kinema.nn.attention import MultiHeadAttention, sparse_causal_mask, strided_block_shape, strided_sparse_layout
from kinema.nn.convs import SamePadConv3d
from kinema.nn.noise import draw_seeds, draw_tokens
from kinema.progress import steps as progress_steps
from kinema.runs import first_stage_model_config


@dataclass
class VideoGPTPriorConfig:
    """Prior hyper-parameters (defaults: the official code's 576-wide, 8-layer transformer, gpt.py:177-179;
    the paper's sizes, Table 9, are in configs/videogpt_prior_{bair_64,ucf101_128}.toml).

    ``vqvae`` is the VQ-VAE run or checkpoint directory to train on. When a config is built, that
    checkpoint's model config is copied into ``vqvae_config`` (JSON); the prior's checkpoint stores it
    and the VQ-VAE weights, so loading a prior needs nothing else. ``frames``, ``resolution``,
    ``downsample`` and ``codebook_size`` must match the VQ-VAE (checked); without a VQ-VAE (a dry run)
    they describe a placeholder VQ-VAE of the default width.
    """

    name: Literal["videogpt_prior"] = "videogpt_prior"
    vqvae: str = ""
    vqvae_config: str = ""  # filled from `vqvae` automatically; do not edit
    frames: int = 16
    resolution: int = 64
    downsample: list[int] = field(default_factory=lambda: [4, 4, 4])
    codebook_size: int = 2048
    hidden: int = 576
    heads: int = 4
    layers: int = 8
    dropout: float = 0.2
    attn_dropout: float = 0.3
    cond_frames: int = 0  # > 0: condition on the first cond_frames frames (BAIR: 1)
    cond_hidden: int = 240
    cond_layers: int = 2
    # Conditioning-frame encoder: "small" = kinema's conv stem + cond_layers residual blocks (the default: what
    # kinema priors were trained with); "resnet34" = the official 3-D ResNet-34 (videogpt/resnet.py, built at
    # gpt.py:36-45; kinema/models/videogpt/resnet.py), what `kinema convert videogpt_prior` sets.
    cond_encoder: Literal["small", "resnet34"] = "small"
    # Layer norm: "torch" = (x - mean) / sqrt(var + 1e-5) (the default: what kinema priors were trained with);
    # "official" = (x - mean) * (1 / sqrt(var) + 1e-5), the official LayerNorm (videogpt/attention.py L563),
    # what `kinema convert videogpt_prior` sets (the two differ by ~1e-5 relative per norm).
    layer_norm: Literal["torch", "official"] = "torch"
    num_classes: int = 0  # > 0: class-conditional layer norms
    # Input of position 0: "learned" = a trained hidden-size vector (official HEAD, videogpt/attention.py
    # L513-530, RightShift.sos, init N(0, 0.02^2)); "zero" = a zero vector (what kinema used before; the
    # default, so that configs saved without this key -- every prior trained before it existed -- load as
    # they were trained; the shipped configs set "learned").
    start: Literal["learned", "zero"] = "zero"
    # Self-attention: "full" causal, or "sparse" = the official N-d strided layout (videogpt/attention.py
    # L250-454, `attn_type = "sparse"`; both released priors use it, README.md L116): block row r sees the
    # blocks r - sparse_local_blocks .. r and, along every block-grid axis but the last, the blocks before
    # it. Official defaults block = 32, num_local_blocks = 4 (attention.py L255).
    attention: Literal["full", "sparse"] = "full"
    sparse_block: int = 32
    sparse_local_blocks: int = 4
    temperature: float = 1.0  # sampling defaults of model.sample
    top_k: int = 0  # 0 = no top-k filtering

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        t, h, w = self.downsample
        return (self.frames // t, self.resolution // h, self.resolution // w)

    def vqvae_model_config(self) -> VideoGPTVQVAEConfig:
        """The VQ-VAE's config: the stored one, or a default-width placeholder matching this grid."""
        if self.vqvae_config:
            stored = json.loads(self.vqvae_config)
            for key in VideoGPTVQVAEConfig.MOVED_KEYS:  # training settings an earlier VQ-VAE config kept
                stored.pop(key, None)
            return build_dataclass(VideoGPTVQVAEConfig, stored, "model.vqvae_config")
        return VideoGPTVQVAEConfig(frames=self.frames, resolution=self.resolution, downsample=list(self.downsample),
                                   codebook_size=self.codebook_size)

    def validate(self) -> None:
        for key in ("frames", "resolution", "codebook_size", "hidden", "heads", "layers", "cond_hidden",
                    "temperature", "sparse_block", "sparse_local_blocks"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0, got {getattr(self, key)}")
        for key in ("cond_frames", "cond_layers", "num_classes", "top_k"):
            if getattr(self, key) < 0:
                raise ConfigError(f"model.{key} must be >= 0, got {getattr(self, key)}")
        check_downsample(self.downsample, (self.frames, self.resolution, self.resolution))
        if self.hidden % self.heads:
            raise ConfigError(f"model.hidden = {self.hidden} must be divisible by model.heads = {self.heads}; "
                              "e.g. 576 or 512 with 4 heads")
        if self.cond_frames and self.cond_hidden % self.heads:
            raise ConfigError(f"model.cond_hidden = {self.cond_hidden} must be divisible by model.heads = "
                              f"{self.heads}")
        if self.attention == "sparse":
            try:
                strided_block_shape(self.latent_shape, self.sparse_block)
            except ValueError as exc:
                raise ConfigError(f"model.attention = \"sparse\": {exc}; choose model.sparse_block (official: "
                                  "32) dividing the product of the code grid's trailing axes") from None
        if self.cond_frames > self.frames:
            raise ConfigError(f"model.cond_frames = {self.cond_frames} exceeds model.frames = {self.frames}")
        if self.cond_frames and self.resolution % 4:
            raise ConfigError(f"frame conditioning downsamples space by 4: model.resolution = {self.resolution} "
                              "must be a multiple of 4")
        if not 0 <= self.dropout < 1 or not 0 <= self.attn_dropout < 1:
            raise ConfigError("model.dropout and model.attn_dropout must be in [0, 1)")
        if self.top_k > self.codebook_size:
            raise ConfigError(f"model.top_k = {self.top_k} is larger than the codebook ({self.codebook_size} "
                              "codes); use 0 (no filtering) or a value <= codebook_size")
        if self.vqvae and not self.vqvae_config:
            self.vqvae_config = json.dumps(read_vqvae_config(self.vqvae))
        if self.vqvae_config:
            self.check_matches(self.vqvae_model_config())

    def check_matches(self, vq: VideoGPTVQVAEConfig) -> None:
        mine = (self.frames, self.resolution, self.resolution)
        theirs = (vq.frames, vq.resolution, vq.resolution)
        if mine != theirs or list(vq.downsample) != list(self.downsample) or vq.codebook_size != self.codebook_size:
            fmt = "x".join
            raise ConfigError(
                f"the prior's code grid does not match its VQ-VAE ({self.vqvae or 'model.vqvae_config'}): the VQ-VAE "
                f"encodes {fmt(map(str, theirs))} clips into a {fmt(map(str, vq.latent_shape))} grid of "
                f"{vq.codebook_size} codes (downsample {list(vq.downsample)}), the prior expects "
                f"{fmt(map(str, mine))} clips -> {fmt(map(str, self.latent_shape))} grid of {self.codebook_size} "
                f"codes (downsample {list(self.downsample)}). Set model.frames={vq.frames}, "
                f"model.resolution={vq.resolution}, model.downsample={list(vq.downsample)}, "
                f"model.codebook_size={vq.codebook_size}, or point model.vqvae at a matching VQ-VAE")


def read_vqvae_config(path: str | Path) -> dict:
    """The model section of a VQ-VAE checkpoint's config.json; clear errors for a missing/wrong one."""
    return first_stage_model_config(path, "vqvae", "videogpt_vqvae", "VideoGPT VQ-VAE", "VQ-VAE",
                                    "configs/videogpt_vqvae_tiny.toml")


# --------------------------------------------------------------------------- transformer


class GeLU2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.Module):
    """Layer norm; class-conditional (``g = 1 + W onehot, b = W_b onehot``) when ``classes > 0``."""

    def __init__(self, dim: int, classes: int = 0, official: bool = False) -> None:
        super().__init__()
        self.classes = classes
        self.official = official  # model.layer_norm = "official": eps outside the square root
        if classes:
            self.w = nn.Linear(classes, dim, bias=False)
            nn.init.constant_(self.w.weight, 1 / math.sqrt(classes))
            self.wb = nn.Linear(classes, dim, bias=False)
        else:
            self.g = nn.Parameter(torch.ones(dim))
            self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, L, dim)``, ``onehot (B, classes)`` when conditional."""
        if self.official:  # official attention.py L560-563
            xf = x.float()
            centred = xf - xf.mean(-1, keepdim=True)
            y = centred * (1e-5 + centred.square().mean(-1, keepdim=True).rsqrt())
        else:
            y = F.layer_norm(x.float(), x.shape[-1:], eps=1e-5)
        if self.classes:
            g, b = 1 + self.w(onehot)[:, None], self.wb(onehot)[:, None]
        else:
            g, b = self.g, self.b
        return (y * g + b).to(x.dtype)


def axis_widths(dim: int) -> list[int]:
    """Widths of the T, H, W position tables: ``dim // 3`` each, the remainder to the first ones
    (512 -> 171, 171, 170). The official ``AddBroadcastPosEmbed`` asserts ``dim % 3 == 0``
    (videogpt/attention.py L467), so it cannot build the paper's 512-wide BAIR prior (Table 9); the uneven
    split is kinema's choice and gives the official tables whenever ``dim`` is a multiple of 3."""
    return [dim // 3 + (i < dim % 3) for i in range(3)]


class PositionEmbedding(nn.Module):
    """Factorised learned embedding of a ``(t, h, w)`` grid, flattened T-major: ``(t*h*w, dim)``."""

    def __init__(self, shape: tuple[int, int, int], dim: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.tables = nn.ParameterList(nn.Parameter(torch.randn(s, c) * 0.01) for s, c in zip(shape, axis_widths(dim)))

    def forward(self) -> torch.Tensor:
        t, h, w = self.shape
        et, eh, ew = self.tables
        grid = torch.cat([et[:, None, None].expand(t, h, w, -1), eh[None, :, None].expand(t, h, w, -1),
                          ew[None, None, :].expand(t, h, w, -1)], dim=-1)
        return grid.reshape(t * h * w, -1)


class Block(nn.Module):
    """Pre-norm transformer block; ``cache`` (dict) holds this layer's keys/values when decoding."""

    def __init__(self, cfg: VideoGPTPriorConfig) -> None:
        super().__init__()
        d, c, official = cfg.hidden, cfg.num_classes, cfg.layer_norm == "official"
        self.attn_dropout = cfg.attn_dropout
        self.norm_attn = LayerNorm(d, c, official)
        self.attn = MultiHeadAttention(d, d, cfg.heads, cfg.layers)
        if cfg.cond_frames:
            self.norm_cross = LayerNorm(d, c, official)
            self.cross = MultiHeadAttention(d, cfg.cond_hidden, cfg.heads, cfg.layers)
        self.norm_fc = LayerNorm(d, c, official)
        self.fc = nn.Sequential(nn.Linear(d, 4 * d), GeLU2(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def self_attention(self, h: torch.Tensor, cache: dict | None, pos: int | None,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: None = causal; else the boolean (sparse) mask of these queries over the keys so far."""
        attn = self.attn
        q, k, v = attn.split(attn.q(h)), attn.split(attn.k(h)), attn.split(attn.v(h))  # (B, heads, L, c)
        if cache is None:  # training / full pass: causal (or the sparse mask) over the whole sequence
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.attn_dropout if self.training else 0.0)
        else:  # decoding one position: keys/values of positions 0..pos
            if "k" not in cache:  # allocated on first use, in the dtype autocast gives k and v
                shape = (*k.shape[:2], cache["length"], k.shape[-1])
                cache["k"], cache["v"] = k.new_zeros(shape), v.new_zeros(shape)
            cache["k"][:, :, pos : pos + 1] = k
            cache["v"][:, :, pos : pos + 1] = v
            a = F.scaled_dot_product_attention(q, cache["k"][:, :, : pos + 1], cache["v"][:, :, : pos + 1],
                                               attn_mask=mask)
        return attn.merge(a)

    def forward(self, x, onehot=None, cond=None, cache: dict | None = None, pos: int | None = None, mask=None):
        x = x + self.drop(self.self_attention(self.norm_attn(x, onehot), cache, pos, mask))
        if cond is not None:
            h = self.norm_cross(x, onehot)
            x = x + self.drop(self.cross(h, cond))  # no attention dropout here (official enc_attn)
        return x + self.drop(self.fc(self.norm_fc(x, onehot)))


class FrameEncoder(nn.Module):
    """Conditioning frames ``(B, 3, n, H, W)`` -> features ``(B, n*H/4*W/4, cond_hidden)``."""

    def __init__(self, cfg: VideoGPTPriorConfig) -> None:
        super().__init__()
        c = cfg.cond_hidden
        self.stem = nn.Sequential(SamePadConv3d(3, c, (1, 4, 4), stride=(1, 2, 2)), nn.ReLU(),
                                  SamePadConv3d(c, c, (1, 4, 4), stride=(1, 2, 2)))
        self.blocks = nn.ModuleList(nn.Sequential(nn.ReLU(), SamePadConv3d(c, c, 3), nn.ReLU(), SamePadConv3d(c, c, 1))
                                    for _ in range(cfg.cond_layers))
        self.pos = PositionEmbedding((cfg.cond_frames, cfg.resolution // 4, cfg.resolution // 4), c)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        h = self.stem(frames)
        for block in self.blocks:
            h = h + block(h)
        return F.relu(h).flatten(2).transpose(1, 2) + self.pos()


class ResNetFrameEncoder(nn.Module):
    """``model.cond_encoder = "resnet34"``: the official ResNet-34 + its own factorised position embedding
    (gpt.py:36-45, :120-126): ``(B, 3, n, H, W)`` -> ``(B, n*H/4*W/4, cond_hidden)``."""

    def __init__(self, cfg: VideoGPTPriorConfig) -> None:
        super().__init__()
        from kinema.models.videogpt.resnet import ResNet34

        self.net = ResNet34(cfg.cond_hidden)
        self.pos = PositionEmbedding((cfg.cond_frames, cfg.resolution // 4, cfg.resolution // 4), cfg.cond_hidden)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames).flatten(1, 3) + self.pos()


class PriorTransformer(nn.Module):
    """Logits over codes for every position of the flattened (T-major) code grid."""

    def __init__(self, cfg: VideoGPTPriorConfig, embedding_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.fc_in = nn.Linear(embedding_dim, cfg.hidden, bias=False)
        nn.init.normal_(self.fc_in.weight, std=0.02)
        # official HEAD RightShift (videogpt/attention.py L513-530): a learned start vector after fc_in
        self.sos = nn.Parameter(torch.randn(cfg.hidden) * 0.02) if cfg.start == "learned" else None
        if cfg.attention == "sparse":  # block layout (not saved: it follows from the config)
            self.register_buffer("layout", strided_sparse_layout(cfg.latent_shape, cfg.sparse_block,
                                                                 cfg.sparse_local_blocks), persistent=False)
        else:
            self.layout = None
        self.pos = PositionEmbedding(cfg.latent_shape, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = LayerNorm(cfg.hidden, cfg.num_classes, cfg.layer_norm == "official")
        self.fc_out = nn.Linear(cfg.hidden, cfg.codebook_size, bias=False)
        nn.init.zeros_(self.fc_out.weight)
        encoder = ResNetFrameEncoder if cfg.cond_encoder == "resnet34" else FrameEncoder
        self.frame_encoder = encoder(cfg) if cfg.cond_frames else None

    def forward(self, inputs: torch.Tensor, onehot=None, cond=None) -> torch.Tensor:
        """``inputs (B, L, embedding_dim)`` = codebook vectors of the codes (not yet shifted) ->
        logits ``(B, L, codes)``; the logits of position i depend on inputs ``< i`` only."""
        if self.sos is None:
            x = self.fc_in(F.pad(inputs[:, :-1], (0, 0, 1, 0)))  # right shift: position i sees code i-1
        else:
            x = self.fc_in(inputs[:, :-1])
            x = torch.cat([self.sos.to(x.dtype).expand(len(x), 1, -1), x], dim=1)
        length = x.shape[1]
        x = x + self.pos()[:length]
        mask = None if self.layout is None else \
            sparse_causal_mask(self.layout, self.cfg.sparse_block, slice(0, length), length)
        for block in self.blocks:
            x = block(x, onehot, cond, mask=mask)
        return self.fc_out(self.norm(x, onehot))

    def step(self, prev: torch.Tensor | None, pos: int, caches: list[dict], onehot=None, cond=None) -> torch.Tensor:
        """Decode position ``pos`` with key/value caches: ``prev (B, embedding_dim)`` is code pos-1's
        vector (None at pos 0) -> logits ``(B, codes)``."""
        if prev is None and self.sos is not None:
            x = self.sos.expand(caches[0]["batch"], 1, -1)
        elif prev is None:
            x = torch.zeros(caches[0]["batch"], 1, self.cfg.hidden, device=self.fc_in.weight.device)
        else:
            x = self.fc_in(prev[:, None])
        x = x + self.pos()[pos : pos + 1]
        mask = None if self.layout is None else \
            sparse_causal_mask(self.layout, self.cfg.sparse_block, slice(pos, pos + 1), pos + 1)
        for block, cache in zip(self.blocks, caches):
            x = block(x, onehot, cond, cache, pos, mask)
        return self.fc_out(self.norm(x, onehot))[:, 0]

    def new_caches(self, batch: int) -> list[dict]:
        """Empty key/value caches, one per block (filled by :meth:`step`)."""
        return [{"batch": batch, "length": math.prod(self.cfg.latent_shape)} for _ in self.blocks]


# --------------------------------------------------------------------------- model


class VideoGPTPrior(SecondStageModel):
    """Frozen VQ-VAE (``self.vqvae``) + trainable transformer (``self.transformer``).

    ``logits(codes)`` for training; ``sample(noise)`` -> videos ``(B, 3, T, H, W)``; ``sample_codes``
    for codes (optionally with conditioning ``frames`` or a fixed code ``prefix``).
    """

    default_objective = "likelihood"
    vqvae_loaded = first_stage_loaded_alias()

    def __init__(self, config: VideoGPTPriorConfig) -> None:
        super().__init__()
        self.config = config
        vq_config = config.vqvae_model_config()
        config.check_matches(vq_config)
        self.attach_first_stage("vqvae", VideoGPTVQVAE(vq_config), config.vqvae, config.vqvae_config, "VQ-VAE")
        self.transformer = PriorTransformer(config, vq_config.embedding_dim)

    def parameter_counts(self) -> dict[str, int]:
        """The trained transformer apart from the frozen VQ-VAE (a placeholder until model.vqvae is set)."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        frozen = "vqvae (frozen)" if self.config.vqvae or self.config.vqvae_config else \
            "vqvae (placeholder until model.vqvae is set; not trained)"
        return {"transformer (trained)": count(self.transformer), frozen: count(self.vqvae), "total": count(self)}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    @property
    def token_grid(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def check_trainable(self) -> None:
        """Raise :class:`ConfigError` unless the frozen VQ-VAE this prior models has trained weights."""
        cfg = self.config
        if not cfg.vqvae and not cfg.vqvae_config:
            raise ConfigError(
                "model.vqvae is empty: the prior is trained on the codes of a trained VQ-VAE. Train one first "
                "(kinema train --config configs/videogpt_vqvae_tiny.toml --out RUN1), then pass "
                "--set model.vqvae=RUN1")

    # ------------------------------------------------------------------ conditioning

    def _onehot(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        c = self.config.num_classes
        if not c:
            return None
        if labels is None:
            raise ValueError(f"this prior is class-conditional (model.num_classes = {c}): pass labels (B,)")
        assert_shape(labels, [batch], "labels (B,)")
        return F.one_hot(labels.long(), c).float()

    def _cond(self, frames: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        cfg = self.config
        if not cfg.cond_frames:
            return None
        if frames is None:
            raise ValueError(f"this prior is frame-conditional (model.cond_frames = {cfg.cond_frames}): pass the "
                             "conditioning frames (kinema sample --condition VIDEO)")
        assert_shape(frames, [batch, 3, cfg.cond_frames, cfg.resolution, cfg.resolution],
                     "conditioning frames (B, 3, cond_frames, resolution, resolution)")
        return self.transformer.frame_encoder(frames)

    # ------------------------------------------------------------------ training

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> flattened codes ``(B, t*h*w)`` from the frozen VQ-VAE."""
        assert_shape(video, [None, *self.video_shape], "video (B, C, T, H, W)")
        return self.vqvae.encode(video).flatten(1)

    def logits(self, codes: torch.Tensor, frames: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Flattened codes ``(B, L)`` -> logits ``(B, L, codes)``; ``frames``: conditioning frames."""
        assert_shape(codes, [None, math.prod(self.latent_shape)], "codes (B, t*h*w)")
        inputs = F.embedding(codes, self.vqvae.codebook.embeddings)
        return self.transformer(inputs, self._onehot(labels, len(codes)), self._cond(frames, len(codes)))

    def loss(self, video: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood per code (nats) of ``video (B, 3, T, H, W)``."""
        self.check_first_stage_loaded()
        codes = self.encode(video)
        frames = video[:, :, : self.config.cond_frames] if self.config.cond_frames else None
        logits = self.logits(codes, frames, labels)
        return F.cross_entropy(logits.float().flatten(0, 1), codes.flatten())

    # ------------------------------------------------------------------ sampling

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """One int64 seed per video, ``(n,)``."""
        return draw_seeds(n, generator, device if device is not None else self.device)

    @torch.no_grad()
    def sample_codes(self, noise: torch.Tensor, frames: torch.Tensor | None = None,
                     labels: torch.Tensor | None = None, temperature: float | None = None,
                     top_k: int | None = None, prefix: torch.Tensor | None = None,
                     use_cache: bool = True) -> torch.Tensor:
        """Codes ``(B, t, h, w)`` for seeds ``noise (B,)``.

        ``frames``: conditioning frames ``(B, 3, cond_frames, H, W)`` (frame-conditional priors);
        ``prefix (B, P)``: the first P flattened codes are fixed instead of sampled. ``use_cache=False``
        recomputes the whole sequence at every position (slow; for checking the cache).
        """
        cfg = self.config
        temperature = cfg.temperature if temperature is None else temperature
        top_k = cfg.top_k if top_k is None else top_k
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= top_k <= cfg.codebook_size:
            raise ValueError(f"top_k = {top_k} is larger than the codebook ({cfg.codebook_size} codes); use "
                             f"0 (no filtering) or 1..{cfg.codebook_size}")
        assert_shape(noise, [None], "noise: one seed per video (B,)")
        b, length = len(noise), math.prod(self.latent_shape)
        device = self.vqvae.codebook.embeddings.device
        gens = [torch.Generator().manual_seed(int(s)) for s in noise.tolist()]
        onehot, cond = self._onehot(labels, b), self._cond(frames, b)
        codes = torch.zeros(b, length, dtype=torch.long, device=device)
        fixed = 0
        if prefix is not None:
            assert_shape(prefix, [b, None], "prefix codes (B, P)")
            fixed = prefix.shape[1]
            codes[:, :fixed] = prefix
        table = self.vqvae.codebook.embeddings
        caches = self.transformer.new_caches(b) if use_cache else None
        for pos in progress_steps(range(length), length, "tokens"):
            if use_cache:  # fixed prefix positions still run: they fill the caches
                prev = table[codes[:, pos - 1]] if pos > 0 else None
                logits = self.transformer.step(prev, pos, caches, onehot, cond)
            elif pos >= fixed:
                logits = self.transformer(F.embedding(codes[:, : pos + 1], table), onehot, cond)[:, pos]
            if pos < fixed:
                continue
            codes[:, pos] = draw_tokens(logits, gens, temperature, top_k).to(device)
        return codes.view(b, *self.latent_shape)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, frames: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               temperature: float | None = None, top_k: int | None = None,
               prefix: torch.Tensor | None = None, use_cache: bool = True) -> torch.Tensor:
        """Videos ``(B, 3, T, H, W)`` in [-1, 1] decoded from sampled codes (see :meth:`sample_codes`)."""
        codes = self.sample_codes(noise, frames, labels, temperature, top_k, prefix, use_cache)
        return self.vqvae.decode(codes).clamp(-1, 1)

    @torch.no_grad()
    def preview(self, noise: torch.Tensor, real) -> torch.Tensor:
        """Trainer sample grid: unconditional samples, or (frame-conditional) continuations of real clips."""
        if not self.config.cond_frames:
            return self.sample(noise)
        clips = real()[: len(noise)]
        return self.sample(noise, frames=clips[:, :, : self.config.cond_frames])

    @property
    def capabilities(self) -> Capabilities:
        """``context_frames``: frames a frame-conditional prior starts from (``cond_frames``; 0: unconditional)."""
        conditions = {"frames"} | ({"labels"} if self.config.num_classes else set())
        return Capabilities(conditions=frozenset(conditions), unconditional=not self.config.cond_frames,
                            context_frames=self.config.cond_frames)
