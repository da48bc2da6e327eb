"""Procedural video datasets with known ground-truth motion.

Each dataset has a fixed length ``num_clips``. Clip ``i`` is simulated from its own
``numpy.random.Generator`` seeded with ``(seed, family, i)``, so a clip does not depend on
DataLoader workers, access order, or which other clips were drawn. ``ds[i]`` is a float32
tensor ``(3, T, H, W)`` in ``[-1, 1]``; ``ds.ground_truth(i)`` returns the parameters it was
rendered from. Rendering is vectorised numpy over time and pixels.

The two families have clearly different statistics (dark vs light-grey background) so tests and
metric sanity checks can tell them apart. ``moving_digits`` and ``moving_digits_stochastic``
(handwritten digits, :mod:`kinema.data.digits`) build on this module and are registered in
``SYNTHETIC_FAMILIES`` by :mod:`kinema.data`.

The families of moving objects (``bouncing_shapes``, ``moving_digits*``) share the motion keys of
their ground truth: ``positions (N, T, 2)`` ``(y, x)`` pixel centres and ``velocities (N, T, 2)``
pixels per frame (the step from frame ``t`` to ``t+1`` before any wall bounce), which is what
:mod:`kinema.metrics.oracle` measures on generated clips.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SYNTHETIC_FAMILIES", "BouncingShapes", "RotatingBars", "SyntheticVideoDataset"]


def _bright_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3)`` saturated colours in ``[-1, 1]``: the largest channel is always 1."""
    c = rng.uniform(0.0, 1.0, size=(n, 3))
    c /= c.max(axis=1, keepdims=True)
    return c * 2.0 - 1.0


def _pair(value: tuple[float, float] | float, name: str) -> tuple[float, float]:
    lo, hi = (value, value) if np.isscalar(value) else value
    if not lo <= hi:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value}")
    return float(lo), float(hi)


def _count_range(value: tuple[int, int] | int, name: str) -> tuple[int, int]:
    lo, hi = _pair(value, name)
    if lo < 1 or lo != int(lo) or hi != int(hi):
        raise ValueError(f"{name} must be a positive integer or (min, max) pair, got {value}")
    return int(lo), int(hi)


