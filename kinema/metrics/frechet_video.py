"""FVD as a metric object shaped like :class:`~kinema.metrics.fid.FrameFID`: ``update(real=..., fake=...)``,
``compute()``, ``reset()``. Features are I3D (Kinetics-400) logits under the ``fvd2048_16f`` preprocessing
(docs/metrics.md); statistics stream, so any number of clips fits in memory."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from kinema.metrics.frechet import FeatureStats, frechet_distance_from_stats
from kinema.video import to_uint8


def videos_uint8(x) -> np.ndarray:
    """uint8 videos ``(N, T, H, W, 3)`` from uint8 videos or float videos ``(N, 3, T, H, W)`` in [-1, 1]
    (quantised as a written video would be)."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"float input must be videos (N, 3, T, H, W) in [-1, 1], got {tuple(x.shape)}")
        return np.stack([to_uint8(v) for v in x.detach().cpu()])
    x = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 videos (N, T, H, W, 3) or float videos (N, 3, T, H, W) in [-1, 1], "
                         f"got {x.dtype} {x.shape}")
    return x


class FVD:
    """``fvd = FVD(i3d_weights="i3d.safetensors"); fvd.update(real=clips); fvd.update(fake=samples);
    fvd.compute()``. ``feature_fn`` replaces the network (tests). Clips need at least 9 frames (I3D)."""

    def __init__(self, i3d_weights=None, device: str = "cpu", batch_size: int = 16,
                 feature_fn: Callable[[np.ndarray], torch.Tensor] | None = None) -> None:
        if feature_fn is None:
            from kinema.metrics import i3d_weights_path
            from kinema.metrics.networks.i3d import i3d_logits, load_i3d

            model = load_i3d(i3d_weights_path(i3d_weights), device=device)
            feature_fn = lambda videos: i3d_logits(videos, model, batch_size=batch_size, device=device)  # noqa: E731
        self.feature_fn = feature_fn
        self.frames: int | None = None
        self.reset()

    def reset(self) -> None:
        self.real, self.fake, self.frames = FeatureStats(), FeatureStats(), None

    def update(self, real=None, fake=None) -> None:
        for videos, stats in ((real, self.real), (fake, self.fake)):
            if videos is None:
                continue
            videos = videos_uint8(videos)
            if self.frames is not None and videos.shape[1] != self.frames:
                raise ValueError(f"all clips of one FVD need the same frame count: got {videos.shape[1]} after "
                                 f"{self.frames}")
            self.frames = videos.shape[1]
            stats.update(np.asarray(self.feature_fn(videos), np.float64))

    def compute(self) -> float:
        for name, stats in (("real", self.real), ("generated", self.fake)):
            if stats.count < 2:
                raise ValueError(f"FVD needs at least 2 {name} videos, got {stats.count}: call update() first")
        return frechet_distance_from_stats(self.real, self.fake)
