"""NÜWA stage 2 -- a 3DNA encoder-decoder transformer over per-frame VQ-GAN tokens (Wu et al. 2021,
arXiv 2111.12417). No official code exists; the paper facts below come from secondary notes quoting §3
and §4.1 (unverified against the PDF, see docs/models/nuwa.md).

- The target video is a ``(T, h, w)`` grid of tokens of the frozen per-frame VQ-GAN (:mod:`.vqgan`),
  flattened T-major. The decoder input at cell ``p`` is the embedding of the token at ``p - 1`` (a
  learned ``<bos>`` vector at ``p = 0``) plus a position embedding: three learned per-axis tables
  (T, H, W) summed (paper: per-axis tables added to condition and target; lucidrains/nuwa-pytorch
  ``nuwa_pytorch.py`` L1786-1790 sums axial tables too).
- Encoder: the condition on its own grid, by task (``model.tasks``): the first ``cond_frames`` frames'
  tokens ``(k, h, w)`` (``prediction``), the learned "None" token on a ``(1, 1, 1)`` grid
  (``unconditional``; the paper's V2V pre-training uses a constant "None" condition), the caption's word
  ids on a ``(1, 1, text_length)`` grid (``text``, :mod:`.text`), or per-frame segmentation masks on the
  target's token grid ``(T, h, w)`` (``sketch``: each ``downsample x downsample`` patch of the one-hot mask
  embedded by one linear layer -- kinema's stand-in for the paper's VQ-GAN-Seg tokens). One encoder and
  decoder serve every task (multi-task training, objective ``nuwa``'s ``task_mixing``); per task only the
  input embedding, the position tables and the 3DNA grids differ. Non-causal 3DNA self-attention.
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
from kinema.models.base import Capabilities, SecondStageModel, first_stage_loaded_alias
from kinema.models.nuwa.attention import NearbyAttention, Neighbourhood, check_extent, make_neighbourhood
from kinema.models.nuwa.text import PAD, SPECIALS, encode_texts, vocabulary_from_family
from kinema.models.nuwa.vqgan import NUWAVQGAN, NUWAVQGANConfig
from kinema.nn import assert_shape
from kinema.nn.noise import draw_seeds, draw_tokens
from kinema.progress import steps as progress_steps
from kinema.runs import first_stage_model_config


TASKS = ("unconditional", "prediction", "text", "sketch")
KIND = {"unconditional": "frames", "prediction": "frames", "text": "text", "sketch": "sketch"}  # condition kind


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
    # Tasks of one model (subset of TASKS); empty: ["prediction"] if cond_frames else ["unconditional"]
    tasks: list[str] = field(default_factory=list)
    text_length: int = 8  # words per caption on the (1, 1, text_length) grid (<pad>-filled; longer: cut)
    text_vocab: list[str] = field(default_factory=list)  # filled from `captions_from` when "text" is a task
    captions_from: str = "captioned_shapes"  # synthetic family whose captions make the vocabulary
    caption_clips: int = 2000  # clips of `captions_from` read for the vocabulary
    sketch_classes: int = 3  # mask values 0..sketch_classes-1 (captioned_shapes: background, circle, square)

    @property
    def task_list(self) -> list[str]:
        return list(self.tasks) or (["prediction"] if self.cond_frames else ["unconditional"])

    @property
    def text_grid(self) -> tuple[int, int, int]:
        return (1, 1, self.text_length)

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
        tasks = self.task_list
        if any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
            raise ConfigError(f"model.tasks = {self.tasks}: each of {', '.join(TASKS)} at most once")
        if "prediction" in tasks and not self.cond_frames:
            raise ConfigError("model.tasks has 'prediction', which needs model.cond_frames >= 1 (the given frames)")
        if self.cond_frames and "prediction" not in tasks:
            raise ConfigError(f"model.cond_frames = {self.cond_frames} conditions on frames, but model.tasks = "
                              f"{self.tasks} has no 'prediction'; add it or set model.cond_frames = 0")
        if self.text_length <= 0 or self.sketch_classes < 2 or self.caption_clips <= 0:
            raise ConfigError("model.text_length and model.caption_clips must be > 0 and model.sketch_classes >= 2")
        if "text" in tasks and not self.text_vocab:
            try:
                self.text_vocab = vocabulary_from_family(self.captions_from, self.caption_clips, self.frames,
                                                         self.resolution)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.text_vocab and list(self.text_vocab[:2]) != list(SPECIALS):
            raise ConfigError(f"model.text_vocab must start with {list(SPECIALS)}, got {self.text_vocab[:3]}")
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
        if "sketch" in tasks:
            checks += [("cross_extent", self.cross_extent, [1, 1, 1], self.token_grid, "centred"),
                       ("encoder_extent", self.encoder_extent, [1, 1, 1], self.token_grid, "centred")]
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


@dataclass(frozen=True)
class ConditionSpec:
    """One condition kind's grid and 3DNA neighbourhoods (encoder self-attention, decoder cross-attention)."""

    grid: tuple[int, int, int]
    encoder: Neighbourhood
    cross: Neighbourhood