def bounce(pos: np.ndarray, vel: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elastic wall reflection of positions ``pos`` that stepped past ``[lo, hi]`` (per axis); the
    velocity component of a reflected axis flips. At most one bounce per axis per step."""
    below, above = pos < lo, pos > hi
    pos = np.where(below, 2 * lo - pos, np.where(above, 2 * hi - pos, pos))
    return pos, np.where(below | above, -vel, vel)


class SyntheticVideoDataset(Dataset):
    """Base class: validation, per-clip generators, and the ``Dataset`` protocol.

    Subclasses implement ``_simulate(rng) -> dict`` (the ground truth, numpy arrays) and
    ``_render(gt) -> np.ndarray`` of shape ``(T, H, W, 3)`` float in ``[-1, 1]``.
    """

    family = "synthetic"

    def __init__(self, num_clips: int, frames: int, height: int, width: int, seed: int = 0):
        for name, value, least in (
            ("num_clips", num_clips, 1), ("frames", frames, 1), ("height", height, 4), ("width", width, 4)
        ):
            if not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{type(self).__name__}: {name} must be an integer >= {least}, got {value!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{type(self).__name__}: seed must be a non-negative integer, got {seed!r}")
        self.num_clips, self.frames, self.height, self.width = int(num_clips), int(frames), int(height), int(width)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.num_clips

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.num_clips
        if not 0 <= i < self.num_clips:
            raise IndexError(f"clip index {i} out of range for {type(self).__name__} of length {self.num_clips}")
        return i

    def _rng(self, i: int) -> np.random.Generator:
        # The family name is mixed in so two families with the same seed are independent.
        salt = zlib.crc32(self.family.encode())
        return np.random.default_rng([self.seed, salt, i])

    def ground_truth(self, i: int) -> dict:
        """The parameters clip ``i`` is rendered from (see the subclass docstring)."""
        return self._simulate(self._rng(self._index(i)))

    def __getitem__(self, i: int) -> torch.Tensor:
        """Clip ``i`` as float32 ``(3, T, H, W)`` in ``[-1, 1]``."""
        video = self._render(self.ground_truth(i))
        return torch.from_numpy(np.ascontiguousarray(video.transpose(3, 0, 1, 2), dtype=np.float32))

    def _simulate(self, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def _render(self, gt: dict) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_clips={self.num_clips}, frames={self.frames}, "
                f"height={self.height}, width={self.width}, seed={self.seed})")


class BouncingShapes(SyntheticVideoDataset):
    """Circles and squares moving at constant velocity with elastic wall bounces, dark background.

    Sizes and speeds are fractions of ``min(H, W)``, so the motion looks the same at any
    resolution. Coordinates are pixel centres: row ``y`` in ``[0, H-1]``, column ``x`` in
    ``[0, W-1]``; an object of radius ``r`` (half side for squares) always satisfies
    ``r <= y <= H-1-r`` and ``r <= x <= W-1-r``.

    ``ground_truth(i)`` keys (``N`` objects, ``T`` frames):
      ``positions (N, T, 2)`` centre ``(y, x)``; ``velocities (N, T, 2)`` pixels per frame, the
      step taken from frame ``t`` to ``t+1`` before any bounce (so away from walls
      ``positions[:, t+1] == positions[:, t] + velocities[:, t]``); ``radii (N,)``;
      ``shapes`` list of ``"circle" | "square"``; ``colours (N, 3)`` in ``[-1, 1]``;
      ``background (3,)`` in ``[-1, 1]``. Later objects are drawn on top.
    """

    family = "bouncing_shapes"

    def __init__(
        self,
        num_clips: int,
        frames: int,
        height: int,
        width: int,
        seed: int = 0,
        num_objects: tuple[int, int] | int = (1, 3),
        radius: tuple[float, float] = (0.08, 0.18),
        speed: tuple[float, float] = (0.03, 0.1),
    ):
        super().__init__(num_clips, frames, height, width, seed)
        self.num_objects = _count_range(num_objects, "num_objects")
        self.radius = _pair(radius, "radius")
        self.speed = _pair(speed, "speed")

    def _simulate(self, rng: np.random.Generator) -> dict:
        n = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        t, size = self.frames, min(self.height, self.width)
        extent = np.array([self.height - 1.0, self.width - 1.0])
        # At least one pixel, and small enough that every object fits with room to move.
        radii = np.clip(rng.uniform(*self.radius, size=n) * size, 1.0, 0.3 * (size - 1))
        lo = radii[:, None]
        hi = extent[None, :] - radii[:, None]
        pos = rng.uniform(lo, hi)  # (n, 2)
        angle = rng.uniform(0, 2 * np.pi, size=n)
        # Capped at half the free span, so an object bounces at most once per axis per frame.
        speed = np.minimum(rng.uniform(*self.speed, size=n) * size, 0.5 * (hi - lo).min(axis=1))
        vel = np.stack([np.sin(angle), np.cos(angle)], axis=1) * speed[:, None]

        positions = np.empty((n, t, 2))
        velocities = np.empty((n, t, 2))
        for step in range(t):  # T steps of (n, 2) arithmetic: cheap, and exact reflections
            positions[:, step], velocities[:, step] = pos, vel
            pos, vel = bounce(pos + vel, vel, lo, hi)

        return {
            "positions": positions,
            "velocities": velocities,
            "radii": radii,
            "shapes": [("circle", "square")[k] for k in rng.integers(0, 2, size=n)],
            "colours": _bright_colours(rng, n),
            "background": rng.uniform(-1.0, -0.75, size=3),
        }

    def _render(self, gt: dict) -> np.ndarray:
        ys = np.arange(self.height, dtype=np.float64)[None, :, None]  # (1, H, 1)
        xs = np.arange(self.width, dtype=np.float64)[None, None, :]  # (1, 1, W)
        video = np.empty((self.frames, self.height, self.width, 3), dtype=np.float32)
        video[:] = gt["background"]
        for k, shape in enumerate(gt["shapes"]):
            dy = ys - gt["positions"][k, :, 0, None, None]  # (T, H, 1)
            dx = xs - gt["positions"][k, :, 1, None, None]  # (T, 1, W)
            r = gt["radii"][k]
            if shape == "circle":
                mask = dy**2 + dx**2 <= r**2
            else:
                mask = np.maximum(np.abs(dy), np.abs(dx)) <= r
            video[mask] = gt["colours"][k]
        return video


class RotatingBars(SyntheticVideoDataset):
    """Saturated bars spinning about the frame centre at constant angular velocity, light-grey background.

    ``ground_truth(i)`` keys (``N`` bars, ``T`` frames):
      ``angles (N, T)`` radians, ``angles[:, t] = angles[:, 0] + t * angular_velocities``;
      ``angular_velocities (N,)`` radians per frame; ``lengths (N,)`` and ``thicknesses (N,)``
      in pixels; ``centre (2,)`` ``(y, x)``; ``colours (N, 3)`` and ``background (3,)`` in
      ``[-1, 1]``. Angle 0 points along +x, positive angles turn towards +y.
    """

    family = "rotating_bars"

    def __init__(
        self,
        num_clips: int,
        frames: int,
        height: int,
        width: int,
        seed: int = 0,
        num_bars: tuple[int, int] | int = (1, 2),
        angular_speed: tuple[float, float] = (np.pi / 32, np.pi / 8),
    ):
        super().__init__(num_clips, frames, height, width, seed)
        self.num_bars = _count_range(num_bars, "num_bars")
        self.angular_speed = _pair(angular_speed, "angular_speed")

    def _simulate(self, rng: np.random.Generator) -> dict:
        n = int(rng.integers(self.num_bars[0], self.num_bars[1] + 1))
        size = min(self.height, self.width)
        omega = rng.uniform(*self.angular_speed, size=n) * rng.choice([-1.0, 1.0], size=n)
        theta0 = rng.uniform(0, 2 * np.pi, size=n)
        # Saturated colour: one channel dark, so the bar differs from grey in hue, not just level.
        colours = _bright_colours(rng, n)
        colours[np.arange(n), rng.integers(0, 3, size=n)] = -0.8
        return {
            "angles": theta0[:, None] + omega[:, None] * np.arange(self.frames)[None, :],
            "angular_velocities": omega,
            "lengths": rng.uniform(0.6, 0.9, size=n) * size,
            "thicknesses": np.maximum(rng.uniform(0.08, 0.15, size=n) * size, 1.0),
            "centre": np.array([(self.height - 1) / 2, (self.width - 1) / 2]),
            "colours": colours,
            "background": np.full(3, rng.uniform(0.45, 0.65)),
        }

    def _render(self, gt: dict) -> np.ndarray:
        dy = (np.arange(self.height) - gt["centre"][0])[None, :, None]  # (1, H, 1)
        dx = (np.arange(self.width) - gt["centre"][1])[None, None, :]  # (1, 1, W)
        video = np.empty((self.frames, self.height, self.width, 3), dtype=np.float32)
        video[:] = gt["background"]
        for k in range(len(gt["angular_velocities"])):
            cos = np.cos(gt["angles"][k])[:, None, None]  # (T, 1, 1)
            sin = np.sin(gt["angles"][k])[:, None, None]
            along = dx * cos + dy * sin  # (T, H, W)
            across = dy * cos - dx * sin
            mask = (np.abs(along) <= gt["lengths"][k] / 2) & (np.abs(across) <= gt["thicknesses"][k] / 2)
            video[mask] = gt["colours"][k]
        return video


SYNTHETIC_FAMILIES: dict[str, type[SyntheticVideoDataset]] = {
    "bouncing_shapes": BouncingShapes,
    "rotating_bars": RotatingBars,
}
