"""Moving handwritten digits (in the spirit of Moving MNIST), with ground-truth motion.

The glyphs are scikit-learn's bundled UCI handwritten digits (``sklearn.datasets.load_digits``:
1,797 greyscale 8x8 images of 0-9 by 43 writers, shipped inside the wheel, so nothing is
downloaded). scikit-learn is an optional dependency, imported only when one of these datasets is
built. Each glyph is upsampled once per clip with PIL's bicubic filter to a side that is a fraction
of the frame (``digit_size``, default 0.3: these glyphs fill their 8x8 box, and Moving MNIST's
digits, 28-pixel boxes in 64-pixel frames, have about 20 pixels of ink), then drawn at sub-pixel
positions by exact bilinear interpolation, so the rendered centroid moves smoothly.

Digits are light grey on a dark grey background (greyscale, repeated on the three channels);
overlapping digits combine by maximum, as in Moving MNIST.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from kinema.data.synthetic import SyntheticVideoDataset, _count_range, _pair, bounce

__all__ = ["MovingDigits", "MovingDigitsStochastic", "load_digit_glyphs"]

_GLYPHS: tuple[np.ndarray, np.ndarray] | None = None  # (images, labels), loaded once per process


def load_digit_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits: images ``(1797, 8, 8)`` float32 in ``[0, 1]`` (ink, saturated
    at half coverage) and labels
    ``(1797,)`` int64 in ``0..9``. Loaded on first use and cached for the process."""
    global _GLYPHS
    if _GLYPHS is None:
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise ImportError(
                "the moving_digits families draw scikit-learn's bundled handwritten digits "
                "(sklearn.datasets.load_digits, no download), but scikit-learn is not installed: "
                "pip install scikit-learn"
            ) from e
        bunch = load_digits()
        # Stored as ink counts 0..16 of 4x4 blocks of a 32x32 bitmap. A block at least half inked is
        # drawn as full ink, so strokes are solid and stay connected, as in MNIST, rather than fading
        # into faint links that a threshold would break.
        images = np.minimum(np.asarray(bunch.images, dtype=np.float32) / 8.0, 1.0)
        _GLYPHS = images, np.asarray(bunch.target, dtype=np.int64)
    return _GLYPHS


def _upsample(image: np.ndarray, side: int) -> np.ndarray:
    """``(8, 8)`` glyph to ``(side, side)`` with PIL bicubic, clipped to ``[0, 1]`` and scaled so its
    maximum is 1 (every digit then has the same peak brightness)."""
    big = np.asarray(Image.fromarray(image.astype(np.float32)).resize((side, side), Image.BICUBIC))
    big = np.clip(big, 0.0, None)  # bicubic overshoots below 0 next to strokes
    return np.minimum(big / max(float(big.max()), 1e-6), 1.0)


def _linear_kernel(coord: np.ndarray, size: int) -> np.ndarray:
    """Bilinear weights ``(..., size)`` of the glyph pixels ``0..size-1`` at float positions ``coord``;
    zero beyond the glyph, so sampling outside it gives 0."""
    return np.maximum(0.0, 1.0 - np.abs(coord[..., None] - np.arange(size)))


