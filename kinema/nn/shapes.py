"""Shape checks at module boundaries, with messages that name the expected shape."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def assert_shape(x: torch.Tensor, expected: Sequence[int | None], name: str = "tensor") -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected`` (``None`` matches any size).

    Example: ``assert_shape(video, [None, 3, 16, 64, 64], "video")`` for ``(B, C, T, H, W)``.
    """
    shape = tuple(x.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for s, e in zip(shape, expected)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {shape}")
