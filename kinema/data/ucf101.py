"""Video lists for ``kinema prepare``: the UCF-101 layout with its official split lists, or any folder.

UCF-101 (Soomro et al. 2012) ships as ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (101 class folders,
13,320 clips; ``gXX`` is one of 25 groups -- the same actors and scene --, ``cYY`` a clip of that
group) and a separate archive ``ucfTrainTestlist/`` with

* ``classInd.txt``: ``"1 ApplyEyeMakeup"`` lines, 1-based class index and class folder name;
* ``trainlist0{1,2,3}.txt``: ``"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"`` (path, 1-based label);
* ``testlist0{1,2,3}.txt``: ``"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"`` (no label column).

Groups are what make the splits disjoint (split 1 tests on groups 1-7, trains on 8-25): clips of a
group share actors and background, so a group on both sides would leak. :func:`ucf101_videos`
checks that a train list and its test list share no (class, group) pair.

Labels are kept 0-based (``classInd`` index - 1) with the class name. One known quirk of the
official archive is kept as is: the folder ``HandstandPushups`` holds ``v_HandStandPushups_*``
files, so the class is taken from the folder (and the lists), never from the file name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from kinema.data.folder import VIDEO_EXTENSIONS, DatasetError, find_files

__all__ = [
    "LAYOUTS",
    "SPLIT_NAMES",
    "UCF101_NAME",
    "VideoEntry",
    "find_splits_dir",
    "folder_videos",
    "list_videos",
    "read_class_index",
    "read_split",
    "ucf101_videos",
]

LAYOUTS = ("folder", "ucf101")
SPLIT_NAMES = tuple(f"{kind}list0{k}" for kind in ("train", "test") for k in (1, 2, 3))
SPLITS_FOLDER = "ucfTrainTestlist"
UCF101_NAME = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$", re.IGNORECASE)

EXPECTED = (
    "expected the UCF-101 layout: class folders (ApplyEyeMakeup/, Archery/, ...) holding "
    "v_<Class>_gXX_cYY.avi files, directly in ROOT or in ROOT/UCF-101, and the split-list folder "
    f"{SPLITS_FOLDER}/ (classInd.txt, trainlist01.txt, testlist01.txt, ...) inside ROOT or next to it "
    "(or given with --splits DIR)"
)


@dataclass(frozen=True)
class VideoEntry:
    """One source video: ``source`` is its path relative to the video root (POSIX separators),
    ``label`` the 0-based class index (-1: unlabelled), ``class_name`` its class, ``group`` the
    UCF-101 group ``gXX`` (None outside UCF-101)."""

    source: str
    label: int = -1
    class_name: str | None = None
    group: int | None = None


def folder_videos(root: str | os.PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[VideoEntry]:
    """Every video under ``root`` (recursive, sorted by relative path).

    A video inside a sub-folder gets that top-level folder as its class (labels are the sorted
    folder names' indices, 0-based); a video directly in ``root`` is unlabelled (label -1).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data {root} is not a folder: give the folder that holds the videos (searched recursively)"
        )
    files = [p.relative_to(root).as_posix() for p in find_files(root, extensions, skip_hidden=True)]
    if not files:
        raise DatasetError(
            f"no video files under {root}: expected files ending in {', '.join(extensions)} (searched recursively)"
        )
    return entries_by_top_folder(files)


def entries_by_top_folder(sources: list[str]) -> list[VideoEntry]:
    """One entry per relative path: its top-level folder is its class (labels: indices of the sorted folder
    names, 0-based); a path directly in the root is unlabelled (label -1)."""
    classes = sorted({s.split("/", 1)[0] for s in sources if "/" in s})
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for source in sources:
        cls = source.split("/", 1)[0] if "/" in source else None
        entries.append(VideoEntry(source, index[cls] if cls else -1, cls, None))
    return entries


