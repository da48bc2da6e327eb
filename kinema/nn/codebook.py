"""An EMA vector-quantisation codebook with data-dependent initialisation and dead-code restarts.

Follows the official VideoGPT code (wilson1yan/VideoGPT ``videogpt/vqvae.py``): codes initialised from
random encoder outputs of the first batch, EMA (decay 0.99 there) of assignment counts ``N`` and sums
``z_avg`` with Laplace-smoothed normalisation (1e-7), codes whose EMA count falls below the restart
threshold (official: 1) replaced by random encoder outputs. Shared by the VideoGPT VQ-VAE (3-D latents)
and the NÜWA VQ-GAN (per-frame 2-D latents): :meth:`Codebook.quantize` takes ``(B, D, *grid)``.

``kmeans_iters > 0`` (off by default; the NÜWA VQ-GAN's ``codebook_init = "kmeans"``) refines the
first-batch init by that many Lloyd iterations of k-means over the batch's encoder outputs (the init of
lucidrains/nuwa-pytorch's vector-quantize-pytorch codebook, ``kmeans_init``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kinema.nn.noise import draw_noise, draw_randperm


class Codebook(nn.Module):
    """``codebook_size`` vectors of ``embedding_dim`` updated by EMA (no gradients; all buffers).

    ``quantize`` has no side effects; the objective calls ``initialize`` once (first training batch)
    and ``ema_update`` once per optimiser step with statistics summed over the whole global batch.
    """

    def __init__(self, size: int, dim: int, decay: float = 0.99, restart_threshold: float = 1.0,
                 kmeans_iters: int = 0) -> None:
        super().__init__()
        self.size, self.dim, self.decay, self.restart_threshold = size, dim, decay, restart_threshold
        self.kmeans_iters = kmeans_iters
        self.register_buffer("embeddings", torch.randn(size, dim))
        self.register_buffer("N", torch.zeros(size))  # EMA of assignment counts
        self.register_buffer("z_avg", self.embeddings.clone())  # EMA of the sums of assigned vectors
        self.register_buffer("initialized", torch.zeros(()))  # saved: a resumed run does not re-initialise

    def quantize(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Nearest code per position of ``z (B, D, *grid)`` (e.g. ``(B, D, t, h, w)`` or ``(B, D, h, w)``).

        Returns ``embeddings`` (straight-through: value of the codes, gradient of ``z``), ``indices``
        ``(B, *grid)``, ``commitment`` (unweighted ``mse(z, sg[e])``), ``perplexity`` of the code
        usage, and the EMA statistics of this batch: ``counts (K,)`` and ``sums (K, D)``, plus ``flat``
        (the detached encoder outputs ``(B*t*h*w, D)``, candidates for dead-code restarts).
        """
        flat = z.movedim(1, -1).reshape(-1, self.dim).float()
        codes = self.embeddings
        with torch.autocast(z.device.type, enabled=False):  # fp32 distances: bf16 would pick wrong codes
            distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)[None]
        indices = distances.argmin(1)
        e = F.embedding(indices, codes).view(z.shape[0], *z.shape[2:], self.dim).movedim(-1, 1)
        counts = torch.bincount(indices, minlength=self.size).to(flat.dtype)
        sums = torch.zeros_like(codes).index_add_(0, indices, flat.detach())
        probs = counts / counts.sum()
        return {
            "embeddings": (e - z).detach() + z,
            "indices": indices.view(z.shape[0], *z.shape[2:]),
            "commitment": F.mse_loss(z.float(), e.detach()),
            "perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()).detach(),
            "counts": counts, "sums": sums, "flat": flat.detach(),
        }

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, *grid)`` long -> ``(B, D, *grid)``."""
        return F.embedding(indices, self.embeddings).movedim(-1, 1)

    def candidates(self, flat: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``size`` random rows of ``flat (M, D)``: tiled with noise 0.01/sqrt(D) when M < size (official).
        Before the codebook is initialised and with ``kmeans_iters > 0``: those rows refined by k-means over
        ``flat`` (:func:`kmeans`), the initial codes."""
        data = flat
        if flat.shape[0] < self.size:
            repeats = -(-self.size // flat.shape[0])
            flat = flat.repeat(repeats, 1)
            flat = flat + draw_noise("normal", flat.shape, generator, flat.device) * (0.01 / math.sqrt(self.dim))
        perm = draw_randperm(flat.shape[0], generator, flat.device)
        rows = flat[perm[: self.size]]
        if self.kmeans_iters > 0 and not bool(self.initialized):
            rows = kmeans(data.float(), rows.float(), self.kmeans_iters)
        return rows

    @torch.no_grad()
    def initialize(self, candidates: torch.Tensor) -> None:
        """Data-dependent init: codes = random encoder outputs, ``N = 1``."""
        self.embeddings.copy_(candidates)
        self.z_avg.copy_(candidates)
        self.N.fill_(1.0)
        self.initialized.fill_(1.0)

    @torch.no_grad()
    def ema_update(self, counts: torch.Tensor, sums: torch.Tensor, candidates: torch.Tensor) -> None:
        """One EMA step from batch statistics, then restart codes with ``N < restart_threshold``.

        As the official code: ``N <- d N + (1-d) counts``, ``z_avg <- d z_avg + (1-d) sums``,
        ``e = z_avg / ((N + 1e-7) / (n + K 1e-7) * n)`` with ``n = sum N``; dead codes take
        ``candidates`` rows (``N`` and ``z_avg`` are left as they are, so a restarted code keeps being
        restarted until data is assigned to it).
        """
        d = self.decay
        self.N.mul_(d).add_(counts, alpha=1 - d)
        self.z_avg.mul_(d).add_(sums, alpha=1 - d)
        n = self.N.sum()
        weights = (self.N + 1e-7) / (n + self.size * 1e-7) * n
        self.embeddings.copy_(self.z_avg / weights[:, None])
        usage = (self.N >= self.restart_threshold).to(self.embeddings.dtype)[:, None]
        self.embeddings.mul_(usage).add_(candidates * (1 - usage))


@torch.no_grad()
def kmeans(data: torch.Tensor, centroids: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` Lloyd iterations on ``data (M, D)`` from ``centroids (K, D)`` -> ``(K, D)``; a centroid
    that gets no point keeps its place."""
    for _ in range(iters):
        distances = data.pow(2).sum(1, keepdim=True) - 2 * data @ centroids.t() + centroids.pow(2).sum(1)[None]
        assign = distances.argmin(1)
        counts = torch.bincount(assign, minlength=len(centroids)).to(data.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    return centroids