def condition_specs(cfg: NUWAConfig) -> dict[str, ConditionSpec]:
    """Per condition kind: ``frames`` (the first ``cond_frames`` frames' tokens, or the single "None" cell),
    ``text`` (``(1, 1, text_length)``, every word seen by every query) and ``sketch`` (the target's grid)."""
    def nb(extent):
        return make_neighbourhood(extent, (1, 1, 1), cfg.extent_unit, "centred")

    whole = [0, 0, 0]
    local = bool(cfg.cond_frames)
    specs = {"frames": ConditionSpec(cfg.cond_grid, nb(cfg.encoder_extent if local else whole),
                                     nb(cfg.cross_extent if local else whole))}
    if "text" in cfg.task_list:
        specs["text"] = ConditionSpec(cfg.text_grid, nb(whole), nb(whole))
    if "sketch" in cfg.task_list:
        specs["sketch"] = ConditionSpec(cfg.token_grid, nb(cfg.encoder_extent), nb(cfg.cross_extent))
    return specs


class EncoderBlock(nn.Module):
    def __init__(self, cfg: NUWAConfig) -> None:
        super().__init__()
        d, grid = cfg.hidden, cfg.cond_grid
        self.specs = condition_specs(cfg)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = NearbyAttention(d, cfg.heads, grid, grid, self.specs["frames"].encoder, dropout=cfg.dropout,
                                    block_frames=cfg.block_frames)
        self.ff = FeedForward(d, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, kind: str = "frames") -> torch.Tensor:
        spec = self.specs[kind]
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, spec.grid, spec.grid, spec.encoder))
        return x + self.drop(self.ff(self.norm2(x)))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: NUWAConfig) -> None:
        super().__init__()
        d, grid = cfg.hidden, cfg.token_grid
        self_nb = make_neighbourhood(cfg.self_extent, cfg.self_dilation, cfg.extent_unit, cfg.causal_window, True)
        self.specs = condition_specs(cfg)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = NearbyAttention(d, cfg.heads, grid, grid, self_nb, dropout=cfg.dropout,
                                    block_frames=cfg.block_frames)
        self.cross = NearbyAttention(d, cfg.heads, grid, cfg.cond_grid, self.specs["frames"].cross,
                                     dropout=cfg.dropout, block_frames=cfg.block_frames)
        self.ff = FeedForward(d, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, enc: torch.Tensor, kind: str = "frames") -> torch.Tensor:
        spec = self.specs[kind]
        x = x + self.drop(self.attn(self.norm1(x)))
        x = x + self.drop(self.cross(self.norm2(x), enc, None, spec.grid, spec.cross))
        return x + self.drop(self.ff(self.norm3(x)))

    def step(self, x: torch.Tensor, pos: int, cache: dict) -> torch.Tensor:
        x = x + self.attn.step(self.norm1(x), pos, cache["self"])
        x = x + self.cross.step(self.norm2(x), pos, cache["cross"])
        return x + self.ff(self.norm3(x))