class MovingDigits(SyntheticVideoDataset):
    """Handwritten digits (``num_digits``, default 1-2) moving at constant velocity, bouncing off the frame edges.

    Sizes and speeds are fractions of ``min(H, W)``. A digit's *position* is its intensity-weighted
    centroid ``(y, x)`` in pixel-centre coordinates. Its *extents* are the distances from that
    centroid to the outer edges of the glyph pixels at or above half intensity (half a pixel
    beyond the extreme pixel centres), so they are what a half-maximum threshold of the frame sees.
    A digit bounces when that half-intensity box touches the frame (pixel centres ``0`` and
    ``H-1`` / ``W-1``): ``up <= y <= H-1-down`` and ``left <= x <= W-1-right`` always hold.

    ``ground_truth(i)`` keys (``N`` digits, ``T`` frames), the same motion keys as
    :class:`~kinema.data.synthetic.BouncingShapes`:
      ``positions (N, T, 2)``; ``velocities (N, T, 2)`` pixels per frame, the step from frame
      ``t`` to ``t+1`` before any bounce; ``direction_changes (N, T)`` bool, True where the
      velocity was redrawn at frame ``t`` (never, in this deterministic family);
      ``digits (N,)`` labels 0-9; ``digit_indices (N,)`` rows of ``load_digits()``;
      ``sizes (N,)`` glyph side in pixels; ``extents (N, 4)`` ``(up, down, left, right)``;
      ``offsets (N, 2)`` the centroid inside the glyph (glyph top-left = position - offset);
      ``glyphs (N, S, S)`` the upsampled images in ``[0, 1]``; ``colours (N, 3)`` and
      ``background (3,)`` in ``[-1, 1]``. A pixel is ``max_k(bg + (colour_k - bg) * glyph_k)``.
    """

    family = "moving_digits"

    def __init__(
        self,
        num_clips: int,
        frames: int,
        height: int,
        width: int,
        seed: int = 0,
        num_digits: tuple[int, int] | int = (1, 2),
        digit_size: float = 0.3,
        speed: tuple[float, float] = (0.03, 0.08),
    ):
        super().__init__(num_clips, frames, height, width, seed)
        self.num_digits = _count_range(num_digits, "num_digits")
        if not 0.0 < float(digit_size) <= 0.6:
            raise ValueError(f"digit_size is the glyph side as a fraction of min(height, width) and must be in "
                             f"(0, 0.6] so a digit has room to move, got {digit_size}")
        self.digit_size = float(digit_size)
        self.speed = _pair(speed, "speed")
        self._images, self._labels = load_digit_glyphs()  # fail at construction, not in a DataLoader worker

    def _step_velocity(self, rng: np.random.Generator, vel: np.ndarray, speed: np.ndarray) -> tuple:
        """Velocities after the frame's random redraws: ``(vel, changed (N,) bool)``. None here."""
        return vel, np.zeros(len(vel), dtype=bool)

    def _simulate(self, rng: np.random.Generator) -> dict:
        n = int(rng.integers(self.num_digits[0], self.num_digits[1] + 1))
        t, size = self.frames, min(self.height, self.width)
        side = max(4, int(round(self.digit_size * size)))
        index = rng.integers(0, len(self._images), size=n)
        glyphs = np.stack([_upsample(self._images[k], side) for k in index])  # (n, S, S)

        grid = np.arange(side, dtype=np.float64)
        mass = glyphs.sum(axis=(1, 2))
        offsets = np.stack([(glyphs.sum(axis=2) * grid).sum(1) / mass, (glyphs.sum(axis=1) * grid).sum(1) / mass], 1)
        extents = np.empty((n, 4))
        for k in range(n):
            rows, cols = np.nonzero(glyphs[k] >= 0.5)
            cy, cx = offsets[k]
            extents[k] = (cy - rows.min() + 0.5, rows.max() - cy + 0.5, cx - cols.min() + 0.5, cols.max() - cx + 0.5)
        lo = extents[:, [0, 2]]  # (n, 2) least centroid y, x
        hi = np.array([self.height - 1.0, self.width - 1.0]) - extents[:, [1, 3]]
        hi = np.maximum(hi, lo)  # a glyph wider than a tiny frame cannot move along that axis
        pos = rng.uniform(lo, hi)
        angle = rng.uniform(0, 2 * np.pi, size=n)
        # Capped at half the free span, so a digit bounces at most once per axis per frame.
        speed = np.minimum(rng.uniform(*self.speed, size=n) * size, 0.5 * (hi - lo).min(axis=1))
        vel = np.stack([np.sin(angle), np.cos(angle)], axis=1) * speed[:, None]

        positions, velocities = np.empty((n, t, 2)), np.empty((n, t, 2))
        changes = np.zeros((n, t), dtype=bool)
        for step in range(t):  # same reflection arithmetic as BouncingShapes
            if step > 0:
                vel, changes[:, step] = self._step_velocity(rng, vel, speed)
            positions[:, step], velocities[:, step] = pos, vel
            pos, vel = bounce(pos + vel, vel, lo, hi)
            pos = np.clip(pos, lo, hi)  # only matters where a frozen axis has lo == hi

        background = rng.uniform(-1.0, -0.8)
        return {
            "positions": positions,
            "velocities": velocities,
            "direction_changes": changes,
            "digits": self._labels[index],
            "digit_indices": index,
            "sizes": np.full(n, side),
            "extents": extents,
            "offsets": offsets,
            "glyphs": glyphs,
            # One level for all digits of a clip: their half-intensity outlines, which set where they
            # bounce, are then exactly what a half-maximum threshold of the frame finds.
            "colours": np.full((n, 3), rng.uniform(0.7, 1.0)),
            "background": np.full(3, background),
        }

    def _render(self, gt: dict) -> np.ndarray:
        ys = np.arange(self.height, dtype=np.float64)
        xs = np.arange(self.width, dtype=np.float64)
        bg = float(gt["background"][0])
        bright = np.full((self.frames, self.height, self.width), bg, dtype=np.float32)
        for k, glyph in enumerate(gt["glyphs"]):
            top_left = gt["positions"][k] - gt["offsets"][k]  # (T, 2)
            # A translated bilinear image is separable: rows (T, H, S) @ glyph (S, S) @ columns (T, S, W).
            ky = _linear_kernel(ys[None, :] - top_left[:, 0, None], glyph.shape[0]).astype(np.float32)
            kx = _linear_kernel(xs[None, :] - top_left[:, 1, None], glyph.shape[1]).astype(np.float32)
            ink = ky @ glyph.astype(np.float32) @ kx.transpose(0, 2, 1)  # (T, H, W) in [0, 1]
            np.maximum(bright, bg + (gt["colours"][k, 0] - bg) * ink, out=bright)
        return np.broadcast_to(bright[..., None], bright.shape + (3,))


class MovingDigitsStochastic(MovingDigits):
    """:class:`MovingDigits` whose digits change direction at random.

    Before each step from frame ``t >= 1``, each digit independently, with probability
    ``change_probability``, draws a new direction uniformly on the circle (its speed is kept);
    ``direction_changes[k, t]`` is True there. Between changes the motion is as in
    :class:`MovingDigits` (constant velocity, wall bounces). The future is therefore not determined
    by the past: a model must sample a plausible change, not average over them.
    """

    family = "moving_digits_stochastic"

    def __init__(self, num_clips: int, frames: int, height: int, width: int, seed: int = 0,
                 change_probability: float = 0.15, **kwargs):
        if not 0.0 <= float(change_probability) <= 1.0:
            raise ValueError(f"change_probability must be in [0, 1], got {change_probability}")
        self.change_probability = float(change_probability)
        super().__init__(num_clips, frames, height, width, seed, **kwargs)

    def _step_velocity(self, rng: np.random.Generator, vel: np.ndarray, speed: np.ndarray) -> tuple:
        n = len(vel)
        # Both draws are made for every digit and frame, so the stream does not depend on outcomes.
        changed = rng.uniform(size=n) < self.change_probability
        angle = rng.uniform(0, 2 * np.pi, size=n)
        new = np.stack([np.sin(angle), np.cos(angle)], axis=1) * speed[:, None]
        return np.where(changed[:, None], new, vel), changed

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", change_probability={self.change_probability})"
