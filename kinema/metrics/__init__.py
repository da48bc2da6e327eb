"""Metrics the field reports: FVD / KVD (I3D), Inception Score (C3D); exact, named protocols.

``fvd(real, fake, i3d_weights=PATH)`` scores raw uint8 videos ``(N, T, H, W, 3)``;
``kinema.metrics.evaluate.evaluate_model`` and ``kinema evaluate`` score a checkpoint under the
protocols of :mod:`kinema.metrics.protocols`. Weights are never downloaded: see docs/metrics.md.
"""

from __future__ import annotations

import os

import numpy as np

from kinema.metrics.fid import FrameFID
from kinema.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_from_stats
from kinema.metrics.protocols import PROTOCOLS, Protocol, get_protocol


def i3d_weights_path(path=None):
    """``path``, else ``$KINEMA_I3D_WEIGHTS``; None if neither is set."""
    return path or os.environ.get("KINEMA_I3D_WEIGHTS")


def fvd(real, fake, i3d_weights=None, batch_size: int = 16, device: str = "cpu") -> float:
    """Fréchet Video Distance between uint8 videos ``real`` and ``fake``, each ``(N, T, H, W, 3)``.

    I3D (Kinetics-400) logits, TF1 bilinear resize to 224x224, covariance with N - 1, float64.
    """
    from kinema.metrics.networks.i3d import i3d_logits, load_i3d

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FVD needs at least 2 videos per set, got {len(real)} real and {len(fake)} generated")
    if tuple(real.shape[1:2]) != tuple(fake.shape[1:2]):
        raise ValueError(f"real and generated videos have different frame counts: {real.shape[1]} vs {fake.shape[1]}")
    model = load_i3d(i3d_weights_path(i3d_weights), device=device)
    stats = []
    for videos in (real, fake):
        s = FeatureStats()
        s.update(np.asarray(i3d_logits(videos, model, batch_size=batch_size, device=device), np.float64))
        stats.append(s)
    return frechet_distance_from_stats(*stats)


from kinema.metrics.frechet_video import FVD  # noqa: E402  (uses i3d_weights_path above)
from kinema.metrics.inception_score import inception_score  # noqa: E402
from kinema.metrics.kernel import kernel_distance  # noqa: E402
from kinema.metrics.oracle import motion_report  # noqa: E402

__all__ = ["FVD", "PROTOCOLS", "FeatureStats", "FrameFID", "Protocol", "frechet_distance", "frechet_distance_from_stats",
           "fvd", "get_protocol", "inception_score", "kernel_distance", "motion_report"]
