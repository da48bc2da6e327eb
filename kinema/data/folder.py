"""A folder of video files as a dataset of fixed-size clips."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, get_worker_info

from kinema.video.io import VideoReadError, _decode, from_uint8, probe_num_frames

__all__ = ["VIDEO_EXTENSIONS", "VideoFolder", "find_files"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".gif")

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset cannot provide clips (no usable video); the message says why and how to fix it."""


def find_files(root: str | os.PathLike, extensions: tuple[str, ...], skip_hidden: bool = False) -> list[Path]:
    """Every file under ``root`` whose suffix (lower-cased) is in ``extensions``, searched recursively
    and sorted by relative path; files keep the path they were found under (``root/link/a.mp4``).

    Symbolic links to folders are followed (a linked class folder is a class like any other). A link
    back to a folder it sits in (a loop) is skipped with a warning naming it; unreadable folders are
    skipped with a warning. ``skip_hidden`` leaves out files whose name starts with ``"."``.
    """
    root = Path(root)
    found: list[Path] = []

    def walk(folder: str, ancestors: frozenset[str]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            if folder == str(root):
                raise
            warnings.warn(f"skipping folder {folder}: cannot list it ({exc.strerror or exc})", stacklevel=4)
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                real = os.path.realpath(entry.path)
                if real in ancestors:
                    warnings.warn(f"skipping {entry.path}: a symbolic link to {real}, a folder that contains it "
                                  "(a loop); its videos are found through the folder itself", stacklevel=4)
                    continue
                walk(entry.path, ancestors | {real})
            elif os.path.splitext(entry.name)[1].lower() in extensions and not (skip_hidden and entry.name.startswith(".")):
                try:
                    if entry.is_file(follow_symlinks=True):  # a broken link is not a video
                        found.append(Path(entry.path))
                except OSError:
                    pass

    walk(str(root), frozenset({os.path.realpath(root)}))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


class VideoFolder(Dataset):
    """Every video file under ``root`` (recursive, sorted by path) as one clip per file.

    ``ds[i]`` is float32 ``(3, frames, height, width)`` in ``[-1, 1]``: ``frames`` frames taken
    every ``frame_stride`` frames, resized (bilinear, antialiased) so the frame covers
    ``height x width`` with its aspect ratio kept, then cropped to that size.

    Training (``train=True``) picks a random start frame, a random crop and, with ``flip``, a
    random horizontal flip. ``clip(i, draw)`` seeds them from ``(seed, draw)`` alone, so the
    trainer (which passes a global draw id, see :class:`kinema.data.Draws`) gets the same clips for
    any number of DataLoader workers, processes, or a resume. Plain ``ds[i]`` seeds from
    ``(seed, i, n, worker seed)``, where ``n`` counts the calls this copy has served (repeated reads
    differ) and the worker seed is the one PyTorch gives each DataLoader worker. Evaluation
    (``train=False``) is deterministic: the first frames, centre crop, no flip.

    Files are probed at construction; unreadable, empty, non-video, truncated or too-short files
    are skipped with one warning each and recorded in ``skipped`` (path -> reason). Files with
    another extension are ignored. A file that probed fine but fails when a clip is read is
    warned about once, added to ``skipped`` and replaced by the next usable file, so a long run
    does not crash; with DataLoader workers this bookkeeping lives in each worker's copy.

    Other stores of videos (:class:`~kinema.data.frames.FrameFolder`, folders of image files;
    :class:`~kinema.data.hdf5.HDF5Videos`, VideoGPT's HDF5 file) subclass this and override only
    how videos are found (``_candidates``), counted (``_probe``) and read (``_read_frames``): clip
    sampling, resizing, cropping, flipping and the skip bookkeeping are this class's, shared.
    """

    noun = "video files"  # what one candidate is, in messages

    def __init__(
        self,
        root: str | os.PathLike,
        frames: int,
        height: int,
        width: int,
        frame_stride: int = 1,
        train: bool = True,
        flip: bool = False,
        seed: int = 0,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    ):
        sizes = {"frames": frames, "height": height, "width": width, "frame_stride": frame_stride}
        for name, value in sizes.items():
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"VideoFolder: {name} must be an integer >= 1, got {value!r}")
        self.root = Path(root)
        self.frames, self.height, self.width = int(frames), int(height), int(width)
        self.frame_stride = int(frame_stride)
        self.train, self.flip, self.seed = bool(train), bool(flip), int(seed)
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.span = (self.frames - 1) * self.frame_stride + 1  # frames a clip covers in the file
        self.skipped: dict[str, str] = {}
        self._calls = 0

        candidates = self._candidates()
        self.videos: list = []  # one id per usable video (a Path here; str(id) keys ``skipped``)
        self.num_frames: list[int] = []
        for path in candidates:
            try:
                n = self._probe(path)
            except VideoReadError as e:
                self._skip(path, e.reason)
                continue
            if n < self.span:
                self._skip(path, f"too short: {n} frames, a clip needs {self.span} "
                                 f"(frames={self.frames}, frame_stride={self.frame_stride})")
                continue
            self.videos.append(path)
            self.num_frames.append(n)

        if not self.videos:
            reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in list(self.skipped.items())[:3])
            raise DatasetError(
                f"no usable video in {self.root}: all {len(candidates)} {self.noun} were skipped "
                f"(first reasons: {reasons}). Fix or remove them, or lower model.frames / data.frame_stride "
                "if they are too short"
            )
        self._total = len(candidates)
        if self.skipped:
            warnings.warn(self.summary(), stacklevel=2)
        else:
            log.info(self.summary())

    def _candidates(self) -> list[Path]:
        """Every video to probe (here: the files under ``root`` with a video extension)."""
        if not self.root.exists():
            raise FileNotFoundError(
                f"video folder {self.root} does not exist: data.path must point to a folder of videos "
                f"(searched recursively for {', '.join(self.extensions)})"
            )
        if not self.root.is_dir():
            raise NotADirectoryError(
                f"{self.root} is a file: data.path must point to a folder of videos, not a single file"
            )
        files = find_files(self.root, self.extensions)  # follows linked folders, skips loops with a warning
        if not files:
            raise FileNotFoundError(
                f"no video files under {self.root}: expected files ending in {', '.join(self.extensions)} "
                "(searched recursively); point data.path at the folder that holds them"
            )
        return files

    def _probe(self, video: Path) -> int:
        """Number of frames of ``video``; raises VideoReadError (with the reason) for an unusable one."""
        return probe_num_frames(video)

    def _read_frames(self, j: int, indices: np.ndarray) -> np.ndarray:
        """``uint8 (len(indices), H0, W0, 3)``: frames ``indices`` (sorted frame numbers) of video ``j``.
        Decodes from frame 0 up to the last one (no seeking: FFmpeg's seek is not frame-exact for
        variable frame rate files) and converts only those. Raises VideoReadError."""
        path, wanted, out, seen = self.videos[j], set(int(x) for x in indices), [], 0
        for frame in _decode(path, stop=int(indices[-1]) + 1):
            if seen in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
            seen += 1
        if len(out) < len(indices):
            raise VideoReadError(path, f"only {seen} frames decodable, the header promised {self.num_frames[j]}")
        return np.stack(out)

    def read_frames(self, j: int, indices: np.ndarray) -> np.ndarray | None:
        """``uint8 (len(indices), H0, W0, 3)``: frames ``indices`` (sorted) of video ``j``, or None when the
        video fails (then recorded in ``skipped`` with a warning, so callers move on to another video)."""
        try:
            return self._read_frames(j, np.asarray(indices))
        except VideoReadError as e:
            self._skip(self.videos[j], f"failed at read time: {e.reason}")
            return None

    def _skip(self, path, reason: str) -> None:
        self.skipped[str(path)] = reason
        warnings.warn(f"{type(self).__name__}: skipping {path}: {reason}", stacklevel=3)

    def summary(self) -> str:
        """One line: how many videos are usable and how many were skipped."""
        return (f"{type(self).__name__} {self.root}: {len(self.videos)} of {self._total} {self.noun} usable, "
                f"{len(self.skipped)} skipped (see .skipped for reasons)")

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> torch.Tensor:
        """Clip from file ``i``: float32 ``(3, frames, height, width)`` in ``[-1, 1]``."""
        return self.clip(i)

    def clip(self, i: int, draw: int | None = None) -> torch.Tensor:
        """Clip from file ``i``; ``draw`` (an integer >= 0) fixes its random start, crop and flip."""
        i = int(i)
        if i < 0:
            i += len(self.videos)
        if not 0 <= i < len(self.videos):
            raise IndexError(f"index {i} out of range for VideoFolder of length {len(self.videos)}")
        rng = self._rng(i) if draw is None else np.random.default_rng([self.seed, int(draw)])
        # Try file i, then the files after it: a file that breaks mid-run is replaced, never zeros.
        for k in range(len(self.videos)):
            j = (i + k) % len(self.videos)
            path = self.videos[j]
            if str(path) in self.skipped:
                continue
            clip = self._read_clip(j, rng)
            if clip is not None:
                return self._transform(clip, rng)
        raise DatasetError(
            f"every video in {self.root} failed to read ({len(self.skipped)} skipped); see .skipped for reasons"
        )

    def _rng(self, i: int) -> np.random.Generator:
        if not self.train:
            return np.random.default_rng([self.seed, i])  # unused by eval transforms
        worker = get_worker_info()
        worker_seed = 0 if worker is None else worker.seed % 2**63
        self._calls += 1
        return np.random.default_rng([self.seed, i, self._calls, worker_seed])

    def _read_clip(self, j: int, rng: np.random.Generator) -> np.ndarray | None:
        """``uint8 (frames, H0, W0, 3)`` from video ``j``, or None (recorded and warned) on failure."""
        start = int(rng.integers(0, self.num_frames[j] - self.span + 1)) if self.train else 0
        return self.read_frames(j, start + self.frame_stride * np.arange(self.frames))

    def _transform(self, raw: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x = from_uint8(raw).transpose(0, 1)  # (T, 3, H0, W0): frames as the batch for interpolate
        h0, w0 = x.shape[-2:]
        scale = max(self.height / h0, self.width / w0)
        size = (max(self.height, round(h0 * scale)), max(self.width, round(w0 * scale)))
        if size != (h0, w0):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        dy, dx = size[0] - self.height, size[1] - self.width
        if self.train:
            top, left = int(rng.integers(0, dy + 1)), int(rng.integers(0, dx + 1))
        else:
            top, left = dy // 2, dx // 2
        x = x[:, :, top : top + self.height, left : left + self.width]
        if self.train and self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        return x.transpose(0, 1).clamp(-1.0, 1.0).contiguous()  # (3, T, H, W)
