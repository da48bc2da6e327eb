"""``kinema prepare``: decode every video once into a cache with random access to any clip.

Cache layout (``OUT/``)::

    videos/<source path>.npy   one uint8 array (T, H, W, 3) per video (np.load(mmap_mode="r"))
    index.json                 per video: source, file, frames, height, width, label, class, group,
                               sha256 (of the array bytes), fps; and the skipped sources with reasons
    meta.json                  resolution, fps, filter, layout, split, kinema version, the command,
                               and "complete": true -- written last
    progress.jsonl             journal of finished videos (lets an interrupted run resume)

Frames are resized with PIL's bicubic filter (``Image.resize(..., Image.BICUBIC)``, whose kernel
widens when shrinking, i.e. antialiased) so that they cover ``H x W`` with the aspect ratio kept,
then centre-cropped to ``H x W``; for UCF-101 (320x240) at 192x256 or 240x320 that is a plain
resize. Every ``.npy`` is written under a temporary name and ``os.replace``d, so a video is finished
exactly when its ``.npy`` exists under its final name; a rerun of the same command skips those. A
cache whose ``meta.json`` lacks ``"complete": true`` is refused by :class:`kinema.data.VideoCache`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shlex
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kinema.data.folder import DatasetError
from kinema.data.frames import decode_frame_folder
from kinema.data.ucf101 import list_videos
from kinema.system import available_memory, filesystem_of, free_bytes
from kinema.version import __version__
from kinema.video.io import (
    VideoReadError,
    _check_readable,
    _decode,
    _open,
    _video_stream,
    resize_frame,
)

__all__ = ["CACHE_FORMAT", "FILTER", "PrepareError", "PrepareReport", "parse_resolution", "prepare", "resize_frame"]

CACHE_FORMAT = 1
FILTER = "PIL bicubic (antialiased), cover + centre crop"
VIDEOS_DIR = "videos"
MIN_SIDE, MAX_SIDE = 8, 4096  # --resolution bounds (pixels per side)
# Settings that must match for a rerun to resume an existing cache rather than mix two caches.
_SETTINGS = ("format", "resolution", "fps", "filter", "layout", "split", "min_frames")

log = logging.getLogger(__name__)


class PrepareError(RuntimeError):
    """Preparation cannot go on (unwritable output, disk full, conflicting cache); says how to fix it."""


@dataclass
class PrepareReport:
    """What a preparation did: ``videos`` in the cache, ``decoded`` this run, ``reused`` from an
    earlier interrupted run, ``skipped`` (source -> reason), ``frames`` and ``bytes`` in the cache."""

    out: Path
    videos: int = 0
    decoded: int = 0
    reused: int = 0
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [(
            f"cache {self.out}: {self.videos} videos, {self.frames:,} frames, {self.bytes / 2**30:.2f} GiB "
            f"({self.decoded} decoded now, {self.reused} kept from an earlier run) in {self.seconds:.1f} s; "
            f"{len(self.skipped)} skipped"
        )]
        lines += [f"  skipped {source}: {reason}" for source, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


def parse_resolution(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"192x256"`` (height x width) -> ``(192, 256)``."""
    if isinstance(text, (tuple, list)):
        h, w = text
    else:
        parts = str(text).lower().replace("×", "x").split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--resolution {text!r}: expected HEIGHTxWIDTH, e.g. 192x256 (UCF-101 for TGANv2) or 64x85")
        h, w = (int(p) for p in parts)
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise ValueError(f"--resolution {text!r}: height and width must each be between {MIN_SIDE} and {MAX_SIDE} "
                         f"pixels (a {MAX_SIDE}x{MAX_SIDE} RGB frame alone is {MAX_SIDE * MAX_SIDE * 3 / 2**20:.0f} MiB); "
                         "models train at 64-256, e.g. 192x256")
    return int(h), int(w)


