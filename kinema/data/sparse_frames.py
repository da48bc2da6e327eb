"""A few frames of a long video at random gaps, without reading the clip in between (StyleGAN-V).

StyleGAN-V's discriminator sees 3 frames per video whose total gap is a power of two up to ``max_dist``
(32), and its motion codes span up to 1024 frames; the official loader reads only the picked frames of a
video (``src/training/dataset.py:431-449`` and ``random_frame_sampling``, ``src/training/layers.py:387-411``,
universome/stylegan-v at commit 3fecd69). :class:`SparseFrames` does the same for kinema's folder and cache
datasets: it wraps a :class:`~kinema.data.folder.VideoFolder` (or its subclasses for frame folders and HDF5
files, which read exactly the picked frames) or :class:`~kinema.data.cache.VideoCache` and
returns :class:`~kinema.data.batch.Batch` items whose ``clips`` are ``(C, F, H, W)`` (the ``F`` picked
frames, sorted) and whose ``times`` are ``(F,)`` float frame indices relative to the first picked frame, in
units of ``frame_stride`` (a model that reads only time differences, like StyleGAN-V's discriminator, sees
the true gaps).

Picking (per item, from ``np.random.default_rng([seed, draw, 1])`` -- a pure function of the draw id):
the total gap ``g`` uniformly from the powers of two in ``[F - 1, min(L - 1, max_gap)]`` (``L`` = the
video's length in strided frames), the first frame uniformly in ``[0, L - 1 - g]``, the inner ``F - 2``
frames distinct and uniform strictly inside the gap. Short videos:

* a video shorter than the largest gap gets the gap set clipped to it, as ``random_frame_sampling`` does
  (counted in ``clipped``);
* a video that cannot hold ``F`` frames at the smallest gap (fewer than ``p + 1`` strided frames, ``p``
  the smallest power of two >= ``F - 1``) is skipped with a warning and counted in the wrapped dataset's
  ``skipped`` (the official code fails there with an IndexError from ``random.choice([])``).

Reading: a cache is a memory map, so exactly the ``F`` frames are read (no decoding at all). A folder
decodes its file from frame 0 up to the last picked frame and converts only the picked frames to RGB; it
does not seek (FFmpeg's seeking is keyframe- and timestamp-based, not frame-exact for variable frame rate
files), so for long videos prepare a cache first (``kinema prepare``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from kinema.data.batch import Batch
from kinema.data.cache import VideoCache
from kinema.data.folder import DatasetError, VideoFolder

__all__ = ["SparseFrames", "build_sparse_dataset", "gap_set", "min_length", "pick_frames"]


def gap_set(frames: int, max_gap: int, length: int) -> list[int]:
    """Total gaps (last - first picked frame) a video of ``length`` frames allows: the powers of two in
    ``[frames - 1, min(length - 1, max_gap)]`` (the official ``total_dists`` with ``max_dist``)."""
    hi = min(length - 1, max_gap)
    return [2**k for k in range(31) if frames - 1 <= 2**k <= hi]


def pick_frames(rng: np.random.Generator, frames: int, max_gap: int, length: int) -> np.ndarray:
    """``frames`` sorted distinct indices in ``[0, length)``: first and last ``g`` apart (``g`` from
    :func:`gap_set`), the others strictly between. Raises ``ValueError`` when no gap fits."""
    gaps = gap_set(frames, max_gap, length)
    if not gaps:
        raise ValueError(f"a video of {length} frames cannot hold {frames} frames at a power-of-two gap "
                         f"<= {max_gap}")
    gap = gaps[int(rng.integers(len(gaps)))]
    offset = int(rng.integers(0, length - gap))
    picks = [offset, offset + gap]
    if frames > 2:
        picks += (offset + 1 + rng.choice(gap - 1, size=frames - 2, replace=False)).tolist()
    return np.sort(np.asarray(picks, dtype=np.int64))


def build_sparse_dataset(cfg, *, height: int, width: int, seed: int, uint8: bool = False) -> SparseFrames:
    """The training dataset a data config with ``sparse_frames > 0`` describes: its folder or cache (built by
    :func:`kinema.data.build_dataset` with the shortest usable clip length, so too-short videos are skipped
    and counted there) wrapped in :class:`SparseFrames`. Evaluation keeps ``build_dataset``'s whole clips."""
    from kinema.data import build_dataset

    frames = int(cfg.sparse_frames)
    if cfg.source not in ("folder", "frames", "hdf5", "cache"):
        raise ValueError(f'data.sparse_frames needs data.source = "folder", "frames", "hdf5" or "cache", '
                         f"got {cfg.source!r}")
    base = build_dataset(cfg, frames=min_length(frames), height=height, width=width, seed=seed, train=True,
                         uint8=uint8)
    return SparseFrames(base, frames, int(cfg.sparse_max_gap))


def min_length(frames: int) -> int:
    """Fewest (strided) frames a video needs: the smallest power-of-two gap >= ``frames - 1``, plus one."""
    gap = 1
    while gap < frames - 1:
        gap *= 2
    return gap + 1


