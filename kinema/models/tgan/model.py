"""TGAN / TGAN-ODE 64x64 -- the model family of "Latent Neural Differential Equations for Video
Generation" (Kanaa et al. 2021), built on TGAN (Saito et al., ICCV 2017). Card: docs/models/tgan_ode.md.

Layers follow the TGAN-ODE reference code (Zasder3/Latent-Neural-Differential-Equations-for-Video-
Generation, ``models/tgan.py`` and ``models/tgan_ode.py``); only the temporal generator changes
between the paper's rows, and it comes from :mod:`kinema.nn.temporal`.

Generator: one noise vector ``z ~ U(-1, 1)^z_dim`` (the content code ``z_c``) is mapped by the
temporal generator to ``T`` latents ``z_1..z_T``. Frame ``t`` is rendered from ``[z_c, z_t]``:
each goes through ``Linear(z_dim, C/2 * 4 * 4, bias=False) + BN + ReLU`` (the reference's ``slow``
and ``fast`` branches), the two ``(C/2, 4, 4)`` maps are concatenated to ``(C, 4, 4)``, then a stack
of ``ConvTranspose2d(4, stride 2, pad 1, bias=False) + BN + ReLU`` doubles the side per layer and a
final ``ConvTranspose2d(3x3, stride 1, pad 1) + tanh`` gives RGB. With ``gen_channels = [512, 256,
128, 64, 32]`` (reference) that is 4 -> 8 -> 16 -> 32 -> 64; ``resolution = 4 * 2^(len - 1)``.
``upsample = "resize"`` (a named deviation) doubles with nearest up-sampling + ``Conv2d(3x3)`` instead.

Discriminator (TGAN's video discriminator, reference ``VideoDiscriminator``): Conv3d(4, stride 2,
pad 1) layers ``3 -> 64 -> 128 -> 256 -> 512`` with LeakyReLU 0.2 and BatchNorm3d after every conv but
the first (the reference has BN; its WGAN training clamps the BN gains together with singular-
value clipping: kinema's ``wgan`` objective, :mod:`kinema.objectives.wgan`), then one convolution whose kernel covers the
whole remaining ``(T', H', W')`` volume -> one score. For 16x64x64 that is the reference's
``Conv2d(512, 1, 4)`` on the ``1 x 4 x 4`` map (the reference reshapes with a hard-coded batch 32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from kinema.errors import ConfigError
from kinema.models.base import UniformNoiseVideoGAN
from kinema.nn.temporal import SDEGenerator, TemporalConfig, build_temporal
from kinema.nn import assert_shape

TGAN_TEMPORAL_KINDS = ("conv1d", "gru", "lstm", "ode", "sde")  # vector codes; convlstm works on maps


@dataclass
class TGANConfig:
    """TGAN / TGAN-ODE hyper-parameters; the defaults are the TGAN-ODE 64x64 UCF-101 network."""

    name: Literal["tgan"] = "tgan"
    z_dim: int = 100  # z ~ U(-1, 1)^z_dim, content code and temporal generator input
    frames: int = 16
    resolution: int = 64  # must equal 4 * 2^(len(gen_channels) - 1)
    # Temporal generator, mapped to kinema.nn.temporal.TemporalConfig (kind, order, ...).
    temporal: Literal["conv1d", "gru", "lstm", "ode", "sde"] = "ode"
    temporal_order: int = 1  # ODE order (kind "ode" only)
    temporal_solver: str = "rk4"  # torchdiffeq method (reference: rk4)
    temporal_layers: int = 1  # field depth; 1 = the paper's tanh(Linear(100, 100) x)
    temporal_hidden: int | None = None  # None: the temporal module's default (512 for conv1d/ode/sde)
    # ode: x(0) = the paper's 4-layer MLP of z (reference "lin" scripts); false: x(0) = z, as the reference's
    # `tgan SVC ODE UCF101.py` (TemporalGeneratorODE(linear=False)); kinema convert tgan_ode_port sets it.
    temporal_init_mlp: bool = True
    # Width C of the concatenated [z_c, z_t] 4x4 map (each half C/2), then the output width of each
    # stride-2 ConvTranspose2d; a 3x3 ConvTranspose2d maps the last width to RGB.
    gen_channels: list[int] = field(default_factory=lambda: [512, 256, 128, 64, 32])
    # Output width of each Conv3d(4, stride 2, pad 1) of the video discriminator.
    dis_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    dis_norm: Literal["batch", "none"] = "batch"  # reference: BatchNorm3d after every conv but the first
    # "reference": the TGAN-ODE code's init (image G weights U(-0.01, 0.01), D Xavier-normal gain
    # sqrt(2)); "pytorch": PyTorch defaults. The temporal generator always keeps its own init.
    init: Literal["reference", "pytorch"] = "reference"
    # Run the per-frame image generator on channels-last (NHWC) activations: the same maths in another
    # memory layout. On CPU, PyTorch's NCHW ConvTranspose2d takes a slow non-oneDNN path; NHWC goes
    # through oneDNN: the 64x64 generator's forward + backward at 128 frames took 0.72x the time
    # (docs/benchmarks.md, "TGAN / TGAN-ODE"). False: the NCHW layout.
    channels_last: bool = True
    # The first ConvTranspose2d is linear in its input [z_c map, z_t map]: its z_c half, the same for every
    # frame of a video, is computed once per video (weight[:C/2]) and added to the z_t half's output per
    # frame (weight[C/2:]). The same maths with one weight (float64 test); the sums are grouped differently,
    # so float32 results differ by rounding. 1/16 of that half's multiply-adds at 16 frames, forward and
    # backward: ~10% of the 64x64 generator's work. False: one convolution of the concatenated map per frame.
    content_once: bool = True
    # How each layer doubles the side. "transposed" (the reference): ConvTranspose2d(4, stride 2, pad 1).
    # "resize": nearest-neighbour up-sampling x2, then Conv2d(3x3, pad 1, bias=False) -- Odena et al.,
    # "Deconvolution and Checkerboard Artifacts" (Distill 2016): a stride-2 transposed convolution with a
    # 4x4 kernel sums uneven numbers of kernel taps into neighbouring pixels, which shows as a checkerboard;
    # the resize convolution gives every output pixel the same taps. Not the paper's network (a deviation
    # for the CPU world, measured in docs/models/tgan_ode.md); BN + ReLU follow either.
    upsample: Literal["transposed", "resize"] = "transposed"

    def temporal_config(self) -> TemporalConfig:
        return TemporalConfig(kind=self.temporal, order=self.temporal_order, solver=self.temporal_solver,
                              layers=self.temporal_layers, hidden=self.temporal_hidden,
                              init_mlp=self.temporal_init_mlp)

    @property
    def dis_output_size(self) -> tuple[int, int]:
        """``(T', S')`` left after the discriminator's stride-2 convs (k4 s2 p1 maps n -> n // 2)."""
        n = len(self.dis_channels)
        return self.frames >> n, self.resolution >> n

    def validate(self) -> None:
        for key in ("z_dim", "frames", "resolution"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0, got {getattr(self, key)}")
        if self.temporal not in TGAN_TEMPORAL_KINDS:
            raise ConfigError(
                f"model.temporal = {self.temporal!r} is not a vector temporal generator; choose one of "
                f"{', '.join(TGAN_TEMPORAL_KINDS)} (convlstm works on maps: use the tganv2 model)")
        try:
            self.temporal_config().validate("model.temporal")
        except ConfigError as exc:  # TemporalConfig names "model.temporal.order": map to our flat keys
            message = str(exc).replace("model.temporal.kind", "model.temporal")
            raise ConfigError(message.replace("model.temporal.", "model.temporal_")) from None
        if self.temporal == "conv1d" and self.frames < 2:
            raise ConfigError("model.frames must be >= 2 for model.temporal = 'conv1d'")
        if any(c <= 0 for c in self.gen_channels + self.dis_channels):
            raise ConfigError(f"model.gen_channels {self.gen_channels} and model.dis_channels "
                              f"{self.dis_channels} must be positive widths")
        if len(self.gen_channels) < 2 or self.gen_channels[0] % 2:
            raise ConfigError(
                f"model.gen_channels = {self.gen_channels}: needs the even width of the [z_c, z_t] 4x4 map "
                "(each half) and at least one up-sampling width, e.g. [512, 256, 128, 64, 32] for 64x64")
        ups = len(self.gen_channels) - 1
        if self.resolution != 4 * 2**ups:
            k = math.log2(self.resolution / 4) if self.resolution >= 4 else -1
            fix = (f"give model.gen_channels {int(k) + 1} entries (one per doubling after the first)"
                   if k >= 1 and k.is_integer() else f"set model.resolution = {4 * 2**ups}")
            raise ConfigError(
                f"model.resolution = {self.resolution} cannot be produced: the 4x4 map doubled by "
                f"{ups} up-sampling layers (len(model.gen_channels) - 1) gives {4 * 2**ups}. "
                f"Resolution must be 4 * 2^k; {fix}")
        if not self.dis_channels:
            raise ConfigError("model.dis_channels needs at least one width")
        n = len(self.dis_channels)
        if self.frames < 2**n or self.resolution < 2**n:
            raise ConfigError(
                f"model.dis_channels has {n} stride-2 Conv3d layers, which need frames and resolution "
                f">= 2^{n} = {2**n}; got frames {self.frames}, resolution {self.resolution}. "
                "Use fewer dis_channels or more frames")


# --------------------------------------------------------------------------- networks


class TGANImageGenerator(nn.Module):
    """``[z_c, z_t]`` -> one frame: ``z_c (N, z_dim)``, ``z_t (N, z_dim)`` -> ``(N, 3, R, R)`` in [-1, 1]."""

    def __init__(self, cfg: TGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        half = cfg.gen_channels[0] // 2

        def project() -> nn.Sequential:  # reference: Linear(100, 256*4*4, bias=False) + BN1d + ReLU
            return nn.Sequential(nn.Linear(cfg.z_dim, half * 16, bias=False), nn.BatchNorm1d(half * 16),
                                 nn.ReLU(inplace=True))

        self.content, self.motion = project(), project()  # the reference's `slow` and `fast`

        def doubling(cin: int, cout: int) -> list[nn.Module]:  # the layers that double the side
            if cfg.upsample == "resize":
                return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
            return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)]

        self.first_doubling = 2 if cfg.upsample == "resize" else 1  # layers deconvs[:first_doubling]
        layers: list[nn.Module] = []
        for cin, cout in zip(cfg.gen_channels[:-1], cfg.gen_channels[1:]):
            # in-place activations: batch norm's and convolution's backward need their inputs, not their outputs
            layers += [*doubling(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(cfg.gen_channels[-1], 3, 3, stride=1, padding=1), nn.Tanh()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z_c: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """``z_t (N, z_dim)``, one row per frame; ``z_c`` one row per frame too, or one per video (``N / T``
        rows, each serving ``T`` consecutive frames): its projection (the reference's ``slow``: Linear + BN1d
        + ReLU on the videos' codes, then repeated over the frames) is then computed once per video."""
        cfg, half = self.cfg, self.cfg.gen_channels[0] // 2
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        content = self.content(z_c).view(-1, half, 4, 4)
        motion = self.motion(z_t).view(-1, half, 4, 4)
        per_video = content.shape[0] != motion.shape[0]
        if per_video and cfg.content_once:
            # the first doubling is linear in [content, motion]: each half's input channels, separately
            upsample, first = self.deconvs[:self.first_doubling - 1], self.deconvs[self.first_doubling - 1]
            if cfg.upsample == "resize":  # nearest x2, then Conv2d weight (C', C, 3, 3): split its input channels
                conv = lambda x, part: F.conv2d(  # noqa: E731
                    upsample(x.contiguous(memory_format=fmt)),
                    first.weight[:, part], None, first.stride, first.padding, first.dilation, first.groups)
            else:  # ConvTranspose2d(C, C', 4, 2, 1, bias=False); weight (C, C', 4, 4)
                conv = lambda x, part: F.conv_transpose2d(  # noqa: E731
                    x.contiguous(memory_format=fmt), first.weight[part], None, first.stride, first.padding,
                    first.output_padding, first.groups, first.dilation)
            b, n = content.shape[0], motion.shape[0]
            h = conv(motion, slice(half, None))  # (N, C', 8, 8), in the layout `fmt`
            # in place: the layout stays; the convolution's backward does not need its output
            h.view(b, n // b, *h.shape[1:]).add_(conv(content, slice(None, half)).unsqueeze(1))
            return self.deconvs[self.first_doubling:](h)  # (N, 3, R, R)
        if per_video:
            content = content.repeat_interleave(motion.shape[0] // content.shape[0], dim=0)
        # the layout propagates through the convolutions and BN
        return self.deconvs(torch.cat([content, motion], dim=1).contiguous(memory_format=fmt))  # (N, 3, R, R)


class TGANGenerator(nn.Module):
    """Temporal generator + per-frame image generator: ``z (B, z_dim)`` -> ``(B, 3, T, R, R)``."""

    def __init__(self, cfg: TGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.temporal = build_temporal(cfg.temporal_config(), cfg.z_dim, cfg.frames)
        self.image = TGANImageGenerator(cfg)

    def forward(self, z: torch.Tensor, times: torch.Tensor | Sequence[float] | None = None,
                seed: int | None = None) -> torch.Tensor:
        """``z (B, z_dim)``, ``times (T,)`` in frame units (None = 0..frames-1) -> ``(B, 3, T, R, R)``.

        ``seed`` drives the SDE's Brownian motion (ignored by the other kinds).
        """
        assert_shape(z, [None, self.cfg.z_dim], f"TGAN noise z (B, {self.cfg.z_dim})")
        if isinstance(self.temporal, SDEGenerator):
            latents = self.temporal(z, times, seed=seed)
        else:
            latents = self.temporal(z, times)  # (B, T, z_dim); discrete kinds refuse other times
        b = latents.shape[0]
        # the content code once per video (the same for all its frames; TGANImageGenerator.forward)
        frames = self.image(z, rearrange(latents, "b t d -> (b t) d"))
        return rearrange(frames, "(b t) c h w -> b c t h w", b=b)


class TGANDiscriminator(nn.Module):
    """TGAN video discriminator: ``(B, 3, T, R, R)`` -> scores ``(B,)`` (unbounded, a critic)."""

    def __init__(self, cfg: TGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip([3] + cfg.dis_channels[:-1], cfg.dis_channels)):
            layers.append(nn.Conv3d(cin, cout, 4, stride=2, padding=1))
            if i > 0 and cfg.dis_norm == "batch":  # reference: no BN after the first conv
                layers.append(nn.BatchNorm3d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.convs = nn.Sequential(*layers)
        t, s = cfg.dis_output_size
        # The reference's Conv2d(512, 1, 4) on the 1x4x4 map, generalised to any remaining volume.
        self.score = nn.Conv3d(cfg.dis_channels[-1], 1, (t, s, s))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        assert_shape(video, [None, 3, c.frames, c.resolution, c.resolution],
                     f"TGAN discriminator input (B, 3, {c.frames}, {c.resolution}, {c.resolution})")
        return self.score(self.convs(video)).flatten()  # (B,)


class TGAN(UniformNoiseVideoGAN):
    """TGAN / TGAN-ODE behind the GAN-model interface, with a single level.

    The GAN objective uses ``sample_noise``, ``generate_levels``, ``real_levels``, ``discriminate`` and
    the ``generator`` / ``discriminator`` sub-modules; samplers use ``sample`` (any times when
    ``capabilities.continuous_time``).
    """

    def __init__(self, cfg: TGANConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.generator = TGANGenerator(cfg)
        self.discriminator = TGANDiscriminator(cfg)
        if cfg.init == "reference":
            init_reference_weights(self)

    @staticmethod
    def _seed(generator: torch.Generator | None) -> int:
        """A Brownian-motion seed drawn from ``generator`` (or torch's global RNG), so runs reproduce."""
        device = generator.device if generator is not None else "cpu"
        return int(torch.randint(0, 2**62, (), generator=generator, device=device))

    def generate_levels(self, z: torch.Tensor, generator: torch.Generator | None = None, rows=None) -> list[torch.Tensor]:
        """Training-time fakes: ``[(B, 3, T, R, R)]`` (one level). ``rows`` is unused: TGAN draws no
        per-sample randomness (an SDE's Brownian path depends on the batch it is drawn for)."""
        return [self.generator(z, seed=self._seed(generator))]

    def real_levels(self, video: torch.Tensor, generator: torch.Generator | None = None, rows=None) -> list[torch.Tensor]:
        """Real videos ``(B, 3, T, R, R)`` -> ``[video]`` (one level, unchanged)."""
        c = self.config
        assert_shape(video, [None, 3, c.frames, c.resolution, c.resolution],
                     f"real video (B, 3, {c.frames}, {c.resolution}, {c.resolution})")
        return [video]

    def discriminate(self, videos: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[(B, 3, T, R, R)]`` -> ``[scores (B,)]``."""
        if len(videos) != 1:
            raise ValueError(f"TGAN has one discriminator level: expected a list of 1 video, got {len(videos)}")
        return [self.discriminator(videos[0])]

    def sample(self, z: torch.Tensor, times: torch.Tensor | Sequence[float] | None = None,
               seed: int | None = None) -> torch.Tensor:
        """``z (B, z_dim)`` -> videos ``(B, 3, len(times), R, R)`` in [-1, 1].

        ``times`` is a strictly increasing 1-D tensor in frame units (frame k at t = k; default
        ``arange(frames)``). Continuous kinds (ode, sde) take fractional and negative times;
        discrete kinds (conv1d, gru, lstm) raise ``ValueError`` for anything but ``0..T-1``.
        ``seed`` fixes the SDE's Brownian path. BatchNorm follows the module's mode: call
        ``model.eval()`` first to use running statistics.
        """
        return self.generator(z, times, seed=seed)

    def parameter_counts(self) -> dict[str, int]:
        """Per sub-module, plus the generator's temporal and image parts (BatchNorm affine included)."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"temporal": count(self.generator.temporal), "image": count(self.generator.image),
                **super().parameter_counts()}


def init_reference_weights(model: TGAN) -> None:
    """The TGAN-ODE code's init (``models/tgan.py``): image-generator Linear / ConvTranspose2d (and the
    ``upsample = "resize"`` option's Conv2d) weights
    U(-0.01, 0.01), discriminator Conv weights Xavier-normal with gain sqrt(2); biases keep PyTorch's
    default. The temporal generator is left as :mod:`kinema.nn.temporal` initialised it (it already
    follows the reference: Xavier-uniform, gain sqrt(2))."""
    for module in model.generator.image.modules():  # Conv2d: the resize up-sampler's, given the same init
        if isinstance(module, (nn.Linear, nn.ConvTranspose2d, nn.Conv2d)):
            nn.init.uniform_(module.weight, -0.01, 0.01)
    for module in model.discriminator.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.xavier_normal_(module.weight, gain=math.sqrt(2))


__all__ = ["TGAN", "TGANConfig", "TGANDiscriminator", "TGANGenerator", "TGANImageGenerator",
           "init_reference_weights"]