def _video_root(root: Path) -> Path:
    """``root`` itself, or ``root/UCF-101`` when the class folders sit there."""
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root} does not exist or is not a folder; {EXPECTED}")
    nested = root / "UCF-101"
    return nested if nested.is_dir() else root


def _has_ucf_videos(folder: Path) -> bool:
    for sub in sorted(p for p in folder.iterdir() if p.is_dir())[:5]:
        if any(UCF101_NAME.match(f.name) for f in sub.iterdir()):
            return True
    return False


def find_splits_dir(root: str | os.PathLike, splits: str | os.PathLike | None = None) -> Path:
    """The ``ucfTrainTestlist`` folder: ``splits`` if given, else inside ``root`` (or ``root/UCF-101``)
    or next to it. Raises FileNotFoundError naming the places searched."""
    if splits is not None:
        path = Path(splits)
        if not (path / "classInd.txt").is_file():
            raise FileNotFoundError(
                f"--splits {path}: no classInd.txt there; point --splits at the {SPLITS_FOLDER}/ folder of the "
                "official UCF-101 split archive (classInd.txt, trainlist01.txt, testlist01.txt, ...)"
            )
        return path
    root = Path(root)
    video_root = _video_root(root)
    candidates = [root / SPLITS_FOLDER, video_root / SPLITS_FOLDER, root.parent / SPLITS_FOLDER,
                  video_root.parent / SPLITS_FOLDER]
    for path in dict.fromkeys(candidates):
        if (path / "classInd.txt").is_file():
            return path
    raise FileNotFoundError(
        f"UCF-101 split lists not found: no {SPLITS_FOLDER}/classInd.txt in "
        + ", ".join(str(p) for p in dict.fromkeys(candidates))
        + f". Unpack the official split archive (UCF101TrainTestSplits-RecognitionTask.zip) inside {root} or next "
        "to it, or give its folder with --splits DIR"
    )


def read_class_index(path: str | os.PathLike) -> list[str]:
    """Class names in label order from ``classInd.txt`` (``"1 ApplyEyeMakeup"`` lines, 1-based)."""
    path = Path(path)
    classes: dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{path}, line {n}: expected '<index> <ClassName>' (e.g. '1 ApplyEyeMakeup'), got {line!r}")
        classes[int(parts[0])] = parts[1]
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise DatasetError(f"{path}: class indices must be 1, 2, ..., N without gaps, got {sorted(classes)[:5]}...")
    return [classes[i] for i in range(1, len(classes) + 1)]


def read_split(path: str | os.PathLike, classes: list[str]) -> list[tuple[str, int]]:
    """``(relative path, 0-based label)`` pairs of a train or test list.

    Train lists carry a 1-based label column; test lists do not, and their label comes from the
    class folder through ``classes`` (``classInd.txt`` order).
    """
    path = Path(path)
    index = {c: i for i, c in enumerate(classes)}
    lower = {c.lower(): i for i, c in enumerate(classes)}
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        rel = parts[0].replace("\\", "/")
        if len(parts) >= 2:
            if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                raise DatasetError(f"{path}, line {n}: label {parts[1]!r} is not in 1..{len(classes)} (classInd.txt)")
            label = int(parts[1]) - 1
        else:
            folder = rel.split("/", 1)[0]
            label = index.get(folder, lower.get(folder.lower(), -1))
            if label < 0:
                raise DatasetError(f"{path}, line {n}: class folder {folder!r} is not in classInd.txt")
        pairs.append((rel, label))
    if not pairs:
        raise DatasetError(f"{path} lists no videos")
    return pairs


def _group(rel: str) -> int:
    match = UCF101_NAME.match(rel.rsplit("/", 1)[-1])
    if match is None:
        raise DatasetError(f"{rel}: not a UCF-101 file name; expected v_<Class>_gXX_cYY.avi")
    return int(match["group"])


def _split_keys(pairs: list[tuple[str, int]]) -> set[tuple[int, int]]:
    return {(label, _group(rel)) for rel, label in pairs}


