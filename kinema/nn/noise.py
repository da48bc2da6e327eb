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
