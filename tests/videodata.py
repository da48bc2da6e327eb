"""Small video files for the preparation / cache tests: real clips cut short, avi files, a fake UCF-101."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from kinema.data.prepare import resize_frame
from kinema.video import read_video, write_video


def small_real_clip(src: Path, dst: Path, frames: int = 20, height: int = 36, width: int = 48, fps: float = 25) -> Path:
    """The first ``frames`` frames of a real clip, shrunk to ``height x width``, re-encoded as H.264 mp4."""
    raw = read_video(src, max_frames=frames)
    small = np.stack([resize_frame(f, height, width) for f in raw])
    dst.parent.mkdir(parents=True, exist_ok=True)
    return write_video(dst, small, fps=fps)


def numbered_frames(n: int, height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """``uint8 (n, height, width, 3)``: frame k is flat grey level 8 k plus a fixed coloured pattern
    (so frames survive lossy coding recognisably and videos differ by ``seed``)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 40, size=(1, height, width, 3))
    levels = (8 * np.arange(n) % 200)[:, None, None, None]
    return (base + levels).astype(np.uint8)


def write_avi(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """``uint8 (T, H, W, 3)`` -> MPEG-4 Part 2 in AVI (UCF-101's container), high quality."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}
        for x in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(x), format="rgb24")))
        container.mux(stream.encode(None))
    return path


# UCF-101's quirk: the folder HandstandPushups holds v_HandStandPushups_* files.
CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
FILE_CLASS = {"HandstandPushups": "HandStandPushups"}


def ucf_name(cls: str, group: int, clip: int) -> str:
    return f"{cls}/v_{FILE_CLASS.get(cls, cls)}_g{group:02d}_c{clip:02d}.avi"


def fake_ucf101(base: Path, groups: int = 3, clips: int = 2, frames: int = 12, splits_inside: bool = False) -> Path:
    """``base/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (3 classes) and ``base/ucfTrainTestlist`` (or
    inside ``UCF-101/`` with ``splits_inside``): split k tests on group k and trains on the others.
    Returns the UCF-101 folder."""
    root = base / "UCF-101"
    n = 0
    for cls in CLASSES:
        for g in range(1, groups + 1):
            for c in range(1, clips + 1):
                write_avi(root / ucf_name(cls, g, c), numbered_frames(frames, seed=n))
                n += 1
    lists = (root if splits_inside else base) / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    for k in (1, 2, 3):
        train = [f"{ucf_name(cls, g, c)} {i}" for i, cls in enumerate(CLASSES, 1)
                 for g in range(1, groups + 1) if g != k for c in range(1, clips + 1)]
        test = [ucf_name(cls, k, c) for cls in CLASSES for c in range(1, clips + 1) if k <= groups]
        (lists / f"trainlist0{k}.txt").write_text("\r\n".join(train) + "\r\n")  # the official files are CRLF
        (lists / f"testlist0{k}.txt").write_text("\r\n".join(test) + "\r\n")
    return root