def ucf101_videos(
    root: str | os.PathLike, split: str | None = None, splits: str | os.PathLike | None = None
) -> tuple[Path, list[VideoEntry]]:
    """The video root and the videos of one official split (``trainlist01`` ... ``testlist03``), or
    of every class folder when ``split`` is None. Entries are sorted by path.

    Raises :class:`DatasetError` (or FileNotFoundError) when ``root`` is not UCF-101, the split
    files are missing, a list names videos that are not on disk (the first few are listed), or a
    train list and the test list of the same number share a group.
    """
    root = Path(root)
    video_root = _video_root(root)
    if not _has_ucf_videos(video_root):
        found = sorted(p.name for p in video_root.iterdir())[:5]
        raise DatasetError(
            f"--data {root} is not UCF-101 (--layout ucf101): {EXPECTED}. Found: {found or 'an empty folder'}. "
            "For any other folder of videos use --layout folder"
        )
    splits_dir = find_splits_dir(root, splits)
    classes = read_class_index(splits_dir / "classInd.txt")
    if split is None:
        index = {c.lower(): i for i, c in enumerate(classes)}
        pairs = []
        for path in sorted(video_root.glob("*/*")):
            if path.is_file() and UCF101_NAME.match(path.name):
                rel = path.relative_to(video_root).as_posix()
                label = index.get(rel.split("/", 1)[0].lower(), -1)
                if label < 0:
                    raise DatasetError(f"{video_root / rel}: class folder {rel.split('/', 1)[0]!r} is not in "
                                       f"{splits_dir / 'classInd.txt'}")
                pairs.append((rel, label))
    else:
        if split not in SPLIT_NAMES:
            raise DatasetError(f"unknown UCF-101 split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
        list_path = splits_dir / f"{split}.txt"
        if not list_path.is_file():
            raise FileNotFoundError(
                f"split file {list_path} is missing; the official {SPLITS_FOLDER}/ has "
                + ", ".join(f"{s}.txt" for s in SPLIT_NAMES) + " and classInd.txt"
            )
        pairs = read_split(list_path, classes)
        missing = [rel for rel, _ in pairs if not (video_root / rel).is_file()]
        if missing:
            raise DatasetError(
                f"{list_path} names {len(missing)} of its {len(pairs)} videos that are not under {video_root}, "
                f"e.g. {', '.join(missing[:5])}. Unpack the complete UCF-101 archive there, or point --data at it"
            )
        kind, number = split[: -len("list01")], split[-2:]
        other = splits_dir / f"{'test' if kind == 'train' else 'train'}list{number}.txt"
        if other.is_file():
            shared = _split_keys(pairs) & _split_keys(read_split(other, classes))
            if shared:
                label, group = min(shared)
                raise DatasetError(
                    f"{list_path} and {other} share {len(shared)} (class, group) pairs, e.g. class {classes[label]} "
                    f"group g{group:02d}: UCF-101 splits are disjoint by group, so these lists are not the "
                    "official ones (or were edited); use the official ucfTrainTestlist files"
                )
    entries = sorted(
        (VideoEntry(rel, label, classes[label], _group(rel)) for rel, label in pairs), key=lambda e: e.source
    )
    return video_root, entries


def list_videos(
    root: str | os.PathLike, layout: str = "folder", split: str | None = None,
    splits: str | os.PathLike | None = None,
) -> tuple[Path, list[VideoEntry]]:
    """``(video root, entries)`` for ``layout`` ``"folder"`` (any folder, ``split`` must be None) or
    ``"ucf101"`` (see :func:`ucf101_videos`)."""
    if layout == "ucf101":
        return ucf101_videos(root, split, splits)
    if layout != "folder":
        raise DatasetError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if split is not None or splits is not None:
        raise DatasetError("--split / --splits need --layout ucf101 (a plain folder has no split lists)")
    return Path(root), folder_videos(root)
