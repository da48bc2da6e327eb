"""What the video GANs share: the clip shape, uniform noise, and whether time is continuous."""

from __future__ import annotations

import torch
from torch import nn


class VideoModel(nn.Module):
    """Base of every kinema model: ``config`` has ``frames`` and ``resolution`` (and optionally
    ``channels``, default 3); the trainer reads the clip shape from :attr:`video_shape`."""

    config: object

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """Shape of one generated (and one training) video, ``(C, T, H, W)``."""
        c = self.config
        return (getattr(c, "channels", 3), c.frames, c.resolution, c.resolution)


class UniformNoiseVideoGAN(VideoModel):
    """Base of GANs driven by ``z ~ U(-1, 1)^z_dim`` whose ``config`` has ``frames``, ``resolution``
    and ``z_dim`` and whose ``generator`` has a ``temporal`` generator (see ``temporal.py``)."""

    config: object
    generator: nn.Module
    default_objective = "gan"  # objective.name when a config does not say

    @property
    def continuous_time(self) -> bool:
        """Whether ``sample`` accepts any increasing times (ODE/SDE), not only ``0..frames-1``."""
        return bool(self.generator.temporal.continuous)

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``z ~ U(-1, 1)^z_dim``, ``(n, z_dim)``; drawn on the generator's device, then moved."""
        gen_device = generator.device if generator is not None else "cpu"
        z = torch.rand(n, self.config.z_dim, generator=generator, device=gen_device) * 2 - 1
        return z.to(device if device is not None else next(self.parameters()).device)
