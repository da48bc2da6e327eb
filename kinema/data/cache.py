"""A cache written by ``kinema prepare`` as a dataset of clips, read by memory map (no decoding)."""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kinema.data.batch import Batch
from kinema.data.folder import DatasetError

__all__ = ["CacheError", "VideoCache"]


class CacheError(DatasetError):
    """A prepared cache is missing, incomplete, damaged or does not fit the model; says how to fix it."""


class VideoCache(Dataset):
    """Clips of ``frames`` frames from a cache prepared by ``kinema prepare`` (one ``.npy`` per video).

    ``ds.clip(i, draw)`` is float32 ``(3, frames, height, width)`` in ``[-1, 1]`` (``x / 127.5 - 1``,
    as :func:`kinema.video.from_uint8`): frames ``s, s + k, ..., s + (frames - 1) k`` (``k`` =
    ``frame_stride``) of video ``i``, columns ``x .. x + width`` of the cached ``height x W`` frames.

    * Training (``train=True``): random start ``s``, random crop offset ``x``, with ``flip`` a random
      horizontal flip, all drawn from ``np.random.default_rng([seed, draw])`` -- a pure function of
      ``(seed, draw)``, so the trainer (which passes a global draw id, see :class:`kinema.data.Draws`)
      gets the same clips for any number of DataLoader workers, processes, or after a resume. ``x``
      is uniform in ``[m, W - width - m]`` with ``m = crop_margin`` (TGANv2: 192x256 cache, 192x192
      crop, m = 4); when ``W - width < 2 m`` the margin shrinks to ``(W - width) // 2`` (a centred
      band; no margin at all when ``W == width``), never a crop outside the frame.
    * Evaluation (``train=False``): the first frames, the centre crop ``x = (W - width) // 2``, no flip.
    * ``ds[i]`` is ``ds.clip(i, draw=i)``: fixed, the same on every call.

    The cache height must equal ``height`` and its width be at least ``width`` (no resize at read
    time; that is the point of the cache). Videos shorter than ``(frames - 1) * frame_stride + 1``
    are skipped with a warning and counted in ``skipped`` (source -> reason). ``ds.label(i)`` is the
    0-based class index (-1: unlabelled), ``ds.class_names`` the names; with ``return_label`` items are
    :class:`~kinema.data.batch.Batch` items with ``labels``. ``uint8=True`` returns the clip as uint8
    ``(3, frames, height, width)`` in ``[0, 255]`` instead (the trainer asks for this and converts on
    its device: a quarter of the bytes through the DataLoader). Memory maps are opened lazily in each process
    (keyed by pid, at most ``max_open`` at a time), so DataLoader workers never share one.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        frames: int,
        height: int,
        width: int,
        frame_stride: int = 1,
        train: bool = True,
        flip: bool = False,
        crop_margin: int = 4,
        seed: int = 0,
        return_label: bool = False,
        max_open: int = 128,
        uint8: bool = False,
    ):
        for name, value in {"frames": frames, "height": height, "width": width, "frame_stride": frame_stride}.items():
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"VideoCache: {name} must be an integer >= 1, got {value!r}")
        if crop_margin < 0:
            raise ValueError(f"VideoCache: crop_margin must be >= 0, got {crop_margin}")
        self.root = Path(root)
        self.frames, self.height, self.width = int(frames), int(height), int(width)
        self.frame_stride, self.crop_margin = int(frame_stride), int(crop_margin)
        self.train, self.flip, self.seed, self.return_label = bool(train), bool(flip), int(seed), bool(return_label)
        self.max_open = max(1, int(max_open))
        self.uint8 = bool(uint8)
        self.span = (self.frames - 1) * self.frame_stride + 1
        self.meta = self._read_meta()
        cache_h, cache_w = self.meta["resolution"]
        if cache_h != self.height or cache_w < self.width:
            raise CacheError(
                f"cache {self.root} holds {cache_h}x{cache_w} frames (height x width) but the model asks for "
                f"{self.height}x{self.width}: the cache height {cache_h} must equal the model resolution {self.height} "
                f"and its width must be >= {self.width}. Prepare a matching cache (kinema prepare --resolution "
                f"{self.height}x{max(self.width, round(self.height * 4 / 3))} ...) or set model.resolution = {cache_h}"
            )
        self.cache_width = int(cache_w)
        index = self._read_json("index.json")
        self.class_names: list[str | None] = list(index.get("classes", []))
        self.skipped: dict[str, str] = {}
        self.videos: list[dict] = []
        missing = []
        for video in index["videos"]:
            self._check_entry(video)
            if not (self.root / video["file"]).is_file():
                missing.append(video["file"])
            elif video["frames"] < self.span:
                self.skipped[video["source"]] = (
                    f"too short: {video['frames']} frames, a clip needs {self.span} "
                    f"(frames={self.frames}, frame_stride={self.frame_stride})")
            else:
                self.videos.append(video)
        if missing:
            raise CacheError(
                f"cache {self.root} is damaged: {len(missing)} files listed in index.json are missing "
                f"(e.g. {', '.join(missing[:3])}); rerun `{self.meta.get('command', 'kinema prepare')}` to restore them"
            )
        if self.skipped:
            warnings.warn(
                f"VideoCache {self.root}: skipping {len(self.skipped)} of {len(index['videos'])} videos shorter than "
                f"{self.span} frames (e.g. {next(iter(self.skipped))}); see .skipped", stacklevel=2)
        if not self.videos:
            raise CacheError(
                f"no usable video in cache {self.root}: all {len(index['videos'])} are shorter than the {self.span} "
                "frames a clip needs; lower model.frames or data.frame_stride"
            )
        self._pid: int | None = None
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()

    def _read_json(self, name: str) -> dict:
        path = self.root / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise CacheError(
                f"{self.root} is not a kinema cache: {name} is missing. Create one with `kinema prepare --data VIDEOS "
                f"--out {self.root} --resolution HxW` (see docs/data.md)"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CacheError(f"cache {self.root}: cannot read {name} ({exc}); rerun kinema prepare on it") from exc

    def _check_entry(self, video: object) -> None:
        """An index.json entry names a file inside the cache: a relative path without ``..`` (never an
        absolute path or one that climbs out), so a cache can only ever read its own files."""
        fix = f"rerun `{self.meta.get('command', 'kinema prepare')}` to write a correct index.json"
        if not isinstance(video, dict) or not all(k in video for k in ("file", "source", "frames")):
            raise CacheError(f"cache {self.root}: index.json has a malformed entry {str(video)[:120]!r} "
                             f"(file, source and frames required); {fix}")
        file = video["file"]
        parts = Path(file).parts if isinstance(file, str) else ()
        if not isinstance(file, str) or not file or Path(file).is_absolute() or Path(file).drive or ".." in parts \
                or file.startswith(("/", "\\")):
            raise CacheError(
                f"cache {self.root}: index.json entry {video.get('source')!r} points outside the cache "
                f"(file {file!r}); entries must be paths inside the cache folder such as videos/NAME.npy. "
                f"Refusing to read it: {fix}")

    def _read_meta(self) -> dict:
        meta = self._read_json("meta.json")
        if meta.get("complete") is not True:
            command = meta.get("command", f"kinema prepare ... --out {self.root}")
            raise CacheError(
                f"cache {self.root} is incomplete (its preparation was interrupted or failed, so meta.json has no "
                f'"complete": true). Rerun `kinema prepare` with the same arguments to finish it: {command}'
            )
        return meta

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pid"], state["_open"] = None, OrderedDict()  # memory maps never travel to other processes
        return state

    def __len__(self) -> int:
        return len(self.videos)

    def array(self, i: int) -> np.ndarray:
        """Video ``i`` as its read-only memory map, ``uint8 (T, H, W, 3)``."""
        if self._pid != os.getpid():  # first use in this process (e.g. a forked DataLoader worker)
            self._pid, self._open = os.getpid(), OrderedDict()
        array = self._open.get(i)
        if array is None:
            path = self.root / self.videos[i]["file"]
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                # numpy's text for a foreign file suggests allow_pickle (running its code): never pass that on
                detail = "not a .npy array: damaged or replaced" if "pickle" in str(exc) else exc
                raise CacheError(f"cache file {path} cannot be read ({detail}); rerun "
                                 f"`{self.meta.get('command', 'kinema prepare')}` to restore it") from exc
            if len(self._open) >= self.max_open:
                self._open.popitem(last=False)
            self._open[i] = array
        else:
            self._open.move_to_end(i)
        return array

    def label(self, i: int) -> int:
        """0-based class index of video ``i`` (-1 when the cache has no labels)."""
        return int(self.videos[self._index(i)]["label"])

    def source(self, i: int) -> str:
        """Path of video ``i``'s source file, relative to the prepared folder."""
        return self.videos[self._index(i)]["source"]

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += len(self.videos)
        if not 0 <= i < len(self.videos):
            raise IndexError(f"index {i} out of range for VideoCache of length {len(self.videos)}")
        return i

    def crop_range(self) -> tuple[int, int]:
        """Smallest and largest training crop offset ``x`` (inclusive)."""
        room = self.cache_width - self.width
        margin = min(self.crop_margin, room // 2)
        return margin, room - margin

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        i = self._index(i)
        return self.clip(i, draw=i)

    def clip(self, i: int, draw: int | None = None) -> torch.Tensor | tuple[torch.Tensor, int]:
        """Clip of video ``i``: float32 ``(3, frames, height, width)`` in ``[-1, 1]`` (and its label with
        ``return_label``). ``draw`` (an integer >= 0; default ``i``) fixes start, crop and flip."""
        i = self._index(i)
        video = self.array(i)
        n = len(video)
        if self.train:
            rng = np.random.default_rng([self.seed, int(i if draw is None else draw)])
            start = int(rng.integers(0, n - self.span + 1))
            lo, hi = self.crop_range()
            left = int(rng.integers(lo, hi + 1))
            flip = self.flip and bool(rng.random() < 0.5)
        else:
            start, left, flip = 0, (self.cache_width - self.width) // 2, False
        raw = np.ascontiguousarray(video[start : start + self.span : self.frame_stride, :, left : left + self.width])
        if flip:  # torch's flip of whole pixels is 3x faster than numpy copying a reversed view
            raw = torch.from_numpy(raw).flip(2).numpy()
        if self.uint8:  # the trainer converts on its device: 4x less to collate, pin and copy
            clip = torch.from_numpy(np.ascontiguousarray(raw.transpose(3, 0, 1, 2)))
            return Batch(clip, torch.tensor(self.label(i))) if self.return_label else clip
        # uint8 (T, H, W, 3) -> float32 (3, T, H, W) in one numpy pass (faster than torch's strided cast);
        # the same values as kinema.video.from_uint8: x / 127.5 - 1.
        x = raw.transpose(3, 0, 1, 2).astype(np.float32)
        x /= np.float32(127.5)
        x -= np.float32(1.0)
        clip = torch.from_numpy(x)
        return Batch(clip, torch.tensor(self.label(i))) if self.return_label else clip
