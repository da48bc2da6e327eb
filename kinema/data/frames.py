"""Folders of image files as videos (``data.source = "frames"``, ``kinema prepare --layout frames``).

Many datasets ship as one folder of frames per video (BAIR robot pushing after its extraction script,
``0.png ... 29.png``; KTH or UCF-101 dumped with ffmpeg, ``frame_0001.jpg ...``). Every folder under
the root that directly holds image files is one video -- in practice the leaf folders, at any depth --
and its frames are its image files in *natural* order (``frame_2`` before ``frame_10``; plain string
order would put ``10.png`` before ``2.png`` and scramble the motion). Images are read with Pillow and
converted to RGB (greyscale and palette images included).

Bad input, following :class:`~kinema.data.folder.VideoFolder` (a corrupt file is skipped and counted,
never crashes a run):

* a frame that is not a readable image (wrong content, truncated header) makes its whole folder
  unusable -- a sequence with a hole would teach false motion -- so the folder is skipped with a warning
  and counted in ``skipped``; one that breaks only when a clip is read is skipped then, like a video file;
* a folder whose frames have **different sizes** is skipped the same way, naming both sizes and the first
  odd frame. Resizing each frame on its own would hide the problem: ``VideoFolder`` resizes and crops a
  clip with one geometry (a video file has one frame size), and frames of two sizes in one folder are
  almost always two sequences mixed up or a stray thumbnail, whose zoom jump the model would learn;
* files with other extensions (``actions.npy`` beside BAIR's frames, ``.txt`` notes) and hidden files
  (macOS ``._0001.png``) are ignored and counted in ``ignored``;
* a tree with no image files at all is an error naming the path and the expected layout.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from kinema.data.folder import VIDEO_EXTENSIONS, DatasetError, VideoFolder, find_files
from kinema.data.ucf101 import VideoEntry, entries_by_top_folder
from kinema.video.io import VideoReadError, resize_frame

__all__ = ["IMAGE_EXTENSIONS", "FrameFolder", "check_frames", "find_frame_folders", "frame_folder_videos",
           "natural_key", "read_frame"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")

# What Pillow raises for a file it cannot decode: UnidentifiedImageError and truncated data are OSErrors,
# some plugins raise ValueError or SyntaxError (a malformed header), DecompressionBombError for a huge one.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

EXPECTED = ("expected one folder per video holding its frames as image files "
            f"({' '.join(IMAGE_EXTENSIONS)}), at any depth, e.g. DATA/clip_001/frame_0001.png")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``frame_2.png`` < ``frame_10.png`` (case-insensitive,
    ties broken by the name itself)."""
    parts = re.split(r"(\d+)", name)  # str, digits, str, digits, ...: the types alternate the same way
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)) + (name,)


