"""Reading and writing video files, and converting between file and library layouts.

Inside kinema a video is a float tensor ``(C, T, H, W)`` (batched ``(B, C, T, H, W)``) in
``[-1, 1]``. Files are read into and written from ``uint8`` arrays ``(T, H, W, 3)``; ``to_uint8``
and ``from_uint8`` convert between the two.
"""

from __future__ import annotations

import math
import os
import uuid
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    import av

__all__ = [
    "WRITE_SUFFIXES",
    "VideoReadError",
    "from_uint8",
    "make_grid",
    "probe_num_frames",
    "read_video",
    "save_video_grid",
    "to_uint8",
    "write_video",
]

WRITE_SUFFIXES = (".mp4", ".gif")


def _av():
    """PyAV, imported on first use: loading FFmpeg's libraries costs ~70 ms of every ``import kinema.api``,
    and most commands (``configs``, ``info``, ``--dry-run``) never touch a video file."""
    import av

    return av


def _decode_errors() -> tuple[type[BaseException], ...]:
    """PyAV raises its own FFmpegError for most failures, OSError subclasses for I/O, and ValueError
    from frame conversion; all of them mean "this file cannot be decoded". (A function, so that PyAV
    is imported only when a file is opened: an ``except`` clause evaluates it only on an exception.)"""
    return (_av().FFmpegError, OSError, ValueError, EOFError)


class VideoReadError(RuntimeError):
    """A video file could not be read. ``path`` and ``reason`` are kept as attributes."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path}: {reason}")


def _check_readable(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise VideoReadError(p, "file not found; check the path")
    if p.is_dir():
        raise VideoReadError(p, "is a directory, expected a video file")
    if p.stat().st_size == 0:
        raise VideoReadError(p, "file is empty (0 bytes); it was probably not written completely")
    return p


def _open(p: Path) -> av.container.InputContainer:
    try:
        return _av().open(str(p), mode="r")
    except _decode_errors() as e:
        raise VideoReadError(
            p,
            f"not a readable video container ({e}). The file is not a video, or it is corrupt "
            "or truncated (an .mp4 cut short loses its index at the end and fails here)",
        ) from e


def _video_stream(container: av.container.InputContainer, p: Path) -> av.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoReadError(p, f"no video stream (streams found: {', '.join(kinds)})")
    # PyAV's default slice threading is kept: frame threading measured slower on short clips,
    # and DataLoader workers already use the cores.
    return container.streams.video[0]


def read_video(path: str | os.PathLike, max_frames: int | None = None, start: int = 0) -> np.ndarray:
    """Decode frames ``start, start+1, ...`` (at most ``max_frames``) of the first video stream.

    Returns ``uint8 (T, H, W, 3)`` RGB with ``1 <= T <= max_frames``; fewer than ``max_frames``
    frames come back when the video ends first. Decoding starts at frame 0 and stops as soon as
    the requested frames are in hand: seeking is keyframe-granular and timestamp-based, which is
    not frame-exact for variable-frame-rate files, so correctness wins over speed for large
    ``start``. Reads anything FFmpeg reads (mp4, avi, webm, mkv, mov, gif, ...).

    Raises ``VideoReadError`` (naming the path and the reason) for a missing, empty, non-video,
    corrupt or truncated file, a file without a video stream, a decode error before the
    requested frames were read, or ``start`` at or past the last frame.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    stop = None if max_frames is None else start + max_frames
    frames, seen = [], 0
    for frame in _decode(path, stop):
        if seen >= start:
            frames.append(frame.to_ndarray(format="rgb24"))
        seen += 1
    if not frames:
        raise VideoReadError(path, f"start={start} but the video has only {seen} frames")
    return np.stack(frames)


def _decode(path: str | os.PathLike, stop: int | None):
    """Yield decoded frames of the first video stream, at most ``stop``; raise VideoReadError on a
    decode failure or when nothing decodes."""
    p = _check_readable(path)
    seen = 0
    with _open(p) as container:
        stream = _video_stream(container, p)
        try:
            for frame in container.decode(stream):
                seen += 1
                yield frame
                if stop is not None and seen >= stop:
                    break
        except _decode_errors() as e:
            raise VideoReadError(p, f"corrupt or truncated: decoding failed after {seen} frames ({e})") from e
    if seen == 0:
        raise VideoReadError(p, "the video stream has no decodable frames")


