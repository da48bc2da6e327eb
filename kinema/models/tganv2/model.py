"""TGANv2 -- "Train Sparsely, Generate Densely" (Saito, Saito, Koyama, Kobayashi; IJCV 2020).

Architecture facts follow the official Chainer code (pfnet-research/tgan2) as summarised in
docs/models/tganv2.md, the model card, lists them with sources.

Generator: ``z ~ U(-1, 1)^z_dim -> Linear -> (B, C0, s, s)`` is fed to a ConvLSTM at t = 0 (zeros
afterwards) for T steps; every later block is 2-D and runs per frame (frames folded into the batch).
A stack of ``Up`` blocks doubles the resolution; the last ``levels`` of them each own a render block.
In sparse training the hidden map is sub-sampled in time (stride 2 by default) after each rendered
level, so level ``l`` renders ``T / stride^l`` frames at resolution ``R / 2^(levels-1-l)``. At
inference every block runs on every frame and only the last level is rendered (dense generation).

Discriminator: one independent 3-D ResNet per level, scores averaged by the objective. Real videos
are reduced to each level the same way: box pooling in space and nested frame sub-sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kinema.errors import ConfigError
from kinema.models.base import UniformNoiseVideoGAN
from kinema.nn.temporal import ConvLSTMTemporal, TemporalConfig, build_temporal
from kinema.nn import BatchRows, DisBlock3d, OptimizedDisBlock3d, UpBlock2d, assert_shape


@dataclass
class TGANv2Config:
    """TGANv2 hyper-parameters; the defaults are the paper's UCF-101 192x192 network."""

    name: Literal["tganv2"] = "tganv2"
    z_dim: int = 256
    frames: int = 16
    base_size: int = 3  # side of the ConvLSTM's latent map
    resolution: int = 192  # must equal base_size * 2 ** (len(gen_channels) - 1)
    # ConvLSTM width, then the output width of each Up block (each doubles the resolution).
    gen_channels: list[int] = field(default_factory=lambda: [1024, 512, 256, 128, 64, 32, 32])
    levels: int = 4  # the last `levels` Up blocks each render a video (one discriminator each)
    # Per sub-discriminator: OptimizedBlock(3 -> c0), then a DisBlock to each following width.
    dis_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    sparse: bool = True  # False trains densely: every level sees all frames
    subsample_stride: int = 2  # frame stride between levels (the port's 4 is not the paper's)
    # "batch": one random offset shared by the batch (official); "sample": one per sample;
    # "zero": always offset 0 (deterministic, for debugging).
    subsample_offset: Literal["batch", "sample", "zero"] = "batch"
    # Batch sub-sampling: each level after the first keeps every batch_subsample-th sample of the
    # previous level (x[::k]), fakes and reals alike. The official v41 yml turns it on (k = 2); the
    # README's UCF-101 run, which gave the published IS, turned it off (k = 1).
    batch_subsample: int = 1
    # Chainer's DownSample pads an axis of size 1 to 3 (zero slices each side); the official
    # discriminator therefore does so once T reaches 1. False skips that quirk.
    dis_pad_singleton: bool = True
    # ReLU before the discriminator's global sum, as the official code (resnet_video_discriminator.py:33-34).
    # The TGAN-ODE authors' PyTorch port (models/tganv2_dis.py, DisResNet.forward) sums without it: false.
    dis_final_relu: bool = True
    bn_eps: float = 2e-5  # Chainer's BatchNormalization default (PyTorch's is 1e-5)
    init: Literal["official", "pytorch"] = "official"  # see init_official_weights()
    # Temporal generator on the C0 x s x s map. "convlstm" is TGANv2; "ode" is TGANv2-ODE (Kanaa et al.
    # 2021: field Conv2d(C0, C0, 3) + LeakyReLU, RK4; any order); "sde" a neural SDE (diagonal noise).
    temporal: Literal["convlstm", "ode", "sde"] = "convlstm"
    temporal_order: int = 1
    temporal_solver: str = "rk4"
    temporal_activation: Literal["tanh", "leaky_relu", "softplus"] = "leaky_relu"
    temporal_adjoint: bool = False
    # Initial bias of the ConvLSTM's forget gate. 0 is the official code's (Chainer's zero bias). With
    # zero input after t = 0 a forget gate near sigmoid(0) = 0.5 halves the cell state every frame, so at
    # small scale the late frames start out identical for every z; a positive bias (Gers et al. 2000;
    # Jozefowicz et al. 2015 recommend 1) keeps the state, and z's influence, alive (docs/models/tganv2.md).
    convlstm_forget_bias: float = 0.0
    # Run the per-frame 2-D blocks and renders on channels-last (NHWC) activations: the same maths in
    # another memory layout. On CPU oneDNN's NHWC convolutions skip the layout reorders of NCHW: the
    # half-width 192x192 generator's 2-D stack (forward + backward) took ~0.6x the time
    # (docs/benchmarks.md). False: the NCHW layout.
    channels_last: bool = True

    def temporal_config(self) -> TemporalConfig:
        return TemporalConfig(kind=self.temporal, order=self.temporal_order, solver=self.temporal_solver,
                              activation=self.temporal_activation, adjoint=self.temporal_adjoint)

    @property
    def level_resolutions(self) -> list[int]:
        return [self.resolution // 2 ** (self.levels - 1 - i) for i in range(self.levels)]

    @property
    def level_frames(self) -> list[int]:
        """Frames each level sees in training."""
        if not self.sparse:
            return [self.frames] * self.levels
        return [self.frames // self.subsample_stride**i for i in range(self.levels)]

    def validate(self) -> None:
        blocks = len(self.gen_channels) - 1
        for key in ("z_dim", "frames", "base_size", "levels", "subsample_stride", "batch_subsample"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0, got {getattr(self, key)}")
        if any(c <= 0 for c in self.gen_channels + self.dis_channels):
            raise ConfigError("model.gen_channels and model.dis_channels must be positive widths")
        if blocks < self.levels:
            raise ConfigError(
                f"model.levels = {self.levels} needs at least {self.levels} Up blocks, but "
                f"model.gen_channels {self.gen_channels} defines {blocks}; add widths or lower levels"
            )
        produced = self.base_size * 2**blocks
        if self.resolution != produced:
            raise ConfigError(
                f"model.resolution = {self.resolution} cannot be produced: base_size {self.base_size} "
                f"doubled by {blocks} Up blocks gives {produced}. Set model.resolution = {produced}, "
                f"or change base_size / the number of gen_channels (resolution = base_size * 2^blocks)"
            )
        try:
            self.temporal_config().validate()
        except ConfigError as exc:  # name the flat model.* key the user wrote
            raise ConfigError(str(exc).replace("temporal.kind", "model.temporal")
                              .replace("temporal.", "model.temporal_")) from None
        if self.convlstm_forget_bias != 0 and self.temporal != "convlstm":
            raise ConfigError(f"model.convlstm_forget_bias = {self.convlstm_forget_bias} only applies to "
                              f'model.temporal = "convlstm", not {self.temporal!r}: remove it')
        if len(self.dis_channels) < 1:
            raise ConfigError("model.dis_channels needs at least one width")
        span = self.subsample_stride ** (self.levels - 1)
        if self.sparse and self.frames % span:
            raise ConfigError(
                f"model.frames = {self.frames} is not divisible by subsample_stride^(levels-1) = "
                f"{self.subsample_stride}^{self.levels - 1} = {span}, so sparse training cannot halve "
                f"it at every level; use frames that are a multiple of {span}, or lower levels/stride"
            )


# --------------------------------------------------------------------------- sub-sampling


def frame_offsets(
    rows: BatchRows | int, stride: int, policy: str, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Offsets in ``[0, stride)`` for each sample of ``rows``, ``(len(rows),)`` long.

    Per-sample offsets are drawn for all ``rows.total`` rows of the logical batch, then sliced: a
    batch split across processes or micro-steps gets the offsets the whole batch would get.
    """
    rows = BatchRows.whole(rows) if isinstance(rows, int) else rows
    if policy == "zero":
        return torch.zeros(len(rows), dtype=torch.long, device=device)
    size = 1 if policy == "batch" else rows.total
    offsets = torch.randint(stride, (size,), generator=generator, device=generator.device if generator else "cpu")
    offsets = offsets.expand(len(rows)) if policy == "batch" else offsets[rows.start : rows.stop]
    return offsets.to(device)


def subsample_indices(indices: torch.Tensor, stride: int, offsets: torch.Tensor) -> torch.Tensor:
    """Take every ``stride``-th entry of each row of ``indices (B, T)`` from its ``offsets (B,)``."""
    steps = indices.shape[1] // stride
    cols = offsets[:, None] + stride * torch.arange(steps, device=indices.device)[None]
    return indices.gather(1, cols)


def gather_frames(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Pick frames per sample: ``x (B, T, ...)``, ``indices (B, T')`` -> ``(B, T', ...)``."""
    batch_index = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[batch_index, indices.to(x.device)]


# --------------------------------------------------------------------------- ConvLSTM fast path

# False: run the ConvLSTM module step by step (the reference path; benchmarks/train_speed.py compares).
FAST_CONVLSTM = True


class _SharedWeightSteps(torch.autograd.Function):
    """``weight @ cols`` for one step of a recurrence whose steps share ``weight``.

    Each step's backward returns the gradient of its ``cols`` and stores ``(grad, cols)``; the weight's
    gradient of all steps is computed once, as one matrix product over every step, by the backward of
    the sequence's first step -- it runs last, because every later step's input depends on it. Same
    maths as a gradient per step summed by autograd, with one product instead of one weight-sized
    product and one weight-sized addition per step (a ConvLSTM's gates weight is large and its map
    tiny, so those dominated). First-order only.
    """

    @staticmethod
    def forward(ctx, cols, weight, store, first):
        ctx.save_for_backward(cols, weight)
        ctx.store, ctx.first = store, first
        return torch.matmul(weight, cols)  # (O, K) @ (B, K, L) -> (B, O, L)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        cols, weight = ctx.saved_tensors
        grad_cols = torch.matmul(weight.t(), grad) if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            ctx.store.append((grad, cols))
            if ctx.first:
                grads, colss = zip(*ctx.store)
                ctx.store.clear()
                # (steps, B, O, L) and (steps, B, K, L) -> (O, steps*B*L) @ (steps*B*L, K)
                g = torch.stack(grads).permute(2, 0, 1, 3).reshape(weight.shape[0], -1)
                c = torch.stack(colss).permute(0, 1, 3, 2).reshape(-1, weight.shape[1])
                grad_weight = g @ c
        return grad_cols, grad_weight, None, None


def convlstm_latents(temporal: ConvLSTMTemporal, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
    """``ConvLSTMTemporal.forward`` computed faster: ``z (B, C, s, s)`` -> ``(B, T, C, s, s)``.

    The ConvLSTM's input is ``z`` at t = 0 and zeros afterwards, and its state starts at zero, so the
    gates convolution over ``concat(x, h)`` only needs its x half at t = 0 and its h half afterwards
    (the skipped halves multiply exact zeros). Each step is a matrix product over the unfolded map,
    the h half's weight gradient one product for all steps (:class:`_SharedWeightSteps`).
    """
    cell = temporal.rnn.cell
    steps = temporal._times(times, z).numel()
    conv = cell.gates
    k, pad = conv.kernel_size, conv.padding
    b, _, hh, ww = z.shape
    w_x = conv.weight[:, : cell.in_channels].reshape(conv.out_channels, -1)
    w_h = conv.weight[:, cell.in_channels :].reshape(conv.out_channels, -1)
    bias = conv.bias[:, None] if conv.bias is not None else 0
    store: list = []
    outputs, c = [], None
    for step in range(steps):
        if step == 0:
            gates = torch.matmul(w_x, F.unfold(z, k, padding=pad)) + bias
        else:
            cols = F.unfold(h, k, padding=pad)
            gates = _SharedWeightSteps.apply(cols, w_h, store, step == 1) + bias
        i, f, o, g = gates.view(b, -1, hh, ww).chunk(4, dim=1)
        cand = torch.sigmoid(i) * torch.tanh(g)
        c = cand if c is None else torch.sigmoid(f) * c + cand  # c starts at zero
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    maps = torch.stack(outputs, dim=1)  # (B, T, hidden, s, s)
    return temporal.out(maps.flatten(0, 1)).unflatten(0, (b, steps))


# --------------------------------------------------------------------------- networks


class RenderBlock(nn.Module):
    """BN-ReLU-conv3x3-tanh: a hidden map ``(N, C, H, W)`` -> RGB ``(N, 3, H, W)`` in [-1, 1]."""

    def __init__(self, channels: int, bn_eps: float = 2e-5) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps)
        self.conv = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(F.relu(self.bn(h))))


class TGANv2Generator(nn.Module):
    """ConvLSTM temporal generator + per-frame ``Up`` blocks + one render block per level."""

    def __init__(self, cfg: TGANv2Config) -> None:
        super().__init__()
        self.cfg = cfg
        c0 = cfg.gen_channels[0]
        self.fc = nn.Linear(cfg.z_dim, c0 * cfg.base_size**2)
        self.temporal = build_temporal(cfg.temporal_config(), dim=c0, frames=cfg.frames, map_channels=c0)
        self.blocks = nn.ModuleList(
            UpBlock2d(cin, cout, cfg.bn_eps) for cin, cout in zip(cfg.gen_channels[:-1], cfg.gen_channels[1:])
        )
        self.first_level_block = len(self.blocks) - cfg.levels
        self.renders = nn.ModuleList(RenderBlock(c, cfg.bn_eps) for c in cfg.gen_channels[-cfg.levels:])

    def latent_sequence(self, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """``z (B, z_dim)`` -> latent maps ``(B, C0, T, s, s)`` at ``times`` (default ``0..frames-1``).

        The ConvLSTM gets ``fc(z)`` at t = 0 and zeros after; an ODE/SDE starts from ``fc(z)`` at t = 0.
        """
        cfg = self.cfg
        assert_shape(z, [None, cfg.z_dim], "TGANv2 noise z (B, z_dim)")
        x0 = self.fc(z).view(z.shape[0], -1, cfg.base_size, cfg.base_size)
        if isinstance(self.temporal, ConvLSTMTemporal) and FAST_CONVLSTM:
            return rearrange(convlstm_latents(self.temporal, x0, times), "b t c h w -> b c t h w")
        return rearrange(self.temporal(x0, times), "b t c h w -> b c t h w")

    def forward(
        self, z: torch.Tensor, generator: torch.Generator | None = None, rows: BatchRows | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Training forward.

        Returns ``(videos, frame_indices)``: per level ``l`` a video ``(B_l, 3, T_l, H_l, W_l)`` and
        the frame index of each rendered frame ``(B_l, T_l)`` (which frames of the dense clip it
        shows). With ``cfg.sparse`` False every level renders all ``T`` frames. ``rows`` says which
        rows of a larger logical batch ``z`` holds (default: all of it), see :class:`BatchRows`.
        """
        cfg = self.cfg
        b = z.shape[0]
        rows = BatchRows.whole(b) if rows is None else rows
        assert len(rows) == b, f"rows {rows} do not match the batch of {b} noise vectors"
        h = rearrange(self.latent_sequence(z), "b c t h w -> b t c h w")
        indices = torch.arange(cfg.frames, device=z.device).expand(b, -1)
        videos, frame_indices = [], []
        for i, block in enumerate(self.blocks):
            bb, t = h.shape[:2]
            h = rearrange(block(self._frames(h)), "(b t) c h w -> b t c h w", b=bb)
            level = i - self.first_level_block
            if level < 0:
                continue
            rgb = self.renders[level](self._frames(h))
            videos.append(rearrange(rgb, "(b t) c h w -> b c t h w", b=bb))
            frame_indices.append(indices)
            if cfg.sparse and level < cfg.levels - 1:
                if cfg.batch_subsample > 1:
                    first, rows = rows.every(cfg.batch_subsample)
                    h, indices = h[first :: cfg.batch_subsample], indices[first :: cfg.batch_subsample]
                offsets = frame_offsets(rows, cfg.subsample_stride, cfg.subsample_offset, generator, z.device)
                indices = subsample_indices(indices, cfg.subsample_stride, offsets)
                cols = subsample_indices(
                    torch.arange(t, device=z.device).expand(h.shape[0], -1), cfg.subsample_stride, offsets
                )
                h = gather_frames(h, cols)
        return videos, frame_indices

    def _frames(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> the 2-D blocks' input ``(B*T, C, H, W)``, in the configured layout."""
        h = rearrange(h, "b t c h w -> (b t) c h w")
        return h.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else h

    def dense(self, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Inference: every block on every frame, only the last level rendered -> ``(B, 3, T, R, R)``;
        ``T = len(times)`` for a continuous-time temporal generator."""
        b = z.shape[0]
        h = self._frames(rearrange(self.latent_sequence(z, times), "b c t h w -> b t c h w"))
        for block in self.blocks:
            h = block(h)
        return rearrange(self.renders[-1](h), "(b t) c h w -> b c t h w", b=b)


class VideoDiscriminator3d(nn.Module):
    """One sub-discriminator: 3-D ResNet -> ReLU -> sum over (T, H, W) -> Linear -> ``(B,)`` score."""

    def __init__(self, channels: list[int], pad_singleton: bool = True, final_relu: bool = True) -> None:
        super().__init__()
        self.final_relu = final_relu
        blocks: list[nn.Module] = [OptimizedDisBlock3d(3, channels[0])]
        blocks += [DisBlock3d(cin, cout, pad_singleton) for cin, cout in zip(channels[:-1], channels[1:])]
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(channels[-1], 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        assert_shape(video, [None, 3, None, None, None], "discriminator input (B, 3, T, H, W)")
        h = self.blocks(video)
        h = (F.relu(h) if self.final_relu else h).sum(dim=(2, 3, 4))
        return self.linear(h).squeeze(1)


class MultiLevelDiscriminator(nn.Module):
    """Independent sub-discriminators, one per level (no weight sharing)."""

    def __init__(self, cfg: TGANv2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.levels = nn.ModuleList(
            VideoDiscriminator3d(cfg.dis_channels, cfg.dis_pad_singleton, cfg.dis_final_relu) for _ in range(cfg.levels)
        )

    def forward(self, videos: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-level videos ``[(B_l, 3, T_l, H_l, W_l)]`` -> per-level scores ``[(B_l,)]``."""
        if len(videos) != len(self.levels):
            raise ValueError(f"discriminator expects {len(self.levels)} level videos, got {len(videos)}")
        for video, res in zip(videos, self.cfg.level_resolutions):
            assert_shape(video, [None, 3, None, res, res], f"level video at {res}px (B, 3, T, {res}, {res})")
        return [d(v) for d, v in zip(self.levels, videos)]


class TGANv2(UniformNoiseVideoGAN):
    """TGANv2 generator + multi-level discriminator behind the GAN-model interface.

    The GAN objective uses: ``sample_noise``, ``generate_levels``, ``real_levels``, ``discriminate``
    and the ``generator`` / ``discriminator`` sub-modules. Samplers use ``sample``.
    """

    def __init__(self, cfg: TGANv2Config) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.generator = TGANv2Generator(cfg)
        self.discriminator = MultiLevelDiscriminator(cfg)
        if cfg.init == "official":
            init_official_weights(self)
        if cfg.temporal == "convlstm" and cfg.convlstm_forget_bias:
            cell = self.generator.temporal.rnn.cell
            with torch.no_grad():  # gate order of ConvLSTMCell: input, forget, output, candidate
                cell.gates.bias[cell.hidden_channels:2 * cell.hidden_channels] = cfg.convlstm_forget_bias

    def generate_levels(
        self, z: torch.Tensor, generator: torch.Generator | None = None, rows: BatchRows | None = None
    ) -> list[torch.Tensor]:
        """Training-time fakes, one video per level (sparse or dense per ``config.sparse``)."""
        return self.generator(z, generator, rows)[0]

    def real_levels(
        self, video: torch.Tensor, generator: torch.Generator | None = None, rows: BatchRows | None = None
    ) -> list[torch.Tensor]:
        """Reduce real videos ``(B, 3, T, R, R)`` to each level like the fake path.

        Level ``l`` is box-pooled to its resolution; in sparse mode its frames are the previous
        level's frames sub-sampled with a random offset *per sample* (nested), as in the official
        ``MultiLevelDataset``; with batch sub-sampling, level ``l`` keeps samples ``[::k^l]``.
        ``rows``: which rows of a larger logical batch ``video`` holds (see :class:`BatchRows`).
        """
        cfg = self.config
        assert_shape(video, [None, 3, cfg.frames, cfg.resolution, cfg.resolution],
                     f"real video (B, 3, {cfg.frames}, {cfg.resolution}, {cfg.resolution})")
        b = video.shape[0]
        rows = BatchRows.whole(b) if rows is None else rows
        assert len(rows) == b, f"rows {rows} do not match the batch of {b} videos"
        frames = rearrange(video, "b c t h w -> b t c h w")
        indices = torch.arange(cfg.frames, device=video.device).expand(b, -1)
        levels = []
        for level, res in enumerate(cfg.level_resolutions):
            if cfg.sparse and level > 0 and cfg.batch_subsample > 1:
                first, rows = rows.every(cfg.batch_subsample)
                frames, indices = frames[first :: cfg.batch_subsample], indices[first :: cfg.batch_subsample]
            if cfg.sparse and level > 0:
                offsets = frame_offsets(rows, cfg.subsample_stride, "sample", generator, video.device)
                indices = subsample_indices(indices, cfg.subsample_stride, offsets)
            clip = rearrange(gather_frames(frames, indices), "b t c h w -> b c t h w")
            factor = cfg.resolution // res
            if factor > 1:
                clip = F.avg_pool3d(clip, kernel_size=(1, factor, factor))
            levels.append(clip)
        return levels

    def discriminate(self, videos: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.discriminator(videos)

    def sample(self, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Dense generation ``z (B, z_dim)`` -> videos ``(B, 3, T, R, R)`` in [-1, 1].

        ``times``: 1-D increasing time points in frame units (default ``0..frames-1``); fractional,
        finer or negative times need a continuous-time temporal generator. BatchNorm follows the
        module's mode: call ``model.eval()`` first to use running statistics.
        """
        return self.generator.dense(z, times)


def init_official_weights(model: TGANv2) -> None:
    """Initialise as the official Chainer code does.

    Residual 3x3 convs (G's Up blocks, every D conv): Glorot-uniform with gain sqrt(2); 1x1 shortcuts
    and D's final Linear: Glorot-uniform; the noise Linear, the ConvLSTM and the render convs keep
    Chainer's default, LeCun-normal N(0, 1/fan_in). All biases start at zero.
    """

    def lecun_normal_(weight: torch.Tensor) -> None:
        fan_in = weight[0].numel()
        nn.init.normal_(weight, std=fan_in**-0.5)

    for module in model.modules():
        if isinstance(module, (UpBlock2d, DisBlock3d, OptimizedDisBlock3d)):
            nn.init.xavier_uniform_(module.conv1.weight, gain=2**0.5)
            nn.init.xavier_uniform_(module.conv2.weight, gain=2**0.5)
            nn.init.xavier_uniform_(module.shortcut.weight)
        elif isinstance(module, VideoDiscriminator3d):
            nn.init.xavier_uniform_(module.linear.weight)
        elif isinstance(module, TGANv2Generator):
            lecun_normal_(module.fc.weight)
            if module.cfg.temporal == "convlstm":
                # Official: two convolutions, w_xifoc over x and w_hifoc over h, each LeCun-normal with
                # its own fan-in (9 C); kinema's one convolution over concat(x, h) is initialised per half.
                cell = module.temporal.rnn.cell
                lecun_normal_(cell.gates.weight[:, :cell.in_channels])
                lecun_normal_(cell.gates.weight[:, cell.in_channels:])
            for render in module.renders:
                lecun_normal_(render.conv.weight)
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)
