"""Fréchet distance and streaming feature statistics, in float64.

``frechet_distance`` computes ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace of the
matrix square root is taken as the sum of the square roots of the eigenvalues of
``S1^(1/2) S2 S1^(1/2)`` (a symmetric positive semi-definite matrix, so ``eigh`` is stable and no
complex parts appear), which equals ``tr((S1 S2)^(1/2))``. scipy's ``sqrtm`` (used by the TF and
pytorch-fid code) gives the same value up to round-off on well-conditioned covariances.
"""

from __future__ import annotations

import numpy as np
import torch


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"feature dimensions differ: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}; both sets must come from the same network")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf: the features are broken (check the inputs' range)")
    root1 = _psd_sqrt(sigma1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ sigma2 @ root1), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * cross)


class FeatureStats:
    """Streaming mean and covariance: sums of features and of outer products, in float64.

    ``update(features (N, D))`` any number of times (millions of clips never sit in memory), then
    ``mean()`` and ``covariance(ddof)`` -- ``ddof=1`` (unbiased, numpy's ``np.cov`` default, used by
    the TF FVD and FID code) or ``ddof=0``.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.count = 0
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def update(self, features) -> None:
        x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise ValueError(f"feature dimension {x.shape[1]} differs from the {self.dim} seen before")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf: check the network input range and weights")
        if self.sum is None:
            self.sum, self.outer = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def mean(self) -> np.ndarray:
        self._need(1)
        return self.sum / self.count

    def covariance(self, ddof: int = 1) -> np.ndarray:
        self._need(ddof + 1)
        mean = self.mean()
        return (self.outer - self.count * np.outer(mean, mean)) / (self.count - ddof)

    def _need(self, n: int) -> None:
        if self.count < n:
            raise ValueError(f"statistics need at least {n} feature vectors, got {self.count}")

    def state_dict(self) -> dict:
        return {"count": self.count, "sum": self.sum, "outer": self.outer, "dim": self.dim}

    @classmethod
    def from_state_dict(cls, state: dict) -> FeatureStats:
        stats = cls(state["dim"])
        stats.count, stats.sum, stats.outer = int(state["count"]), state["sum"], state["outer"]
        return stats


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats, ddof: int = 1) -> float:
    return frechet_distance(a.mean(), a.covariance(ddof), b.mean(), b.covariance(ddof))
