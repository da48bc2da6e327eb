"""VideoGPT's HDF5 video file (``data.source = "hdf5"``): BAIR robot pushing as the authors prepared it.

Layout, as the authors' ``HDF5Dataset`` reads it (wilson1yan/VideoGPT at 733d2b1, ``videogpt/data.py``
lines 109-167) and their ``scripts/preprocess/bair/bair_image_to_hdf5.py`` writes it:

* ``{split}_data``: uint8 ``(N, H, W, 3)``, the frames of every video of the split one after another
  (BAIR: 64x64, 30 frames per video);
* ``{split}_idx``: integer ``(V,)``, the index in ``{split}_data`` of each video's first frame, ascending
  (BAIR: ``0, 30, 60, ...``); video ``v`` is frames ``idx[v] .. idx[v + 1] - 1``, the last one runs to ``N``;
* ``split`` is ``train`` or ``test``; other datasets (``{split}_actions``) are not read.

To make the file: ``sh scripts/preprocess/bair/create_bair_dataset.sh OUT_DIR`` in a checkout of
wilson1yan/VideoGPT (downloads the BAIR TFRecords, needs TensorFlow) writes ``OUT_DIR/bair.hdf5``.

``h5py`` is imported only when such a dataset is built (``pip install 'kinema[hdf5]'``).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from kinema.data.folder import DatasetError, VideoFolder
from kinema.video.io import VideoReadError

__all__ = ["HDF5_SPLITS", "HDF5Videos", "import_h5py"]

HDF5_SPLITS = ("train", "test")


def import_h5py():
    """The ``h5py`` module, or an ImportError saying how to install it."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError('data.source = "hdf5" reads HDF5 files with h5py, which is not installed: '
                          "pip install 'kinema[hdf5]' (or pip install 'h5py>=3')") from e
    return h5py


class _Video(NamedTuple):
    """Frames ``start .. end - 1`` of ``{split}_data``; ``str()`` is how messages and ``skipped`` name it."""

    split: str
    number: int
    start: int
    end: int

    def __str__(self) -> str:
        return f"{self.split} video {self.number} ({self.split}_data[{self.start}:{self.end}])"