class SparseFrames(Dataset):
    """``frames`` frames per item at random power-of-two gaps up to ``max_gap`` from the videos of a
    :class:`VideoFolder` (or a subclass: frames, hdf5) or :class:`VideoCache` (built with ``frames = min_length(frames)`` by
    :func:`build_sparse_dataset`, so it has already skipped the videos too short to use).

    ``ds.clip(i, draw)`` is a :class:`Batch` item: ``clips`` float32 ``(3, frames, H, W)`` in ``[-1, 1]``
    (uint8 when the cache was built with ``uint8=True``), ``times`` float32 ``(frames,)``, and ``labels``
    when the cache returns labels. The crop and flip are the wrapped dataset's, drawn from the same
    ``draw``. ``ds[i]`` is ``ds.clip(i, draw=i)``. Training only: evaluation needs whole clips.
    """

    def __init__(self, base: VideoFolder | VideoCache, frames: int, max_gap: int):
        if not isinstance(base, (VideoFolder, VideoCache)):
            raise TypeError(f"SparseFrames wraps a VideoFolder or VideoCache, got {type(base).__name__}")
        if frames < 2:
            raise ValueError(f"SparseFrames: frames must be >= 2 (first and last frame of a gap), got {frames}")
        if max_gap < frames - 1:
            raise ValueError(f"SparseFrames: max_gap ({max_gap}) must be >= frames - 1 ({frames - 1})")
        if base.frames != min_length(frames):
            raise ValueError(f"SparseFrames: build the wrapped dataset with frames = {min_length(frames)} (the "
                             f"shortest usable video), got {base.frames}")
        self.base, self.frames, self.max_gap = base, int(frames), int(max_gap)
        self.seed, self.stride = base.seed, base.frame_stride
        lengths = self.lengths()
        self.clipped = sum(1 for n in lengths if n - 1 < max_gap)  # videos shorter than the largest gap
        if self.clipped:
            warnings.warn(f"SparseFrames: {self.clipped} of {len(lengths)} videos are shorter than the largest gap "
                          f"({max_gap} strided frames); their gap set is clipped to their length", stacklevel=2)

    def lengths(self) -> list[int]:
        """Every usable video's length in strided frames: ``ceil(frames_in_file / frame_stride)``."""
        if isinstance(self.base, VideoCache):
            raw = [int(v["frames"]) for v in self.base.videos]
        else:
            raw = list(self.base.num_frames)
        return [(n - 1) // self.stride + 1 for n in raw]

    @property
    def skipped(self) -> dict[str, str]:
        return self.base.skipped

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Batch:
        return self.clip(i, draw=int(i))

    def clip(self, i: int, draw: int | None = None) -> Batch:
        """Item ``i`` for draw id ``draw`` (default ``i``): the same frames, crop and flip for the same
        ``(seed, draw)``, in any process or DataLoader worker."""
        n = len(self.base)
        i = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for SparseFrames of length {n}")
        draw = i if draw is None else int(draw)
        rng = np.random.default_rng([self.seed, draw, 1])  # frame picks, crop and flip
        if isinstance(self.base, VideoCache):
            return self._cache_clip(i, rng)
        return self._folder_clip(i, rng)

    def _batch(self, clip: torch.Tensor, picks: np.ndarray, label: torch.Tensor | None = None) -> Batch:
        times = torch.from_numpy((picks - picks[0]).astype(np.float32))
        return Batch(clip, labels=label, times=times)

    def _cache_clip(self, i: int, rng: np.random.Generator) -> Batch:
        ds = self.base
        video = ds.array(i)
        length = (len(video) - 1) // self.stride + 1
        picks = pick_frames(rng, self.frames, self.max_gap, length)
        lo, hi = ds.crop_range()
        left = int(rng.integers(lo, hi + 1))
        flip = ds.flip and bool(rng.random() < 0.5)
        raw = np.ascontiguousarray(video[picks * self.stride, :, left : left + ds.width])  # F frames only
        clip = torch.from_numpy(raw).permute(3, 0, 1, 2)  # (3, F, H, W) uint8
        if flip:
            clip = clip.flip(-1)
        clip = clip.contiguous() if ds.uint8 else clip.float() / 127.5 - 1.0
        label = torch.tensor(ds.label(i)) if ds.return_label else None
        return self._batch(clip, picks, label)

    def _folder_clip(self, i: int, rng: np.random.Generator) -> Batch:
        ds = self.base
        # file i, then the files after it: one that breaks mid-run is replaced (as VideoFolder.clip does)
        for k in range(len(ds.videos)):
            j = (i + k) % len(ds.videos)
            path = ds.videos[j]
            if str(path) in ds.skipped:
                continue
            length = (ds.num_frames[j] - 1) // self.stride + 1
            picks = pick_frames(rng, self.frames, self.max_gap, length)
            raw = ds.read_frames(j, picks * self.stride)  # None (recorded in ds.skipped) when the video fails
            if raw is not None:
                return self._batch(ds._transform(raw, rng), picks)
        raise DatasetError(f"every video in {ds.root} failed to read ({len(ds.skipped)} skipped); see .skipped")
