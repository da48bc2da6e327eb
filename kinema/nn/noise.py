"""Seeded noise that does not depend on the device: drawn on the generator's device, then moved.

A seeded CPU ``torch.Generator`` thus gives the same numbers whether the model runs on CPU or GPU.
"""

from __future__ import annotations

import torch


def _gen_device(generator: torch.Generator | None):
    return generator.device if generator is not None else "cpu"


def draw_noise(kind: str, shape, generator: torch.Generator | None, device=None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """``uniform`` (``U(-1, 1)``) or ``normal`` noise of ``shape`` on ``device`` (default: the generator's)."""
    gen_device = _gen_device(generator)
    if kind == "uniform":
        x = torch.rand(shape, generator=generator, device=gen_device, dtype=dtype) * 2 - 1
    elif kind == "normal":
        x = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; use 'uniform' or 'normal'")
    return x if device is None else x.to(device)


def draw_randperm(n: int, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """A random permutation of ``0..n-1`` drawn on the generator's device, then moved."""
    perm = torch.randperm(n, generator=generator, device=_gen_device(generator))
    return perm if device is None else perm.to(device)


def draw_seeds(n: int, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """``n`` int64 seeds in ``[0, 2^62)``, one per video."""
    seeds = torch.randint(0, 2**62, (n,), generator=generator, device=_gen_device(generator))
    return seeds if device is None else seeds.to(device)


def draw_tokens(logits: torch.Tensor, generators: list[torch.Generator], temperature: float,
                top_k: int) -> torch.Tensor:
    """One token per row of ``logits (B, K)``, row i by inverse CDF with ``generators[i]`` (float64 on the
    CPU, so a video's tokens depend on its own seed only, not on the device or the batch); ``top_k`` > 0
    keeps the k largest logits. Returns ``(B,)`` int64 on the CPU."""
    logits = logits.double().cpu() / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = logits.softmax(-1).cumsum(-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(1).clamp_(max=logits.shape[1] - 1)