class HDF5Videos(VideoFolder):
    """The videos of one split of a VideoGPT HDF5 file (see the module docstring), one clip per video.

    ``ds[i]`` / ``ds.clip(i, draw)`` are float32 ``(3, frames, height, width)`` in ``[-1, 1]`` (the authors
    use ``[-0.5, 0.5]``; kinema's datasets all use ``[-1, 1]``), sampled, resized, cropped and flipped as
    :class:`~kinema.data.folder.VideoFolder` does (same arguments, same seeding); BAIR's 64x64 frames at
    model resolution 64 are used as stored. Training start frames are uniform in ``[0, L - span - 1]`` for a
    video of ``L`` frames and a clip spanning ``span = (frames - 1) * frame_stride + 1``, as the authors'
    ``np.random.randint(0, L - sequence_length)`` (``videogpt/data.py:163``; its upper bound is exclusive,
    so the last window is never drawn); a video of exactly ``span`` frames, where that call fails, gives its
    one clip. Evaluation (``train=False``) takes the first frames, as ``VideoFolder`` does.

    Videos shorter than ``span`` are skipped with a warning and counted in ``skipped``. The file is opened
    lazily in each process and never pickled, so DataLoader workers each get their own handle.
    """

    noun = "videos"

    def __init__(self, path: str | os.PathLike, frames: int, height: int, width: int, split: str = "train",
                 frame_stride: int = 1, train: bool = True, flip: bool = False, seed: int = 0):
        if split not in HDF5_SPLITS:
            raise ValueError(f"HDF5Videos: split must be one of {', '.join(HDF5_SPLITS)}, got {split!r}")
        self.split = split
        self._handle, self._pid = None, None
        try:
            super().__init__(path, frames, height, width, frame_stride=frame_stride, train=train, flip=flip,
                             seed=seed)
        finally:
            self._close()  # opened again on first read, in whichever process reads

    def _candidates(self) -> list[_Video]:
        if not self.root.is_file():
            where = "is a folder" if self.root.is_dir() else "does not exist"
            raise FileNotFoundError(
                f"HDF5 file {self.root} {where}: data.source = \"hdf5\" needs data.path set to an HDF5 file in "
                "VideoGPT's layout (train_data/train_idx, test_data/test_idx), e.g. bair.hdf5 written by the authors' "
                "scripts/preprocess/bair/create_bair_dataset.sh")
        h5py = import_h5py()
        try:
            handle = self._file()
        except OSError as e:
            raise DatasetError(f"{self.root} is not a readable HDF5 file ({e}); data.source = \"hdf5\" expects "
                               "the file VideoGPT's scripts/preprocess/bair/bair_image_to_hdf5.py writes") from e
        data_name, idx_name = f"{self.split}_data", f"{self.split}_idx"
        missing = [n for n in (data_name, idx_name) if not isinstance(handle.get(n), h5py.Dataset)]
        if missing:
            found = []
            handle.visititems(lambda name, obj: found.append(
                f"{name} {obj.shape} {obj.dtype}" if isinstance(obj, h5py.Dataset) else f"{name}/"))
            raise DatasetError(
                f"{self.root} has no dataset {' or '.join(missing)} (data.split = {self.split!r}); it holds "
                f"{', '.join(found) if found else 'no datasets at all'}. Expected VideoGPT's layout: {data_name} "
                f"uint8 (N, H, W, 3) frames and {idx_name} (V,) the first frame of each video")
        data, idx = handle[data_name], handle[idx_name]
        if data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8:
            raise DatasetError(f"{self.root}: {data_name} is {data.dtype} {data.shape}, expected uint8 (N, H, W, 3) "
                               "RGB frames")
        starts = np.asarray(idx[()])
        if starts.ndim != 1 or len(starts) == 0 or not np.issubdtype(starts.dtype, np.integer):
            raise DatasetError(f"{self.root}: {idx_name} is {starts.dtype} {starts.shape}, expected a non-empty "
                               "integer (V,) array: the index of each video's first frame in " + data_name)
        n = len(data)
        ends = np.append(starts[1:], n)
        bad = np.flatnonzero((starts < 0) | (ends < starts) | (starts > n))
        if len(bad):
            v = int(bad[0])
            raise DatasetError(f"{self.root}: {idx_name} must ascend from 0 to at most {n} (len({data_name})), but "
                               f"video {v} would be frames {int(starts[v])}..{int(ends[v]) - 1}; the file is not in "
                               "VideoGPT's layout or is damaged")
        return [_Video(self.split, v, int(s), int(e)) for v, (s, e) in enumerate(zip(starts, ends))]

    def _probe(self, video: _Video) -> int:
        return video.end - video.start

    def _read_clip(self, j: int, rng: np.random.Generator) -> np.ndarray | None:
        # the authors' start range (class docstring), not VideoFolder's [0, L - span]
        start = int(rng.integers(0, max(1, self.num_frames[j] - self.span))) if self.train else 0
        return self.read_frames(j, start + self.frame_stride * np.arange(self.frames))

    def _read_frames(self, j: int, indices: np.ndarray) -> np.ndarray:
        video = self.videos[j]
        try:
            # h5py reads a list of increasing indices along the first axis without reading the rows between
            return self._file()[f"{self.split}_data"][(video.start + np.asarray(indices)).tolist()]
        except (OSError, KeyError, ValueError) as e:
            raise VideoReadError(video, f"HDF5 read failed ({e})") from e

    def _file(self):
        if self._handle is None or self._pid != os.getpid():  # a forked worker opens its own
            self._handle, self._pid = import_h5py().File(self.root, "r"), os.getpid()
        return self._handle

    def _close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"] = None, None  # an h5py handle does not pickle (spawned workers)
        return state
