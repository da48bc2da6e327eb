"""Handwritten digits that switch between five motion modes at random times, with the mode known per frame.

Built for video *prediction* with diverse futures (DVG, docs/models/dvg.md): the context fixes a digit's
current mode, but at any frame the digit may switch to another one, so a good predictor continues the
context's motion and a diverse one sometimes branches into another mode. Because the mode of every frame
is known, :func:`kinema.metrics.prediction.diversity_score` can check which mode a predicted future is in.

The glyphs and their rendering are those of :class:`kinema.data.digits.MovingDigits` (scikit-learn's
bundled handwritten digits, no download).
"""

from __future__ import annotations

import numpy as np

from kinema.data.digits import MovingDigits

__all__ = ["MODES", "MODE_STEPS", "ActionSwitchDigits"]

MODES = ("still", "left", "right", "up", "down")
# unit step (dy, dx) of each mode, in pixel rows / columns (y grows downwards)
MODE_STEPS = np.array([(0.0, 0.0), (0.0, -1.0), (0.0, 1.0), (-1.0, 0.0), (1.0, 0.0)])
_OPPOSITE = np.array([0, 2, 1, 4, 3])


class ActionSwitchDigits(MovingDigits):
    """Digits (``num_digits``, default 1) each in one of five motion modes -- ``still``, ``left``, ``right``,
    ``up``, ``down`` (:data:`MODES`) -- that switches at random times.

    A clip draws each digit's mode for frame 0 uniformly and one speed per digit (``speed``, a fraction of
    ``min(H, W)`` per frame, so the motion looks the same at any resolution). Before each step from frame
    ``t >= 1`` a digit switches, with probability ``switch_probability``, to one of the four *other*
    modes (uniformly). A step that would carry the half-intensity box past a frame edge reverses the
    mode instead (``left`` <-> ``right``, ``up`` <-> ``down``): the digit never leaves the frame and
    every step is one of the five pure motions.

    ``ground_truth(i)`` has the keys of :class:`~kinema.data.digits.MovingDigits` (``positions (N, T, 2)``;
    ``velocities (N, T, 2)``, the exact step from frame ``t`` to ``t + 1``; ...) and
      ``modes (N, T)`` int, the index into :data:`MODES` of the step from frame ``t`` to ``t + 1``;
      ``switches (N, T)`` bool, True where a random switch happened before that step;
      ``direction_changes (N, T)`` bool, True where the mode differs from the previous frame's (a random
      switch or a reversal at an edge);
      ``speeds (N,)`` pixels per frame.
    """

    family = "action_switch_digits"

    def __init__(self, num_clips: int, frames: int, height: int, width: int, seed: int = 0,
                 switch_probability: float = 0.1, num_digits: tuple[int, int] | int = 1,
                 digit_size: float = 0.3, speed: tuple[float, float] = (0.05, 0.08)):
        if not 0.0 <= float(switch_probability) <= 1.0:
            raise ValueError(f"switch_probability must be in [0, 1], got {switch_probability}")
        self.switch_probability = float(switch_probability)
        super().__init__(num_clips, frames, height, width, seed, num_digits=num_digits, digit_size=digit_size,
                         speed=speed)

    def _simulate(self, rng: np.random.Generator) -> dict:
        base = super()._simulate(rng)  # glyphs, extents, colours, a start position (its motion is replaced)
        n, t = len(base["digits"]), self.frames
        ext = base["extents"]
        lo = ext[:, [0, 2]]
        hi = np.maximum(np.array([self.height - 1.0, self.width - 1.0]) - ext[:, [1, 3]], lo)
        # at most half the free span per step, so a reversed step always stays inside the frame
        speed = np.minimum(rng.uniform(*self.speed, size=n) * min(self.height, self.width),
                           0.5 * (hi - lo).min(axis=1))
        mode = rng.integers(0, len(MODES), size=n)
        pos = base["positions"][:, 0].copy()
        positions, velocities = np.empty((n, t, 2)), np.empty((n, t, 2))
        modes = np.empty((n, t), dtype=np.int64)
        switches = np.zeros((n, t), dtype=bool)
        for step in range(t):
            if step > 0:  # both draws for every digit and frame: the stream does not depend on outcomes
                switch = rng.uniform(size=n) < self.switch_probability
                other = (mode + rng.integers(1, len(MODES), size=n)) % len(MODES)
                mode, switches[:, step] = np.where(switch, other, mode), switch
            vel = MODE_STEPS[mode] * speed[:, None]
            out = ((pos + vel) < lo - 1e-9) | ((pos + vel) > hi + 1e-9)
            reverse = out.any(axis=1)
            mode = np.where(reverse, _OPPOSITE[mode], mode)
            vel = MODE_STEPS[mode] * speed[:, None]
            positions[:, step], velocities[:, step], modes[:, step] = pos, vel, mode
            pos = np.clip(pos + vel, lo, hi)
        changes = np.zeros((n, t), dtype=bool)
        changes[:, 1:] = modes[:, 1:] != modes[:, :-1]
        base.update(positions=positions, velocities=velocities, modes=modes, switches=switches,
                    direction_changes=changes, speeds=speed)
        return base

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", switch_probability={self.switch_probability})"
