"""Datasets of video clips: procedural (synthetic), folders of video files or of frame images,
VideoGPT's HDF5 files, prepared caches.

Every dataset returns float32 clips ``(3, T, H, W)`` in ``[-1, 1]``.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from kinema.data.batch import Batch
from kinema.data.cache import CacheError, VideoCache
from kinema.data.captioned import CaptionedShapes
from kinema.data.action_switch import ActionSwitchDigits
from kinema.data.digits import MovingDigits, MovingDigitsStochastic
from kinema.data.folder import VIDEO_EXTENSIONS, DatasetError, VideoFolder
from kinema.data.frames import IMAGE_EXTENSIONS, FrameFolder
from kinema.data.hdf5 import HDF5Videos
from kinema.data.synthetic import (
    SYNTHETIC_FAMILIES,
    BouncingShapes,
    RotatingBars,
    SyntheticVideoDataset,
)

# Registered here, not in synthetic.py, because digits.py builds on synthetic.py. The package
# __init__ runs before any of its modules, so kinema.data.synthetic.SYNTHETIC_FAMILIES (the same dict)
# has them too. scikit-learn is imported only when a digits dataset is constructed.
SYNTHETIC_FAMILIES.update({"moving_digits": MovingDigits, "moving_digits_stochastic": MovingDigitsStochastic})
SYNTHETIC_FAMILIES["captioned_shapes"] = CaptionedShapes  # NÜWA's text/sketch tasks (kinema.data.captioned)
SYNTHETIC_FAMILIES["action_switch_digits"] = ActionSwitchDigits  # motion modes known per frame (DVG)

__all__ = [
    "ActionSwitchDigits",
    "Batch",
    "DATA_SOURCES",
    "SYNTHETIC_FAMILIES",
    "VIDEO_EXTENSIONS",
    "BouncingShapes",
    "CacheError",
    "CaptionedShapes",
    "DatasetError",
    "Draws",
    "FrameFolder",
    "HDF5Videos",
    "IMAGE_EXTENSIONS",
    "MovingDigits",
    "MovingDigitsStochastic",
    "RotatingBars",
    "SyntheticVideoDataset",
    "VideoCache",
    "VideoFolder",
    "build_dataset",
]

DATA_SOURCES = ("synthetic", "folder", "frames", "hdf5", "cache")


def _field(cfg: Any, name: str, source: str) -> Any:
    if not hasattr(cfg, name):
        raise ValueError(f"data config has no field {name!r}, which data.source={source!r} needs")
    return getattr(cfg, name)


# The sources read through VideoFolder's clip sampling: the reader and what data.path must name.
VIDEO_STORES = {
    "folder": (VideoFolder, "a folder of videos"),
    "frames": (FrameFolder, "a folder of frame folders (one folder of images per video)"),
    "hdf5": (HDF5Videos, "an HDF5 file in VideoGPT's layout (e.g. bair.hdf5)"),
}


def build_dataset(
    cfg: Any, *, frames: int, height: int, width: int, seed: int, train: bool = True, uint8: bool = False
) -> Dataset:
    """Build the dataset a data config describes; its items are ``(3, frames, height, width)``,
    float in ``[-1, 1]`` -- or uint8 in ``[0, 255]`` where the source supports ``uint8=True`` (the
    cache), for a consumer that converts on its device (the trainer does).

    ``cfg`` is any object with the attributes ``source`` (one of :data:`DATA_SOURCES`), ``family`` and
    ``num_clips`` (synthetic), ``path``, ``frame_stride`` and ``flip`` (folder, frames, hdf5, cache),
    ``split`` (hdf5: ``"train"`` or ``"test"``), ``crop_margin`` (cache: a folder written by ``kinema prepare``).
    Synthetic data ignores ``train``, ``frame_stride`` and ``flip``: its clips are fixed by
    ``seed``, so pass a different seed for a held-out set.
    """
    source = _field(cfg, "source", "?")
    if source == "synthetic":
        family = _field(cfg, "family", source)
        if family not in SYNTHETIC_FAMILIES:
            raise ValueError(
                f"unknown data.family {family!r}; choose one of {', '.join(sorted(SYNTHETIC_FAMILIES))}"
            )
        return SYNTHETIC_FAMILIES[family](
            num_clips=_field(cfg, "num_clips", source), frames=frames, height=height, width=width, seed=seed
        )
    if source in VIDEO_STORES:
        path = _field(cfg, "path", source)
        store, what = VIDEO_STORES[source]
        if not path:
            raise ValueError(f"data.source={source!r} needs data.path set to {what}, but it is empty")
        extra = {"split": getattr(cfg, "split", "train")} if source == "hdf5" else {}
        return store(
            path, frames, height, width,
            frame_stride=getattr(cfg, "frame_stride", 1), train=train,
            flip=getattr(cfg, "flip", False), seed=seed, **extra,
        )
    if source == "cache":
        path = _field(cfg, "path", source)
        if not path:
            raise ValueError("data.source='cache' needs data.path set to a cache folder written by `kinema prepare`, "
                             "but it is empty")
        return VideoCache(
            path, frames, height, width,
            frame_stride=getattr(cfg, "frame_stride", 1), train=train, flip=getattr(cfg, "flip", False),
            crop_margin=getattr(cfg, "crop_margin", 4), seed=seed, uint8=uint8,
            return_label=getattr(cfg, "labels", False),
        )
    raise ValueError(f"unknown data.source {source!r}; choose one of {', '.join(DATA_SOURCES)}")


class Draws(Dataset):
    """Item ``d`` (a *draw id*: ``epoch * len(dataset) + index``) of a training stream.

    Returns ``dataset.clip(d % len, draw=d)`` when the dataset has random augmentation (its
    randomness is then a pure function of the draw id: the same clip for any number of DataLoader
    workers or training processes, and after a resume), else ``dataset[d % len]``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.length = len(dataset)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, draw: int) -> Any:
        index = int(draw) % self.length
        clip = getattr(self.dataset, "clip", None)
        return clip(index, draw=int(draw)) if clip is not None else self.dataset[index]
