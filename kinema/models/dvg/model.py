"""DVG (Shrivastava & Shrivastava, "Diverse Video Generation using a Gaussian Process Trigger", ICLR
2021): video prediction with a deterministic LSTM and a per-dimension GP whose predictive variance
decides when to branch into a new future. Card: docs/models/dvg.md.

Official code: github.com/shgaurav1/DVG at e882473 (``train.py``, ``generate_frames.py``,
``models/dcgan_64.py``, ``models/lstm.py``, ``models/gp_models.py``). The networks work on frames in
[0, 1] as the official data loader gives them (``data/kth.py:54``, ``/255.``), so the official loss
weights keep their meaning; kinema's clips in [-1, 1] are mapped on the way in and out.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from kinema.errors import ConfigError
from kinema.models.base import Capabilities, VideoModel
from kinema.models.dvg.networks import FrameDecoder, FrameEncoder, LatentLSTM, dcgan_init

TRIGGERS = ("gp_variance", "every_k", "never")


@dataclass
class DVGConfig:
    """``model.name = "dvg"``. Defaults: the official KTH settings (train.py:18-43)."""

    name: Literal["dvg"] = "dvg"
    resolution: int = 64  # 4 * 2**levels: 64 -> the official four stride-2 blocks
    channels: int = 1  # network channels; 1 = greyscale (official KTH, --channels 1); RGB clips are averaged
    n_past: int = 5  # context frames (--n_past)
    n_future: int = 10  # frames predicted in training (--n_future); the default of `kinema sample --frames`
    g_dim: int = 90  # latent size = number of GPs (--g_dim)
    nf: int = 64  # width of the first conv block (dcgan_64.py: nf = 64)
    rnn_size: int = 256  # LSTM hidden size (--rnn_size)
    rnn_layers: int = 2  # stacked LSTM cells (--predictor_rnn_layers)
    gp_inducing: int = 40  # inducing points per GP (gp_models.py:11)
    gp_inducing_range: list[float] = field(default_factory=lambda: [0.0, 1.0])  # official init: torch.rand
    # Diagonal jitter added to the inducing covariance K_uu: 1e-3 is what the official gpytorch 0.3 adds
    # (LazyTensor.add_jitter); checkpoints written before this option had gpytorch's float32 default, 1e-4.
    gp_jitter: float = 1e-3
    # Decoder output on [0, 1] frames: "sigmoid" (SVG's, the data's range; default) or "tanh" (the DVG code's
    # dcgan_64.py:77, which can output negative intensities that the MSE then has to pull back).
    output_activation: Literal["sigmoid", "tanh"] = "sigmoid"
    # Skips: False = from the context as in the official code (refreshed while the input frame is a context
    # frame, i.e. from frame n_past - 2 for all predicted frames); True = from the frame being encoded
    # (--last_frame_skip).
    last_frame_skip: bool = False
    # When sampling: "gp_variance" (the GP trigger, generate_frames.py:249-298), "every_k" (draw from the GP
    # for every frame index divisible by trigger_every, the "manual trigger" of generate_frames.py:168) or
    # "never" (the LSTM rollout alone).
    trigger: Literal["gp_variance", "every_k", "never"] = "gp_variance"
    trigger_window: int = 12  # sliding window of variance norms, current value included (generate_frames.py:231)
    trigger_warmup: int = 12  # values recorded before the first decision (generate_frames.py:266)
    trigger_std: float = 2.01  # threshold mean + trigger_std * std; official 2 + 0.01 * depth, depth = 1 (:288)
    trigger_every: int = 15  # "every_k": official i % 15 == 0 (:168)

    @property
    def frames(self) -> int:
        """Frames of one training clip (and of a sample at the default length): context + future."""
        return self.n_past + self.n_future

    @property
    def levels(self) -> int:
        return int(round(math.log2(self.resolution // 4)))

    def validate(self) -> None:
        if self.resolution < 8 or self.resolution != 4 * 2**self.levels:
            raise ConfigError(f"model.resolution must be 4 * 2**k (8, 16, 32, 64, 128, ...), got {self.resolution}")
        for key in ("channels", "n_past", "n_future", "g_dim", "nf", "rnn_size", "rnn_layers", "trigger_warmup",
                    "trigger_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.gp_inducing < 1:
            raise ConfigError(f"model.gp_inducing (inducing points per GP) must be >= 1, got {self.gp_inducing}")
        if not self.gp_jitter > 0:
            raise ConfigError(f"model.gp_jitter must be > 0 (official 1e-3), got {self.gp_jitter}")
        lo_hi = self.gp_inducing_range
        if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
            raise ConfigError(f"model.gp_inducing_range must be [low, high] with low < high, got {lo_hi}")
        # The current value is part of the window, so its z-score is at most (n - 1) / sqrt(n): a smaller
        # window can never exceed mean + k * std and the trigger would never fire.
        n = self.trigger_window
        if n < 2 or (n - 1) / math.sqrt(n) <= self.trigger_std:
            raise ConfigError(f"model.trigger_window = {n} can never exceed mean + {self.trigger_std} std (a value "
                              f"in a window of n is at most (n - 1) / sqrt(n) std above its mean); use a window of "
                              f"at least {next(m for m in range(2, 10_000) if (m - 1) / math.sqrt(m) > self.trigger_std)}")


def window_trigger(history: torch.Tensor, current: torch.Tensor, k: float) -> torch.Tensor:
    """Per sample: does ``current`` exceed ``mean + k * std`` of the window ``[*history, current]``?

    ``history`` ``(B, n - 1)`` the previous values of the window, ``current`` ``(B,)``. The window includes
    the current value and the standard deviation is the population one (``np.std``), as in
    generate_frames.py:231,288 -- but each sample reads its own values (the official reads batch element 3
    for every sample, generate_frames.py:230).
    """
    window = torch.cat([history, current[:, None]], dim=1)
    return current > window.mean(1) + k * window.std(1, correction=0)


class DVG(VideoModel):
    """Encoder, decoder, LSTM and GP; ``sample(noise, frames=context)`` predicts futures of the context."""

    default_objective = "dvg"

    def __init__(self, config: DVGConfig) -> None:
        super().__init__()
        try:
            from kinema.models.dvg.gp import GPTemporal
        except ImportError as exc:  # gpytorch is optional
            raise ImportError(f"DVG's GP layer needs gpytorch ({exc}); pip install 'kinema[dvg]' "
                              "(or pip install gpytorch)") from exc
        self.config = c = config
        self.encoder = FrameEncoder(c.g_dim, c.channels, c.nf, c.levels)
        self.decoder = FrameDecoder(c.g_dim, c.channels, c.nf, c.levels, c.output_activation)
        self.predictor = LatentLSTM(c.g_dim, c.rnn_size, c.rnn_layers)
        for module in (self.encoder, self.decoder, self.predictor):
            module.apply(dcgan_init)
        # gpytorch checks its constraints' bounds with .item() when built: under a meta-device context (kinema
        # builds models there to read shapes) the small GP is built on the CPU instead
        on_meta = torch.empty(0).device.type == "meta"
        with torch.device("cpu") if on_meta else contextlib.nullcontext():
            self.gp = GPTemporal(c.g_dim, c.gp_inducing, tuple(c.gp_inducing_range), c.gp_jitter)

    # ------------------------------------------------------------------ contract

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """Clips are RGB in kinema (a greyscale model repeats its channel): ``(3, n_past + n_future, R, R)``."""
        return (3, self.config.frames, self.config.resolution, self.config.resolution)

    @property
    def capabilities(self) -> Capabilities:
        """``context_frames``: frames the prediction conditions on (``model.n_past``)."""
        return Capabilities(conditions=frozenset({"frames"}), unconditional=False, context_frames=self.config.n_past)

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """One integer seed per video ``(n,)``: it draws that video's GP samples, however long the rollout
        (``--frames``) and however the videos are batched."""
        seeds = torch.randint(0, 2**62, (n,), generator=generator, dtype=torch.long)
        return seeds.to(device if device is not None else self.device)

    def preview(self, noise: torch.Tensor, real: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Futures of the first training clips' contexts (a prediction model has nothing to show alone)."""
        clips = real()
        reps = -(-len(noise) // len(clips))
        clips = clips.repeat(reps, 1, 1, 1, 1)[: len(noise)]
        return self.sample(noise, frames=clips[:, :, : self.config.n_past].float())

    # ------------------------------------------------------------------ frames

    def to_frames(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` in [-1, 1] -> network frames ``(T, B, c, H, W)`` in [0, 1] (RGB
        averaged to grey for a greyscale model)."""
        c = self.config
        if clips.dim() != 5 or clips.shape[1] not in {c.channels, 3} or clips.shape[-2:] != (c.resolution,) * 2:
            raise ValueError(f"DVG frames: expected (B, {c.channels} or 3, T, {c.resolution}, {c.resolution}), got "
                             f"{tuple(clips.shape)}")
        x = clips.float()
        if x.shape[1] != c.channels:
            x = x.mean(1, keepdim=True) if c.channels == 1 else x[:, :1].expand(-1, c.channels, -1, -1, -1)
        return ((x + 1) / 2).permute(2, 0, 1, 3, 4)

    def from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(T, B, c, H, W)`` in [0, 1] -> clips ``(B, 3, T, H, W)`` in [-1, 1]."""
        x = (frames.permute(1, 2, 0, 3, 4) * 2 - 1).clamp(-1, 1)
        return x.expand(-1, 3, -1, -1, -1) if x.shape[1] == 1 else x

    def skip_frame(self, i: int) -> int:
        """The frame whose encoder maps the decoder uses when predicting frame ``i`` (official: the skips
        are refreshed from the input frame ``i - 1`` while ``i < n_past`` or with --last_frame_skip,
        train.py:217-220, generate_frames.py:154-157)."""
        return i - 1 if self.config.last_frame_skip else min(i - 1, max(self.config.n_past - 2, 0))

    # ------------------------------------------------------------------ sampling

    def _eps(self, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """``(B, steps, g_dim)`` standard normals, video b's from its own seed."""
        rows = [torch.randn(steps, self.config.g_dim, generator=torch.Generator().manual_seed(int(s)))
                for s in noise.tolist()]
        return torch.stack(rows).to(self.device)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, frames: torch.Tensor | None = None, n_future: int | None = None,
               trigger: str | None = None, trigger_every: int | None = None, return_info: bool = False):
        """Predict ``n_future`` (default ``model.n_future``) frames after the first ``n_past`` frames of
        ``frames`` ``(B or 1, C, T >= n_past, R, R)`` in [-1, 1]; returns ``(B, 3, n_past + n_future, R, R)``
        whose first ``n_past`` frames are the context. ``return_info``: also ``{"triggered": (B, n_future)
        bool, "variance": (B, n_past - 1 + n_future) L2 norms of the GP predictive variances}``."""
        c = self.config
        if frames is None:
            raise ValueError("DVG predicts the future of a clip: pass the conditioning frames (kinema sample "
                             f"--condition VIDEO, or sample(noise, frames=(B, C, >= {c.n_past}, {c.resolution}, "
                             f"{c.resolution})))")
        n_future = c.n_future if n_future is None else int(n_future)
        trigger = c.trigger if trigger is None else trigger
        every = c.trigger_every if trigger_every is None else int(trigger_every)
        if n_future < 1:
            raise ValueError(f"DVG: the number of frames to predict must be >= 1, got {n_future}")
        if trigger not in TRIGGERS:
            raise ValueError(f"DVG trigger {trigger!r}: choose one of {', '.join(TRIGGERS)}")
        if every < 1:
            raise ValueError(f"DVG trigger_every must be >= 1, got {every}")
        if frames.dim() == 5 and frames.shape[2] < c.n_past:
            raise ValueError(f"DVG needs {c.n_past} context frames (model.n_past), got a clip of {frames.shape[2]}")
        ctx = self.to_frames(frames[:, :, : c.n_past].to(self.device))
        b = len(noise)
        if ctx.shape[1] not in (1, b):
            raise ValueError(f"DVG: {ctx.shape[1]} conditioning clips for {b} noise rows; pass 1 or {b}")
        ctx = ctx.expand(-1, b, -1, -1, -1)
        eps = self._eps(noise, n_future)
        state = self.predictor.init_state(b, self.device)
        history: list[torch.Tensor] = []  # per-step (B,) variance norms
        out, fired = [], []
        x_in, skips = ctx[0], None
        for i in range(1, c.n_past + n_future):
            h, maps = self.encoder(x_in)
            if skips is None or i - 1 == self.skip_frame(i):
                skips = self.decoder.skip_terms(maps)  # the skip maps' half of the decoder, once per map set
            h_lstm, advanced = self.predictor(h, state)
            # The GP's prediction feeds the variance trigger, a draw, or the returned variances; the fixed schedules
            # need it only on their draw frames (the authors' make_gifs loop, generate_frames.py:166-175, likewise
            # calls the GP only there). It draws no random numbers, so skipping it changes no output.
            if trigger == "gp_variance" or return_info or (trigger == "every_k" and i >= c.n_past and i % every == 0):
                mean, var = self.gp.predictive(h)
                v = var.norm(dim=1)
            else:
                mean = var = v = None
            if i < c.n_past:  # teacher-forced context
                state = advanced
                history.append(v)
                x_in = ctx[i]
                continue
            if trigger == "never":
                fire = torch.zeros(b, dtype=torch.bool, device=self.device)
            elif trigger == "every_k":
                fire = torch.full((b,), i % every == 0, dtype=torch.bool, device=self.device)
            elif len(history) >= c.trigger_warmup:
                past = torch.stack(history[-(c.trigger_window - 1):], 1)
                fire = window_trigger(past, v, c.trigger_std)
            else:
                fire = torch.zeros(b, dtype=torch.bool, device=self.device)
            history.append(v)
            if trigger == "gp_variance":
                # GPtrigger_gen does not run the LSTM on a trigger step (generate_frames.py:289-292: encoder, GP,
                # decoder only; the LSTM runs in generation(), :221-225, on the other branch, :294-295), so its
                # hidden state stays where it was; the GP's frame is fed next (:298) and the LSTM resumes from
                # the kept state. The manual trigger (every_k, :166-175) runs the LSTM before deciding and
                # discards its output, so there the state advances on every step.
                keep = fire[:, None]
                advanced = [(torch.where(keep, hx, hx_new), torch.where(keep, cx, cx_new))
                            for (hx, cx), (hx_new, cx_new) in zip(state, advanced)]
            state = advanced
            if mean is None:  # no draw on this frame (fire is all False)
                h_next = h_lstm
            else:
                draw = mean + var.sqrt() * eps[:, i - c.n_past]
                h_next = torch.where(fire[:, None], draw.to(h_lstm.dtype), h_lstm)
            x_in = self.decoder(h_next, skips)
            out.append(x_in)
            fired.append(fire)
        video = self.from_frames(torch.cat([ctx, torch.stack(out).to(ctx.dtype)]))
        if return_info:
            return video, {"triggered": torch.stack(fired, 1), "variance": torch.stack(history, 1)}
        return video
