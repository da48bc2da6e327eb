"""Frame-level FID with a torchmetrics-shaped API: ``update(x, real=...)``, ``compute()``, ``reset()``.

Features are Inception-v3 (TF FID graph) pool3 activations of individual frames; statistics stream
(:class:`~kinema.metrics.frechet.FeatureStats`), so any number of frames fits in memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from kinema.metrics.frechet import FeatureStats, frechet_distance_from_stats
from kinema.video import to_uint8


def frames_uint8(x) -> np.ndarray:
    """Frames ``(N, H, W, 3)`` uint8 from uint8 frames, uint8 videos ``(N, T, H, W, 3)``, or float videos
    ``(N, 3, T, H, W)`` in [-1, 1] (quantised as a written video would be)."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"float input must be videos (N, 3, T, H, W) in [-1, 1], got {tuple(x.shape)}")
        x = np.stack([to_uint8(v) for v in x.detach().cpu()])
    x = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"pass uint8 frames/videos or float videos in [-1, 1], got {x.dtype}")
    if x.ndim == 5:
        x = x.reshape(-1, *x.shape[2:])
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames (N, H, W, 3) or videos (N, T, H, W, 3), got {x.shape}")
    return x


class FrameFID:
    """``fid = FrameFID(weights="inception.safetensors"); fid.update(real, real=True);
    fid.update(fake, real=False); fid.compute()``. ``feature_fn`` replaces the network (tests)."""

    def __init__(self, weights=None, device: str = "cpu", batch_size: int = 64,
                 feature_fn: Callable[[np.ndarray], torch.Tensor] | None = None) -> None:
        if feature_fn is None:
            from kinema.metrics.networks.inception import load_inception

            model = load_inception(weights, device=device)
            feature_fn = lambda frames: model.frame_features(frames, batch_size=batch_size)  # noqa: E731
        self.feature_fn = feature_fn
        self.reset()

    def reset(self) -> None:
        self.real, self.fake = FeatureStats(), FeatureStats()

    def update(self, x, real: bool) -> None:
        features = self.feature_fn(frames_uint8(x))
        (self.real if real else self.fake).update(np.asarray(features, np.float64))

    def compute(self) -> float:
        for name, stats in (("real", self.real), ("generated", self.fake)):
            if stats.count < 2:
                raise ValueError(f"FID needs at least 2 {name} frames, got {stats.count}: call update() first")
        return frechet_distance_from_stats(self.real, self.fake)