def check_memory(height: int, width: int, min_frames: int, workers: int) -> None:
    """Refuse up front a preparation whose workers could not even hold their smallest videos: each
    worker keeps a whole decoded video twice (the frames and their stack), at least ``min_frames`` frames."""
    need = 2 * workers * min_frames * height * width * 3
    free = available_memory()
    if free is not None and need > free:
        raise PrepareError(
            f"--resolution {height}x{width} needs at least {need / 2**30:.1f} GiB of memory ({workers} workers x 2 x "
            f"{min_frames} frames x {height}x{width}x3 bytes; longer videos need more), but only "
            f"{free / 2**30:.1f} GiB is available: lower --resolution or --workers")


def _native_rate(path: Path) -> float | None:
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def decode_resized(path: str | os.PathLike, height: int, width: int, fps: float | None = None) -> tuple[np.ndarray, float]:
    """Decode a whole video and resize it: ``(uint8 (T, height, width, 3), fps of the result)``.

    With ``fps`` the frame rate is resampled by timestamp: output frame ``j`` (time ``j / fps``) is
    the last source frame shown at that time (frames are dropped or repeated; no blending), over
    the source's duration. Raises VideoReadError for an unreadable, corrupt or empty file.
    """
    path = _check_readable(path)
    native = _native_rate(path)
    if fps is None:
        frames = [resize_frame(f.to_image(), height, width) for f in _decode(path, None)]
        return np.stack(frames), native or 0.0
    out: list[np.ndarray] = []
    current, resized = None, None  # the latest decoded frame (shown from its time on), and its resize
    step = 1.0 / (native or fps)
    t0 = last_t = 0.0
    for k, frame in enumerate(_decode(path, None)):
        t = frame.time if frame.time is not None else k * step
        t0 = t if k == 0 else t0
        t -= t0
        while current is not None and len(out) / fps < t - 1e-6:  # outputs before this frame's time
            if resized is None:
                resized = resize_frame(current.to_image(), height, width)
            out.append(resized)
        current, resized, last_t = frame, None, t
    end = last_t + step  # the last frame is shown for one native frame period
    while current is not None and len(out) / fps < end - 1e-6:
        if resized is None:
            resized = resize_frame(current.to_image(), height, width)
        out.append(resized)
    if not out:
        raise VideoReadError(path, "the video stream has no decodable frames")
    return np.stack(out), float(fps)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def _disk_space(path: Path | str) -> tuple[str, int | None]:
    """(mount point, free bytes) of the filesystem holding ``path``: the disk an error names."""
    return filesystem_of(Path(path)), free_bytes(Path(path))


def _os_error(exc: OSError, path: Path | str, need: int | None = None) -> str:
    # numpy's array.tofile reports a full disk as a short write without an errno ("N requested and M written")
    short_write = exc.errno is None and " requested and " in str(exc) and str(exc).endswith(" written")
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or short_write
    code = errno.errorcode.get(exc.errno, "") if exc.errno else ("ENOSPC" if short_write else "")
    reason = "No space left on device" if short_write else exc.strerror or str(exc)
    if full:
        mount, free = _disk_space(path)
        needs = f"this video needs {need:,}" if need else "the cache needs frames x H x W x 3 bytes per video"
        hint = f"the disk {mount} has {free or 0:,} bytes free ({needs}); free some disk space or choose another --out"
    else:
        hint = "check that --out is a writable folder, or choose another"
    return f"cannot write {path}: {reason}{f' ({code})' if code else ''}; {hint}. Rerun the same command to resume"


# Projected cache size is checked against the free space once this many videos are written: a cache that
# clearly cannot fit stops within seconds, not after hours of decoding.
PROJECT_AFTER = 4


def _check_projected_space(out: Path, written: int, done: int, to_go: int, height: int, width: int) -> None:
    """Refuse early when the videos still to decode clearly cannot fit: their projected size (mean bytes
    per video so far x videos left) exceeds the free space by half."""
    if done < PROJECT_AFTER or to_go <= 0:
        return
    need = written // done * to_go
    mount, free = _disk_space(out)
    if free is not None and need > 1.5 * free:
        raise PrepareError(
            f"the cache will not fit on {mount}: the {to_go} videos left need about {need:,} bytes ({need / 2**30:.2f} "
            f"GiB; {written // done:,} bytes per {height}x{width} video so far), {free:,} bytes are free. Free some disk "
            "space or choose another --out; the videos written so far are kept, rerun the same command to resume")


