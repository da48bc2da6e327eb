"""Captioned moving shapes: one named-colour circle or square moving in a straight line, with a template
caption ("a red square moves left"), per-frame segmentation masks and a class label -- data on which
text-to-video, sketch-to-video, prediction and unconditional video are all trainable offline (NÜWA's
tasks; docs/models/nuwa.md).

Clip ``i`` is simulated from its own generator (as every :mod:`kinema.data.synthetic` family). ``ds[i]`` is
the clip tensor ``(3, T, H, W)`` like every synthetic family; ``ds.item(i)`` -- and ``ds.clip(i, draw)``,
which the trainer's :class:`kinema.data.Draws` reads -- is a :class:`~kinema.data.batch.Batch` of one clip
with its annotations:

- ``clips (3, T, H, W)`` float32 in ``[-1, 1]``: a dark background and one object of a colour from
  :data:`COLOURS` (pure, saturated: the caption's colour is the object's hue);
- ``text``: ``"a {colour} {shape} moves {direction}"``, e.g. ``"a red square moves left"``;
- ``masks (T, H, W)`` uint8: per-pixel class, 0 background, 1 circle, 2 square (:data:`MASK_CLASSES`) --
  the "sketch" of sketch-to-video;
- ``labels ()`` long: ``(colour * 2 + shape) * 4 + direction`` (indices into :data:`COLOURS`,
  :data:`SHAPES`, :data:`DIRECTIONS`; 32 classes).

The object never touches a wall: its start is drawn so that it moves ``T - 1`` steps in its direction
and stays inside, so the caption's direction holds for the whole clip. ``ground_truth(i)`` holds
``positions (1, T, 2)`` ``(y, x)`` centres, ``velocities (1, T, 2)``, ``radii (1,)``, ``shapes``,
``colours (1, 3)``, ``background (3,)``, and ``colour``, ``shape``, ``direction`` (names), ``caption``
and ``label``.
"""

from __future__ import annotations

import numpy as np
import torch

from kinema.data.batch import Batch
from kinema.data.synthetic import SyntheticVideoDataset, _pair

__all__ = ["COLOURS", "DIRECTIONS", "MASK_CLASSES", "SHAPES", "CaptionedShapes", "caption_words"]

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
}
SHAPES = ("circle", "square")
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit step (dy, dx); y grows downwards
    "left": (0.0, -1.0),
    "right": (0.0, 1.0),
    "up": (-1.0, 0.0),
    "down": (1.0, 0.0),
}
MASK_CLASSES = ("background", "circle", "square")


def caption_words() -> list[str]:
    """Every word a caption of this family can contain."""
    return ["a", "moves", *COLOURS, *SHAPES, *DIRECTIONS]


class CaptionedShapes(SyntheticVideoDataset):
    """One named-colour shape moving left, right, up or down; caption, masks and label per clip.

    ``radius`` and ``speed`` are fractions of ``min(H, W)`` (per frame for the speed); the speed is capped
    so that ``T - 1`` steps fit inside the frame.
    """

    family = "captioned_shapes"

    def __init__(self, num_clips: int, frames: int, height: int, width: int, seed: int = 0,
                 radius: tuple[float, float] = (0.14, 0.2), speed: tuple[float, float] = (0.05, 0.07)):
        super().__init__(num_clips, frames, height, width, seed)
        self.radius = _pair(radius, "radius")
        self.speed = _pair(speed, "speed")

    def _simulate(self, rng: np.random.Generator) -> dict:
        t, size = self.frames, min(self.height, self.width)
        colour = int(rng.integers(len(COLOURS)))
        shape = int(rng.integers(len(SHAPES)))
        direction = int(rng.integers(len(DIRECTIONS)))
        r = float(np.clip(rng.uniform(*self.radius) * size, 1.0, 0.3 * (size - 1)))
        extent = np.array([self.height - 1.0, self.width - 1.0])
        lo, hi = np.full(2, r), extent - r
        step = np.array(list(DIRECTIONS.values())[direction])
        speed = rng.uniform(*self.speed) * size
        speed = min(speed, float((hi - lo).min()) / max(t - 1, 1))  # T - 1 steps fit inside
        travel = step * speed * (t - 1)
        # start such that start + travel stays in [lo, hi] on the moving axis
        start_lo = np.maximum(lo, lo - travel)
        start_hi = np.maximum(np.minimum(hi, hi - travel), start_lo)  # equal when the speed is capped (rounding)
        start = rng.uniform(start_lo, start_hi)
        vel = step * speed
        positions = start[None, None, :] + vel[None, None, :] * np.arange(t)[None, :, None]
        names = (list(COLOURS)[colour], SHAPES[shape], list(DIRECTIONS)[direction])
        return {
            "positions": positions,
            "velocities": np.broadcast_to(vel, (1, t, 2)).copy(),
            "radii": np.array([r]),
            "shapes": [names[1]],
            "colours": np.array([COLOURS[names[0]]]),
            "background": rng.uniform(-1.0, -0.8, size=3),
            "colour": names[0], "shape": names[1], "direction": names[2],
            "caption": f"a {names[0]} {names[1]} moves {names[2]}",
            "label": (colour * len(SHAPES) + shape) * len(DIRECTIONS) + direction,
        }

    def _masks(self, gt: dict) -> np.ndarray:
        """``(T, H, W)`` uint8 class per pixel (:data:`MASK_CLASSES`)."""
        ys = np.arange(self.height, dtype=np.float64)[None, :, None]
        xs = np.arange(self.width, dtype=np.float64)[None, None, :]
        masks = np.zeros((self.frames, self.height, self.width), dtype=np.uint8)
        for k, shape in enumerate(gt["shapes"]):
            dy = ys - gt["positions"][k, :, 0, None, None]
            dx = xs - gt["positions"][k, :, 1, None, None]
            r = gt["radii"][k]
            inside = dy**2 + dx**2 <= r**2 if shape == "circle" else np.maximum(np.abs(dy), np.abs(dx)) <= r
            masks[inside] = MASK_CLASSES.index(shape)
        return masks

    def _render(self, gt: dict) -> np.ndarray:
        video = np.empty((self.frames, self.height, self.width, 3), dtype=np.float32)
        video[:] = gt["background"]
        video[self._masks(gt) > 0] = gt["colours"][0]
        return video

    def caption(self, i: int) -> str:
        """Clip ``i``'s caption (simulated, not rendered)."""
        return self.ground_truth(i)["caption"]

    def clip(self, i: int, draw: int | None = None) -> Batch:
        """The training item of clip ``i`` (``draw`` unused: no augmentation): :meth:`item`."""
        return self.item(i)

    def item(self, i: int) -> Batch:
        """Clip ``i``: ``Batch(clips (3, T, H, W), labels (), text str, masks (T, H, W) uint8)`` (unbatched)."""
        gt = self.ground_truth(self._index(i))
        video = self._render(gt)
        clip = torch.from_numpy(np.ascontiguousarray(video.transpose(3, 0, 1, 2), dtype=np.float32))
        return Batch(clip, labels=torch.tensor(gt["label"]), text=gt["caption"],
                     masks=torch.from_numpy(self._masks(gt)))