def find_frame_folders(root: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
                       ) -> tuple[dict[Path, list[Path]], int]:
    """``({folder: its image files in natural order}, ignored)`` for every folder under ``root`` (``root``
    included) that directly holds image files, in natural order of the folders' paths; ``ignored`` counts
    the other files (other extensions, hidden files) in those folders. Linked folders are followed and
    loops skipped with a warning (:func:`~kinema.data.folder.find_files`)."""
    root = Path(root)
    folders: dict[Path, list[Path]] = {}
    for path in find_files(root, extensions, skip_hidden=True):
        folders.setdefault(path.parent, []).append(path)
    ignored = 0
    for folder, files in folders.items():
        files.sort(key=lambda p: natural_key(p.name))
        ignored += sum(1 for e in os.scandir(folder) if not e.is_dir()) - len(files)
    order = sorted(folders, key=lambda f: natural_key(f.relative_to(root).as_posix()))
    return {f: folders[f] for f in order}, ignored


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """One image file -> ``uint8 (H, W, 3)`` RGB. Raises VideoReadError naming the file."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except _IMAGE_ERRORS as e:
        raise VideoReadError(path, f"not a readable image ({type(e).__name__}: {e})") from e


def check_frames(files: list[Path]) -> tuple[int, int]:
    """``(height, width)`` shared by every frame of a folder, from the image headers (no decoding).
    Raises VideoReadError (path: the folder) for an unreadable image or frames of different sizes."""
    first_size = None
    for path in files:
        try:
            with Image.open(path) as image:
                size = image.size  # (width, height), read from the header
        except _IMAGE_ERRORS as e:
            raise VideoReadError(path.parent, f"frame {path.name} is not a readable image ({type(e).__name__}: "
                                              f"{e}); replace or remove it") from e
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise VideoReadError(
                path.parent,
                f"frames of different sizes: {files[0].name} is {first_size[1]}x{first_size[0]} (height x width) "
                f"but {path.name} is {size[1]}x{size[0]}; a video's frames must share one size -- resize them "
                "or move the odd ones out")
    return first_size[1], first_size[0]


class FrameFolder(VideoFolder):
    """Every frame folder under ``root`` (see the module docstring) as one clip per folder.

    ``ds[i]`` / ``ds.clip(i, draw)`` are float32 ``(3, frames, height, width)`` in ``[-1, 1]``, sampled,
    resized, cropped and flipped exactly as :class:`~kinema.data.folder.VideoFolder` does for a video
    file (same arguments, same seeding), frame ``k`` of a video being its ``k``-th image in natural order.
    Only the images of the clip are read (every ``frame_stride``-th one), not the ones in between.

    At construction every image's header is read (size, format: as cheap as probing a video file per
    folder); folders with an unreadable image or mixed sizes, or fewer than
    ``(frames - 1) * frame_stride + 1`` images, are skipped with a warning and recorded in ``skipped``
    (folder -> reason). ``ignored`` counts the non-image files found in the frame folders.
    """

    noun = "frame folders"

    def __init__(self, root: str | os.PathLike, frames: int, height: int, width: int, frame_stride: int = 1,
                 train: bool = True, flip: bool = False, seed: int = 0,
                 extensions: tuple[str, ...] = IMAGE_EXTENSIONS):
        self._files: dict[str, list[Path]] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self.ignored = 0
        super().__init__(root, frames, height, width, frame_stride=frame_stride, train=train, flip=flip, seed=seed,
                         extensions=extensions)

    def _candidates(self) -> list[Path]:
        if not self.root.exists():
            raise FileNotFoundError(f"frame folder tree {self.root} does not exist: data.path must point to it; "
                                    f"{EXPECTED}")
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is a file: data.source = \"frames\" needs data.path to be a "
                                     f"folder; {EXPECTED}")
        folders, self.ignored = find_frame_folders(self.root, self.extensions)
        if not folders:
            videos = find_files(self.root, VIDEO_EXTENSIONS)
            hint = (f"; it holds {len(videos)} video files ({videos[0].name}, ...): for those use "
                    'data.source = "folder"') if videos else ""
            raise FileNotFoundError(f"no image files under {self.root}: {EXPECTED}{hint}")
        self._files = {str(folder): files for folder, files in folders.items()}
        return list(folders)

    def _probe(self, folder: Path) -> int:
        files = self._files[str(folder)]
        self._sizes[str(folder)] = check_frames(files)
        return len(files)

    def _read_frames(self, j: int, indices: np.ndarray) -> np.ndarray:
        folder = self.videos[j]
        files, size = self._files[str(folder)], self._sizes[str(folder)]
        out = []
        for k in indices:
            frame = read_frame(files[int(k)])
            if frame.shape[:2] != size:  # the file changed since construction
                raise VideoReadError(folder, f"frame {files[int(k)].name} is {frame.shape[0]}x{frame.shape[1]}, "
                                             f"the folder's frames were {size[0]}x{size[1]} when it was listed")
            out.append(frame)
        return np.stack(out)

    def summary(self) -> str:
        ignored = f"; {self.ignored} non-image files in them ignored" if self.ignored else ""
        return super().summary() + ignored


def frame_folder_videos(root: str | os.PathLike) -> tuple[Path, list[VideoEntry]]:
    """``(root, entries)`` for ``kinema prepare --layout frames``: one entry per frame folder, ``source``
    its path relative to ``root`` (``"."`` for ``root`` itself). A folder nested in a top-level sub-folder
    gets that sub-folder as its class (labels: the sorted names' indices, as ``--layout folder``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root} is not a folder; {EXPECTED}")
    folders, _ = find_frame_folders(root)
    if not folders:
        raise DatasetError(f"no image files under {root}: {EXPECTED}. For video files use --layout folder")
    return root, entries_by_top_folder([folder.relative_to(root).as_posix() for folder in folders])


def decode_frame_folder(folder: str | os.PathLike, height: int, width: int) -> np.ndarray:
    """Every frame of one frame folder, resized as ``kinema prepare`` resizes video frames
    (:func:`kinema.video.io.resize_frame`): ``uint8 (T, height, width, 3)``. Raises VideoReadError for
    an unreadable image, frames of different sizes, or a folder without images."""
    folder = Path(folder)
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
                    and p.is_file()), key=lambda p: natural_key(p.name))
    if not files:
        raise VideoReadError(folder, f"no image files in the folder; {EXPECTED}")
    check_frames(files)
    return np.stack([resize_frame(read_frame(p), height, width) for p in files])