def _prepare_one(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: decode, resize, write one ``.npy`` atomically. Returns a journal record
    (``status`` "ok", "skipped" with ``reason``, or "error" with ``message``)."""
    source, final = task["path"], Path(task["file_abs"])
    record = {"source": task["source"]}
    try:
        if task.get("images"):  # a frame folder (--layout frames): no frame rate to keep or resample
            frames, fps = decode_frame_folder(source, task["height"], task["width"]), 0.0
        else:
            frames, fps = decode_resized(source, task["height"], task["width"], task["fps"])
    except VideoReadError as exc:
        return record | {"status": "skipped", "reason": exc.reason}
    except (MemoryError, RuntimeError, ValueError) as exc:  # anything else the decoder throws: skip, never crash
        return record | {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}"}
    if len(frames) < task["min_frames"]:
        rate = f" at {task['fps']:g} fps" if task["fps"] else ""
        return record | {"status": "skipped",
                         "reason": f"too short: {len(frames)} frames{rate}, --min-frames is {task['min_frames']}"}
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, frames, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return record | {"status": "error", "message": _os_error(exc, exc.filename or tmp, frames.nbytes)}
    return record | {"status": "ok", "frames": len(frames), "height": int(frames.shape[1]),
                     "width": int(frames.shape[2]), "sha256": _sha256(frames), "fps": fps}


def _check_one(task: dict[str, Any]) -> str | None:
    """Worker: None if the ``.npy`` has the recorded shape and checksum, else the problem."""
    try:
        array = np.load(task["file_abs"], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    expected = (task["frames"], task["height"], task["width"], 3)
    if array.dtype != np.uint8 or array.shape != expected:
        return f"shape {array.shape} {array.dtype}, index says {expected} uint8"
    if task.get("verify", True) and _sha256(array) != task["sha256"]:
        return "sha256 differs from the one recorded when it was written"
    return None


def _recover(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: a journal record for a ``.npy`` finished by an interrupted run but not journalled."""
    try:
        array = np.load(task["file_abs"], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):  # cut short by a crash below os.replace (rare): decode it again
        return {"source": task["source"], "status": "redo"}
    try:
        fps = task["fps"] or (0.0 if task.get("images") else _native_rate(Path(task["path"]))) or 0.0
    except VideoReadError:
        fps = 0.0
    return {"source": task["source"], "status": "ok", "frames": int(array.shape[0]), "height": int(array.shape[1]),
            "width": int(array.shape[2]), "sha256": _sha256(array), "fps": float(fps)}


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PrepareError(_os_error(exc, path)) from exc


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if isinstance(record, dict) and record.get("status") == "ok":
                records[record["source"]] = record
    return records


def _cache_file(source: str) -> str:
    return f"{VIDEOS_DIR}/{source}.npy"


class _Pool:
    """``map``-like execution: in-process for ``workers <= 1`` (simple, and testable), else a process pool."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor = ProcessPoolExecutor(workers) if workers > 1 else None

    def run(self, fn, tasks: list[dict[str, Any]]):
        """Yield ``(task, result)`` as results come in."""
        if self.executor is None:
            for task in tasks:
                yield task, fn(task)
            return
        pending, queue = {}, iter(tasks)
        for task in queue:  # keep at most 2 x workers in flight, so a kill loses little work
            pending[self.executor.submit(fn, task)] = task
            if len(pending) >= 2 * self.workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                yield task, future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending[self.executor.submit(fn, nxt)] = nxt

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def prepare(
    data: str | os.PathLike,
    out: str | os.PathLike,
    resolution: str | tuple[int, int] = (192, 256),
    fps: float | None = None,
    layout: str = "folder",
    split: str | None = None,
    splits: str | os.PathLike | None = None,
    workers: int | None = None,
    min_frames: int = 16,
    verify: bool = True,
    progress: bool = True,
) -> PrepareReport:
    """Decode every video under ``data`` once into the cache ``out``; returns a :class:`PrepareReport`.

    ``resolution`` is ``(H, W)`` or ``"HxW"``; ``fps`` resamples the frame rate (None keeps each
    video's own); ``layout`` is ``"folder"`` (any folder), ``"frames"`` (one folder of image files per
    video, :mod:`kinema.data.frames`; no frame rate, so ``fps`` must be None) or ``"ucf101"`` with an optional official
    ``split`` (``trainlist01`` ...) and ``splits`` (the ``ucfTrainTestlist`` folder), or ``"kth"`` with an
    optional person ``split`` (``train``/``test``, :mod:`kinema.data.kth`). ``workers``
    processes decode in parallel (default: all CPUs; 1 decodes in this process). Videos with fewer
    than ``min_frames`` frames (after resampling), corrupt, unreadable or empty files are skipped
    and listed in the report. ``verify`` re-reads every array at the end to check its sha256.

    Rerunning the same command resumes an interrupted preparation: finished videos are kept.
    Raises PrepareError for an unwritable output, a full disk, or an ``out`` prepared with other
    settings; DatasetError / FileNotFoundError for bad input (see :mod:`kinema.data.ucf101`).
    """
    started = time.perf_counter()
    height, width = parse_resolution(resolution)
    if fps is not None and not (fps > 0):
        raise ValueError(f"--frames-per-second must be > 0, got {fps}")
    if min_frames < 1:
        raise ValueError(f"--min-frames must be >= 1, got {min_frames}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if layout == "frames":  # one folder of images per video (kinema.data.frames)
        from kinema.data.frames import frame_folder_videos

        if fps is not None:
            raise ValueError("--frames-per-second needs timestamps, and image files have none: leave it out with "
                             "--layout frames (every image is one frame; thin them later with data.frame_stride)")
        if split is not None or splits is not None:
            raise DatasetError("--split / --splits are for --layout ucf101 and kth; a tree of frame folders has no "
                               "split lists (prepare each split's folder on its own)")
        video_root, entries = frame_folder_videos(data)
    elif layout == "kth":  # persons' action videos (kinema.data.kth): split train/test = persons 1-20 / 21-25
        from kinema.data.kth import kth_videos

        if splits is not None:
            raise DatasetError("--splits is for --layout ucf101; KTH's splits are by person (--split train|test|...)")
        video_root, entries = kth_videos(data, split)
    else:
        video_root, entries = list_videos(data, layout, split, splits)
    check_memory(height, width, min_frames, min(workers, len(entries)))
    out = Path(out)
    settings = {"format": CACHE_FORMAT, "resolution": [height, width], "fps": None if fps is None else float(fps),
                "filter": FILTER, "layout": layout, "split": split, "min_frames": int(min_frames)}
    meta_path = out / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        differ = [f"{k} {old.get(k)!r} (now {settings[k]!r})" for k in _SETTINGS if old.get(k) != settings[k]]
        if differ:
            raise PrepareError(
                f"{out} already holds a cache prepared with other settings: {'; '.join(differ)}. "
                "Choose another --out, delete that folder, or rerun with its original settings to resume it"
            )
    try:
        (out / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PrepareError(_os_error(exc, exc.filename or out)) from exc
    for stale in (out / VIDEOS_DIR).rglob(".*.tmp"):  # half-written arrays of a killed run
        stale.unlink(missing_ok=True)

    command = "kinema prepare " + " ".join(shlex.quote(a) for a in [
        "--data", str(data), "--out", str(out), "--resolution", f"{height}x{width}", "--layout", layout]
        + (["--frames-per-second", f"{fps:g}"] if fps else []) + (["--split", split] if split else [])
        + (["--splits", str(splits)] if splits else []) + (["--min-frames", str(min_frames)] if min_frames != 16 else []))
    meta = settings | {"kinema_version": __version__, "source_root": str(Path(video_root).resolve()),
                       "command": command, "complete": False}
    _write_json(meta_path, meta)  # a partial cache says so from the start

    journal_path = out / "progress.jsonl"
    journal = _read_journal(journal_path)
    tasks, todo, recover = {}, [], []
    for entry in entries:
        task = {"source": entry.source, "path": str(Path(video_root) / entry.source),
                "file_abs": str(out / _cache_file(entry.source)), "height": height, "width": width,
                "fps": settings["fps"], "min_frames": int(min_frames), "images": layout == "frames"}
        tasks[entry.source] = task
        if Path(task["file_abs"]).is_file():
            if entry.source not in journal:
                recover.append(task)
        else:
            journal.pop(entry.source, None)
            todo.append(task)
    report = PrepareReport(out=out, reused=len(entries) - len(todo))
    pool = _Pool(min(workers, max(1, len(todo) + len(recover))))
    try:
        with open(journal_path, "a") as journal_file:
            def log_record(record: dict[str, Any]) -> None:
                journal[record["source"]] = record
                journal_file.write(json.dumps(record) + "\n")
                journal_file.flush()

            for task, record in pool.run(_recover, recover):
                if record["status"] == "redo":
                    Path(task["file_abs"]).unlink(missing_ok=True)
                    todo.append(task)
                    report.reused -= 1
                else:
                    log_record(record)
            bar = tqdm(total=len(entries), initial=report.reused, desc="prepare", unit="video",
                       disable=not progress, dynamic_ncols=True, file=sys.stderr)
            written = 0
            for done, (_, record) in enumerate(pool.run(_prepare_one, todo), 1):
                bar.update(1)
                if record["status"] == "error":
                    raise PrepareError(record["message"])
                if record["status"] == "skipped":
                    report.skipped[record["source"]] = record["reason"]
                    bar.set_postfix(skipped=len(report.skipped), refresh=False)
                    continue
                report.decoded += 1
                log_record(record)
                written += record["frames"] * record["height"] * record["width"] * 3
                _check_projected_space(out, written, report.decoded, len(todo) - done, height, width)
            bar.close()
            # final integrity check: every listed array is there, with the recorded shape and checksum
            listed = [e for e in entries if e.source in journal]
            checks = [tasks[e.source] | journal[e.source] | {"verify": verify} for e in listed]
            bad = {task["source"]: problem for task, problem in pool.run(_check_one, checks) if problem}
    except OSError as exc:
        raise PrepareError(_os_error(exc, exc.filename or out)) from exc
    finally:
        pool.close()
    if bad:
        for source in bad:
            (out / _cache_file(source)).unlink(missing_ok=True)
        first = "; ".join(f"{s}: {p}" for s, p in list(bad.items())[:3])
        raise PrepareError(
            f"integrity check failed for {len(bad)} cached videos ({first}); they were deleted -- rerun the same "
            "command to decode them again"
        )
    if not listed:
        raise DatasetError(
            f"no video of {data} could be prepared: all {len(entries)} were skipped "
            f"({'; '.join(f'{s}: {r}' for s, r in list(report.skipped.items())[:3])})"
        )
    videos = []
    for e in listed:
        r = journal[e.source]
        videos.append({"source": e.source, "file": _cache_file(e.source), "frames": r["frames"], "height": r["height"],
                       "width": r["width"], "label": e.label, "class": e.class_name, "group": e.group,
                       "sha256": r["sha256"], "fps": r["fps"]})
    classes: list[str | None] = [None] * (max((e.label for e in entries), default=-1) + 1)
    for e in entries:
        if e.label >= 0:
            classes[e.label] = e.class_name
    report.videos = len(videos)
    report.frames = sum(v["frames"] for v in videos)
    report.bytes = report.frames * height * width * 3
    _write_json(out / "index.json", {"videos": videos, "skipped": report.skipped,
                                     "classes": classes})
    _write_json(meta_path, meta | {"videos": report.videos, "frames": report.frames, "skipped": len(report.skipped),
                                   "verified_sha256": bool(verify), "complete": True})
    report.seconds = time.perf_counter() - started
    return report