def probe_num_frames(path: str | os.PathLike) -> int:
    """Number of frames in the first video stream.

    Cheap when the container records the count (mp4, mov, avi, gif): the header is read and one
    frame is decoded to check the codec data is usable. Otherwise (webm, mkv) every frame is
    decoded and counted. A header count can overstate a file truncated after its header was
    written; ``read_video`` then raises when it reaches the missing frames.
    Raises ``VideoReadError`` like ``read_video``.
    """
    p = _check_readable(path)
    with _open(p) as container:
        declared = _video_stream(container, p).frames
    if declared > 0:
        next(iter(_decode(p, stop=1)))  # the header's count, once one frame proves the codec data works
        return int(declared)
    return sum(1 for _ in _decode(p, stop=None))


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise TypeError(
            "write_video expects a numpy uint8 array (T, H, W, 3), got "
            f"{type(frames).__name__} of dtype {getattr(frames, 'dtype', None)}; "
            "convert a (C, T, H, W) tensor in [-1, 1] with kinema.video.to_uint8"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(
            f"write_video expects frames of shape (T, H, W, 3) with T >= 1, got {tuple(frames.shape)}"
        )


def _check_writable(p: Path) -> None:
    parent = p.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {p}: folder {parent} does not exist; create it first "
            "(e.g. Path(path).parent.mkdir(parents=True)) or choose another path"
        )
    if not os.access(parent, os.W_OK):
        raise PermissionError(
            f"cannot write {p}: folder {parent} is not writable; fix its permissions or choose another path"
        )
    if p.is_dir():
        raise IsADirectoryError(f"cannot write {p}: it is a directory; give a file name ending in .mp4 or .gif")


def _write_mp4(tmp: Path, frames: np.ndarray, fps: float) -> None:
    # yuv420p stores chroma at half resolution, so x264 rejects odd sizes; replicating the last
    # row/column keeps the picture intact instead of cropping a pixel away.
    _, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    # faststart puts the index up front: players stream it, and a truncated copy stays readable.
    av = _av()
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}  # visually lossless-ish; samples are small anyway
        for x in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(x, format="rgb24")))
        container.mux(stream.encode(None))