class NUWATransformer(nn.Module):
    """Condition (``kind`` "frames": tokens ``(B, L_c)``, index ``codebook_size`` = the "None" token;
    "text": word ids ``(B, text_length)``; "sketch": masks ``(B, T, H, W)`` long) and target tokens
    ``(B, L)`` -> logits ``(B, L, codebook_size)``; logits at cell ``p`` depend on targets ``< p`` only."""

    def __init__(self, cfg: NUWAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.embed = nn.Embedding(cfg.codebook_size + 1, d)  # + the "None" token
        nn.init.normal_(self.embed.weight, std=0.02)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.enc_pos = AxialPosition(cfg.cond_grid, d)  # the "frames" condition's grid
        self.dec_pos = AxialPosition(cfg.token_grid, d)
        if "text" in cfg.task_list:
            self.text_embed = nn.Embedding(len(cfg.text_vocab), d)
            nn.init.normal_(self.text_embed.weight, std=0.02)
            self.text_pos = AxialPosition(cfg.text_grid, d)
        if "sketch" in cfg.task_list:
            self.sketch_embed = nn.Linear(cfg.sketch_classes * cfg.downsample**2, d)
            self.sketch_pos = AxialPosition(cfg.token_grid, d)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.encoder_layers))
        self.enc_norm = nn.LayerNorm(d)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.to_logits = nn.Linear(d, cfg.codebook_size, bias=False)

    @property
    def null_token(self) -> int:
        return self.cfg.codebook_size

    def embed_condition(self, cond: torch.Tensor, kind: str, drop: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L_c, hidden)`` with position tables; ``drop (B,)`` rows become the "None" condition (frames:
        "None" tokens; text: the empty caption, all ``<pad>``; sketch: the "None" embedding in every cell)."""
        cfg = self.cfg
        if kind == "frames":
            if drop is not None:
                cond = torch.where(drop[:, None], torch.full_like(cond, self.null_token), cond)
            return self.embed(cond) + self.enc_pos()
        if kind == "text":
            if drop is not None:
                cond = torch.where(drop[:, None], torch.full_like(cond, cfg.text_vocab.index(PAD)), cond)
            return self.text_embed(cond) + self.text_pos()
        if kind == "sketch":
            t, h, w = cfg.token_grid
            f, c = cfg.downsample, cfg.sketch_classes
            onehot = F.one_hot(cond.long(), c).to(self.bos.dtype)  # (B, T, H, W, C)
            patches = onehot.view(len(cond), t, h, f, w, f, c).permute(0, 1, 2, 4, 3, 5, 6).flatten(4)
            x = self.sketch_embed(patches).flatten(1, 3)  # (B, T*h*w, hidden)
            if drop is not None:
                x = torch.where(drop[:, None, None], self.embed.weight[self.null_token].expand_as(x), x)
            return x + self.sketch_pos()
        raise ValueError(f"unknown condition kind {kind!r}")

    def encode(self, cond: torch.Tensor, kind: str = "frames", drop: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_condition(cond, kind, drop)
        for block in self.encoder:
            x = block(x, kind)
        return self.enc_norm(x)

    def inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """Decoder inputs ``(B, L, hidden)``: ``<bos>``, then the embeddings of tokens ``0..L-2`` (right shift)."""
        return torch.cat([self.bos.expand(len(codes), 1, -1), self.embed(codes[:, :-1])], dim=1)

    def decode(self, inputs: torch.Tensor, enc: torch.Tensor, kind: str = "frames") -> torch.Tensor:
        """Decoder inputs (see :meth:`inputs`) and encoder output -> logits ``(B, L, codes)``."""
        x = inputs + self.dec_pos()
        for block in self.decoder:
            x = block(x, enc, kind)
        return self.to_logits(self.norm(x))

    def forward(self, codes: torch.Tensor, cond: torch.Tensor, kind: str = "frames",
                drop: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.inputs(codes), self.encode(cond, kind, drop), kind)

    def new_caches(self, enc: torch.Tensor, kind: str = "frames") -> list[dict]:
        """Per decoder layer: an empty self-attention cache and the condition's keys/values."""
        caches = []
        for block in self.decoder:
            k, v = block.cross.keys_values(enc)
            spec = block.specs[kind]
            caches.append({"self": {}, "cross": {"k": k, "v": v, "k_shape": spec.grid, "nb": spec.cross}})
        return caches

    def step(self, prev: torch.Tensor | None, pos: int, caches: list[dict], batch: int) -> torch.Tensor:
        """Logits ``(B, codes)`` of cell ``pos`` given the token of cell ``pos - 1`` (``prev (B,)``)."""
        x = self.bos.expand(batch, 1, -1) if prev is None else self.embed(prev[:, None])
        x = x + self.dec_pos()[pos : pos + 1]
        for block, cache in zip(self.decoder, caches):
            x = block.step(x, pos, cache)
        return self.to_logits(self.norm(x))[:, 0]


# --------------------------------------------------------------------------- model