def _gif_palette_frame(x: np.ndarray) -> av.VideoFrame:
    # An adaptive palette per frame (median cut) follows colours that change over time, which one
    # palette for the whole clip cannot do with 256 entries.
    quantized = Image.fromarray(x).quantize(256, method=Image.Quantize.MEDIANCUT)
    rgb = np.asarray(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256]
    palette = np.zeros((256, 4), dtype=np.uint8)  # ARGB, opaque
    palette[:, 0] = 255
    palette[: len(rgb), 1:] = rgb
    return _av().VideoFrame.from_ndarray((np.asarray(quantized, dtype=np.uint8), palette), format="pal8")


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    # FFmpeg's encoder, not Pillow's GIF writer: Pillow merges identical consecutive frames,
    # which would change T.
    with _av().open(str(tmp), mode="w", format="gif", options={"loop": "0"}) as container:
        stream = container.add_stream("gif", rate=Fraction(fps).limit_denominator(100))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "pal8"
        for x in frames:
            container.mux(stream.encode(_gif_palette_frame(x)))
        container.mux(stream.encode(None))


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8) -> Path:
    """Write ``uint8 (T, H, W, 3)`` RGB frames to ``path`` and return it as a ``Path``.

    The suffix picks the format: ``.mp4`` is H.264 (libx264, yuv420p, crf 18; odd H or W is padded
    to even by repeating the last row/column, so the file may be one pixel larger) and ``.gif``
    loops forever with a 256-colour palette per frame. The file is written under a temporary name in the
    same folder and moved into place, so an interrupted write never leaves a half file.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(
            f"cannot write {p}: unsupported suffix {p.suffix!r}; use one of {', '.join(WRITE_SUFFIXES)}"
        )
    _check_frames(frames)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    _check_writable(p)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        (_write_mp4 if suffix == ".mp4" else _write_gif)(tmp, np.ascontiguousarray(frames), float(fps))
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def resize_frame(image: Image.Image | np.ndarray, height: int, width: int) -> np.ndarray:
    """One RGB frame (PIL image or ``uint8 (H0, W0, 3)``) -> ``uint8 (height, width, 3)``.

    Bicubic (PIL, antialiased when shrinking) to the smallest size that covers ``height x width``
    with the aspect ratio kept, then the centre ``height x width``. This is the preparation's resize.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    w0, h0 = image.size
    scale = max(height / h0, width / w0)
    size = (max(width, round(w0 * scale)), max(height, round(h0 * scale)))  # PIL: (w, h)
    if size != (w0, h0):
        image = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    if (left, top) != (0, 0) or size != (width, height):
        image = image.crop((left, top, left + width, top + height))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """``(C, T, H, W)`` float in ``[-1, 1]`` -> ``uint8 (T, H, W, C)`` (rounded, clamped)."""
    if not isinstance(video, torch.Tensor) or video.ndim != 4:
        raise ValueError(
            f"to_uint8 expects a tensor of shape (C, T, H, W), got {tuple(getattr(video, 'shape', ()))}; "
            "for a batch (B, C, T, H, W) index one video or tile them with make_grid"
        )
    x = video.detach().to("cpu", torch.float32)
    x = ((x + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()


def from_uint8(frames: np.ndarray) -> torch.Tensor:
    """``uint8 (T, H, W, C)`` -> float32 ``(C, T, H, W)`` in ``[-1, 1]`` (``x / 127.5 - 1``)."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(
            "from_uint8 expects a numpy uint8 array (T, H, W, C), got "
            f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {tuple(getattr(frames, 'shape', ()))}"
        )
    return dequantise(torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2))


def dequantise(x: torch.Tensor) -> torch.Tensor:
    """A uint8 tensor (any layout, any device) -> float32 in ``[-1, 1]``: ``x / 127.5 - 1``, the inverse of
    :func:`to_uint8`'s rounding (the one place the mapping is written)."""
    return x.to(torch.float32).div_(127.5).sub_(1.0)


def make_grid(
    videos: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = -1.0
) -> torch.Tensor:
    """Tile ``(B, C, T, H, W)`` videos into one ``(C, T, H', W')`` video.

    Video ``b`` sits in row ``b // nrow``, column ``b % nrow``, with ``padding`` pixels of
    ``pad_value`` around every tile (``nrow`` videos per row, ``ceil(sqrt(B))`` by default), so
    ``H' = rows * (H + padding) + padding`` and ``W' = nrow * (W + padding) + padding``.
    """
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[0] < 1:
        raise ValueError(
            f"make_grid expects a tensor of shape (B, C, T, H, W) with B >= 1, got "
            f"{tuple(getattr(videos, 'shape', ()))}; add a batch axis with video[None] for a single video"
        )
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b, c, t, h, w = videos.shape
    ncol = math.ceil(math.sqrt(b)) if nrow is None else int(nrow)
    if ncol < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    ncol = min(ncol, b)
    rows = math.ceil(b / ncol)
    grid = videos.new_full((c, t, rows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for i in range(b):
        y = padding + (i // ncol) * (h + padding)
        x = padding + (i % ncol) * (w + padding)
        grid[:, :, y : y + h, x : x + w] = videos[i]
    return grid


def save_video_grid(
    videos: torch.Tensor, path: str | os.PathLike, fps: float = 8, nrow: int | None = None
) -> Path:
    """Tile ``(B, C, T, H, W)`` (or one ``(C, T, H, W)``) video in ``[-1, 1]`` and write it.

    ``C`` is 3 (RGB) or 1 (shown as grey). The format follows the suffix (``.mp4`` or ``.gif``).
    """
    if isinstance(videos, torch.Tensor) and videos.ndim == 4:
        videos = videos[None]
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[1] not in (1, 3):
        raise ValueError(
            "save_video_grid expects a tensor of shape (B, C, T, H, W) with C = 1 or 3, got "
            f"{tuple(getattr(videos, 'shape', ()))}"
        )
    grid = make_grid(videos.detach().cpu(), nrow=nrow)
    if grid.shape[0] == 1:
        grid = grid.expand(3, -1, -1, -1)
    return write_video(path, to_uint8(grid), fps=fps)