class NUWA(SecondStageModel):
    """Frozen per-frame VQ-GAN (``self.vqgan``, without its discriminator) + trainable transformer."""

    default_objective = "nuwa"
    vqgan_loaded = first_stage_loaded_alias()

    def __init__(self, config: NUWAConfig) -> None:
        super().__init__()
        self.config = config
        vq_config = config.vqgan_model_config()
        config.check_matches(vq_config)
        vqgan = NUWAVQGAN(vq_config)
        del vqgan.discriminator  # training-only; not part of a NÜWA checkpoint
        self.attach_first_stage("vqgan", vqgan, config.vqgan, config.vqgan_config, "VQ-GAN", skip=("discriminator.",))
        self.transformer = NUWATransformer(config)

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
        """``frames``: a prediction model continues its first ``cond_frames`` frames (``context_frames``, read by
        the prediction protocols and by FVD & co. of a model without the unconditional task); any NÜWA takes
        given frames as a token prefix (``--condition``), which is not prediction when ``cond_frames = 0``."""
        prediction = "prediction" in self.tasks
        return Capabilities(conditions=frozenset({"frames"} | ({"text"} if "text" in self.tasks else set())),
                            unconditional="unconditional" in self.tasks,
                            context_frames=self.config.cond_frames if prediction else 0)

    def check_trainable(self) -> None:
        if not self.config.vqgan and not self.config.vqgan_config:
            raise ConfigError("model.vqgan is empty: NÜWA is trained on the tokens of a trained VQ-GAN. Train one "
                              "first (kinema train --config nuwa_vqgan_tiny --out RUN1), then pass "
                              "--set model.vqgan=RUN1")
        self.check_first_stage_loaded()

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T', H, W)`` -> tokens ``(B, T', h, w)`` (any number of frames)."""
        return self.vqgan.encode(video)

    def condition_tokens(self, codes: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """The "frames" encoder input ``(B, L_c)``: the first ``cond_frames`` frames of ``codes (B, T, h, w)``
        (or the "None" token), with ``drop`` rows replaced by "None" tokens."""
        b, k = len(codes), self.config.cond_frames
        null = self.transformer.null_token
        if not k:
            return torch.full((b, 1), null, dtype=torch.long, device=codes.device)
        cond = codes[:, :k].flatten(1)
        if drop is not None:
            cond = torch.where(drop[:, None], torch.full_like(cond, null), cond)
        return cond

    @property
    def tasks(self) -> list[str]:
        """The tasks this model was trained for (``model.tasks``; see :data:`TASKS`)."""
        return self.config.task_list

    def text_ids(self, texts: list[str], report: bool = True) -> torch.Tensor:
        """Captions -> word ids ``(B, text_length)`` (unknown words -> ``<unk>``, reported)."""
        if "text" not in self.tasks:
            raise ValueError(f"this NÜWA was trained without text (model.tasks = {self.tasks}): it cannot follow a "
                             "prompt; sample without --text, or train with model.tasks including \"text\" (e.g. "
                             "configs/nuwa_tiny_text.toml)")
        return encode_texts(list(texts), self.config.text_vocab, self.config.text_length, report).to(self.device)

    def check_masks(self, masks: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """Per-frame masks ``(B, T, H, W)`` with values in ``0..sketch_classes-1`` -> long; clear errors."""
        cfg = self.config
        if "sketch" not in self.tasks:
            raise ValueError(f"this NÜWA was trained without sketches (model.tasks = {self.tasks}): sample without "
                             "--sketch, or train with model.tasks including \"sketch\" (configs/nuwa_tiny_sketch.toml)")
        want = (cfg.frames, cfg.resolution, cfg.resolution)
        if masks.dim() != 4 or tuple(masks.shape[1:]) != want or (rows is not None and len(masks) != rows):
            raise ValueError(f"sketch masks have shape {tuple(masks.shape)}; this NÜWA needs (B, T, H, W) = "
                             f"({rows if rows is not None else 'B'}, {want[0]}, {want[1]}, {want[2]}): one mask per "
                             f"frame ({cfg.frames} frames) at the model's resolution")
        if masks.is_floating_point() or masks.dtype == torch.bool:
            raise ValueError(f"sketch masks must be integer class ids, got {masks.dtype}")
        lo, hi = int(masks.min()), int(masks.max())
        if lo < 0 or hi >= cfg.sketch_classes:
            raise ValueError(f"sketch mask values must be in 0..{cfg.sketch_classes - 1} (model.sketch_classes), got "
                             f"{lo}..{hi}")
        return masks.long().to(self.device)

    def condition(self, task: str, codes: torch.Tensor, text: list[str] | None = None,
                  masks: torch.Tensor | None = None) -> tuple[str, torch.Tensor]:
        """``(kind, condition)`` for the encoder (:meth:`NUWATransformer.encode`) of ``task`` on a batch with
        target tokens ``codes (B, T, h, w)``, captions ``text`` and masks ``(B, T, H, W)``."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r}: this NÜWA was trained for {', '.join(self.tasks)} (model.tasks)")
        b = len(codes)
        if task == "unconditional":
            null = self.transformer.null_token
            return "frames", torch.full_like(self.condition_tokens(codes), null)
        if task == "prediction":
            return "frames", self.condition_tokens(codes)
        if task == "text":
            if text is None:
                raise ValueError("the text task needs captions (Batch.text): train on captioned data, e.g. "
                                 "data.family = \"captioned_shapes\"")
            return "text", self.text_ids(text, report=False)
        if masks is None:
            raise ValueError("the sketch task needs per-frame masks (Batch.masks): train on data with masks, e.g. "
                             "data.family = \"captioned_shapes\"")
        return "sketch", self.check_masks(masks, b)

    def logits(self, codes: torch.Tensor, drop: torch.Tensor | None = None, task: str | None = None,
               text: list[str] | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``(B, T, h, w)`` -> logits ``(B, T*h*w, codes)`` (teacher forcing) for ``task`` (default:
        the first of ``model.tasks``); ``drop (B,)`` rows get the task's "None" condition."""
        assert_shape(codes, [None, *self.token_grid], "tokens (B, T, h, w)")
        kind, cond = self.condition(task or self.tasks[0], codes, text, masks)
        return self.transformer(codes.flatten(1), cond, kind, drop)

    def loss(self, video: torch.Tensor, drop: torch.Tensor | None = None, task: str | None = None,
             text: list[str] | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) over all target tokens of ``video (B, 3, T, H, W)``."""
        assert_shape(video, [None, *self.video_shape], "video (B, C, T, H, W)")
        codes = self.encode(video)
        logits = self.logits(codes, drop, task, text, masks)
        return F.cross_entropy(logits.float().flatten(0, 1), codes.flatten())

    # ------------------------------------------------------------------ sampling

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return draw_seeds(n, generator, device if device is not None else self.device)

    def _prefix(self, frames: torch.Tensor | None, b: int, need: int) -> torch.Tensor | None:
        cfg = self.config
        if frames is None:
            return None
        r = cfg.resolution
        assert_shape(frames, [b, 3, None, r, r], f"conditioning frames (B, 3, n, {r}, {r})")
        n = frames.shape[2]
        if not max(need, 1) <= n < cfg.frames:
            raise ValueError(f"got {n} conditioning frame(s); this model needs {max(need, 1)}.."
                             f"{cfg.frames - 1} (model.cond_frames = {cfg.cond_frames}, model.frames = {cfg.frames})")
        return self.encode(frames)

    def pick_task(self, frames: bool, text: bool, masks: bool) -> str:
        """The task a sampling call asks for: ``text`` / ``sketch`` when given (not both), ``prediction``
        for given frames of a prediction model, else ``unconditional`` (the first task's "None" condition)."""
        if text and masks:
            raise ValueError("give either a text or a sketch, not both (NÜWA conditions on one input at a time)")
        task = "text" if text else "sketch" if masks else "prediction" if frames and "prediction" in self.tasks \
            else "unconditional"
        if task == "unconditional" and self.tasks == ["prediction"]:
            raise ValueError(f"this NÜWA predicts video from its first {self.config.cond_frames} frame(s) "
                             "(model.cond_frames): pass them (kinema sample --condition VIDEO)")
        if task in ("text", "sketch") and task not in self.tasks:
            flag = "--text" if task == "text" else "--sketch"
            raise ValueError(f"{flag}: this NÜWA was trained without {task} (it supports: "
                             f"{', '.join(self.tasks)}); sample without {flag}")
        return task

    @torch.no_grad()
    def sample_codes(self, noise: torch.Tensor, frames: torch.Tensor | None = None, temperature: float | None = None,
                     top_k: int | None = None, guidance: float | None = None, prefix: torch.Tensor | None = None,
                     use_cache: bool = True, text: list[str] | str | None = None,
                     masks: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``(B, T, h, w)`` for seeds ``noise (B,)``. ``frames (B, 3, n, H, W)``: the first ``n``
        frames' tokens are kept exactly (prediction) and the first ``cond_frames`` feed the encoder;
        ``prefix (B, n, h, w)``: the same with tokens. ``text``: one caption (for every video) or one per
        video; ``masks (B or 1, T, H, W)``: per-frame sketches. ``use_cache=False`` recomputes every position."""
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
        task = self.pick_task(frames is not None or prefix is not None, text is not None, masks is not None)
        need = cfg.cond_frames if task == "prediction" else 1
        length = t * h * w
        device = self.transformer.bos.device
        gens = [torch.Generator().manual_seed(int(s)) for s in noise.tolist()]
        if prefix is None:
            prefix = self._prefix(frames, b, need)
        elif task == "prediction" and prefix.shape[1] < cfg.cond_frames:
            raise ValueError(f"prefix has {prefix.shape[1]} frame(s), the model conditions on {cfg.cond_frames}")
        codes = torch.zeros(b, t, h, w, dtype=torch.long, device=device)
        fixed = 0
        if prefix is not None:
            codes[:, : prefix.shape[1]] = prefix
            fixed = prefix.shape[1] * h * w
        if isinstance(text, str):
            text = [text] * b
        if text is not None and len(text) != b:
            raise ValueError(f"got {len(text)} captions for {b} videos: give one caption or one per video")
        if masks is not None:
            masks = self.check_masks(masks.expand(b, *masks.shape[1:]) if len(masks) == 1 else masks, b)
        drop = None
        if task == "unconditional":  # the "None" token, or a text/sketch model's dropped condition
            kind = "frames" if "unconditional" in self.tasks else KIND[self.tasks[0]]
            if kind == "frames":
                cond = torch.full_like(self.condition_tokens(codes), self.transformer.null_token)
            else:
                cond = (self.text_ids([""] * b) if kind == "text" else
                        torch.zeros(b, cfg.frames, cfg.resolution, cfg.resolution, dtype=torch.long,
                                    device=device))
                drop = torch.ones(b, dtype=torch.bool, device=device)
        elif task == "text":
            kind, cond = "text", self.text_ids(text)
        else:
            kind, cond = self.condition(task, codes, text, masks)
        guided = guidance != 1 and task != "unconditional"
        if guided:
            cond = torch.cat([cond, cond])
            drop = torch.cat([torch.zeros(b, dtype=torch.bool, device=device), torch.ones(b, dtype=torch.bool,
                                                                                          device=device)])
        flat = codes.view(b, length)
        tr = self.transformer
        caches = tr.new_caches(tr.encode(cond, kind, drop), kind) if use_cache else None
        rows = 2 * b if guided else b
        for pos in progress_steps(range(length), length, "tokens"):
            if use_cache:
                prev = None if pos == 0 else flat[:, pos - 1]
                prev = prev.repeat(2) if guided and prev is not None else prev
                logits = tr.step(prev, pos, caches, rows)
            elif pos >= fixed:
                seq = flat.repeat(2, 1) if guided else flat
                logits = tr(seq, cond, kind, drop)[:, pos]
            if pos < fixed:
                continue
            if guided:
                c, u = logits.chunk(2)
                logits = u + guidance * (c - u)
            flat[:, pos] = draw_tokens(logits, gens, temperature, top_k).to(device)
        return codes

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, frames: torch.Tensor | None = None, temperature: float | None = None,
               top_k: int | None = None, guidance: float | None = None, use_cache: bool = True,
               text: list[str] | str | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
        codes = self.sample_codes(noise, frames, temperature, top_k, guidance, use_cache=use_cache, text=text,
                                  masks=masks)
        return self.vqgan.decode(codes).clamp(-1, 1)

    @torch.no_grad()
    def preview(self, noise: torch.Tensor, real) -> torch.Tensor:
        """Continuations of the first training clips (prediction models), else samples with the "None"
        condition (unconditional, or a text/sketch model's dropped condition)."""
        if "prediction" not in self.tasks:
            return self.sample(noise)
        clips = real()[: len(noise)]
        return self.sample(noise, frames=clips[:, :, : self.config.cond_frames])
