"""data.source = "frames": one folder of image files per video (kinema.data.frames), and prepare --layout frames."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import tiny_run_config

from kinema.cli import main
from kinema.config import DataConfig
from kinema.data import DatasetError, FrameFolder, VideoCache, build_dataset
from kinema.data.frames import natural_key
from kinema.data.prepare import prepare, resize_frame
from kinema.data.sparse_frames import build_sparse_dataset
from kinema.errors import ConfigError
from kinema.registry import load_config


def write_frames(folder, n, height=20, width=24, offset=0, ext="png", name="frame_{}", mode="RGB"):
    """Frame k is flat grey ``offset + 10 k``; names are unpadded (``frame_2`` < ``frame_10`` only when sorted
    naturally). Written in reverse so the directory order is not the frame order either."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in reversed(range(n)):
        value = np.full((height, width, 3 if mode == "RGB" else 1), offset + 10 * k, np.uint8)
        Image.fromarray(value if mode == "RGB" else value[..., 0], mode).save(folder / f"{name.format(k)}.{ext}")
    return folder


def levels(clip: torch.Tensor) -> np.ndarray:
    """Float clip (3, T, H, W) in [-1, 1] -> the uint8 level of each frame's top-left pixel, channel 0."""
    return ((clip[0, :, 0, 0] + 1) * 127.5).round().int().numpy()


def test_natural_key_orders_digit_runs_by_value():
    names = ["frame_10.png", "frame_2.png", "Frame_1.png", "frame_0.png", "frame_100.png", "a.png"]
    assert sorted(names, key=natural_key) == ["a.png", "frame_0.png", "Frame_1.png", "frame_2.png", "frame_10.png",
                                              "frame_100.png"]
    assert sorted(["v10/x", "v9/x", "v9a/x"], key=natural_key) == ["v9/x", "v9a/x", "v10/x"]


def test_frames_in_natural_order_with_shape_range_and_stride(tmp_path):
    write_frames(tmp_path / "clip", 12)  # frame_0 .. frame_11, values 0, 10, ..., 110
    ds = FrameFolder(tmp_path, frames=6, height=16, width=16, frame_stride=2, train=False)
    x = ds[0]
    assert x.shape == (3, 6, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert levels(x).tolist() == [0, 20, 40, 60, 80, 100]  # every 2nd frame from the first, in natural order
    assert ds.num_frames == [12] and ds.ignored == 0
    for draw in range(20):  # training: a random start, then consecutive strided frames of the same folder
        got = levels(ds.clip(0, draw=draw))
        assert got[0] in (0, 10) and np.all(np.diff(got) == 20), got  # starts 0 or 1 (span 11 of 12 frames)
    assert torch.equal(ds.clip(0, draw=5), ds.clip(0, draw=5))


def test_frame_folders_at_any_depth_are_videos_in_natural_order(tmp_path):
    write_frames(tmp_path / "v10", 4, offset=3)
    write_frames(tmp_path / "a" / "b" / "c" / "v2", 4, offset=2)
    write_frames(tmp_path / "v9", 4, offset=1)
    (tmp_path / "empty_folder").mkdir()
    ds = FrameFolder(tmp_path, frames=4, height=8, width=8, train=False)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.videos] == ["a/b/c/v2", "v9", "v10"]
    assert [levels(ds[i])[0] for i in range(3)] == [2, 1, 3]


def test_jpeg_and_greyscale_frames(tmp_path):
    write_frames(tmp_path / "jpg", 4, ext="jpg", offset=50)
    write_frames(tmp_path / "grey", 4, mode="L", offset=50)
    ds = FrameFolder(tmp_path, frames=4, height=16, width=16, train=False)
    for i in range(2):
        x = ds[i]
        assert x.shape == (3, 4, 16, 16)
        assert np.abs(levels(x) - [50, 60, 70, 80]).max() <= 2  # JPEG is lossy on a flat frame only by rounding
        assert torch.allclose(x[0], x[1], atol=0.02) and torch.allclose(x[0], x[2], atol=0.02)  # grey -> RGB


def test_broken_mixed_size_short_folders_are_skipped_and_counted(tmp_path):
    good = write_frames(tmp_path / "good", 6)
    (good / "actions.npy").write_bytes(b"\x93NUMPY")  # BAIR's frame folders hold one of these
    (good / "notes.txt").write_text("not a frame")
    (good / "._frame_0.png").write_bytes(b"macOS resource fork")  # hidden: ignored, not a broken frame
    broken = write_frames(tmp_path / "broken", 6)
    (broken / "frame_3.png").write_bytes(b"this is not a png")
    mixed = write_frames(tmp_path / "mixed", 6)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(mixed / "frame_4.png")
    write_frames(tmp_path / "short", 3)
    with pytest.warns(UserWarning) as caught:
        ds = FrameFolder(tmp_path, frames=4, height=8, width=8)
    assert [p.name for p in ds.videos] == ["good"]
    reasons = {os.path.basename(p): r for p, r in ds.skipped.items()}
    assert sorted(reasons) == ["broken", "mixed", "short"]
    assert "frame frame_3.png is not a readable image" in reasons["broken"]
    assert "frames of different sizes: frame_0.png is 20x24" in reasons["mixed"]
    assert "frame_4.png is 10x12" in reasons["mixed"]
    assert "too short: 3 frames, a clip needs 4" in reasons["short"]
    assert ds.ignored == 3
    assert "1 of 4 frame folders usable, 3 skipped" in ds.summary()
    assert "3 non-image files in them ignored" in ds.summary()
    messages = [str(w.message) for w in caught]
    for folder in ds.skipped:  # one warning per skipped folder, plus the summary
        assert sum(folder in m and "FrameFolder: skipping" in m for m in messages) == 1
    assert ds.summary() in messages
    assert ds[0].shape == (3, 4, 8, 8)


def test_frame_breaking_at_read_time_is_replaced_by_the_next_folder(tmp_path):
    write_frames(tmp_path / "a", 4, offset=0)
    write_frames(tmp_path / "b", 4, offset=5)
    ds = FrameFolder(tmp_path, frames=4, height=8, width=8, train=False)
    (tmp_path / "a" / "frame_2.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.warns(UserWarning, match="a: failed at read time: not a readable image"):
        x = ds[0]
    assert levels(x).tolist() == [5, 15, 25, 35]  # folder b's frames
    assert list(ds.skipped) == [str(tmp_path / "a")]


def test_frame_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: data.path must point to it; expected one folder"):
        FrameFolder(tmp_path / "nowhere", 4, 8, 8)
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(NotADirectoryError, match='data.source = "frames" needs data.path to be a folder'):
        FrameFolder(tmp_path / "readme.txt", 4, 8, 8)
    with pytest.raises(FileNotFoundError) as e:
        FrameFolder(tmp_path, 4, 8, 8)
    assert f"no image files under {tmp_path}: expected one folder per video holding its frames" in str(e.value)
    assert ".png .jpg" in str(e.value)
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 10)
    with pytest.raises(FileNotFoundError, match='it holds 1 video files .* use data.source = "folder"'):
        FrameFolder(tmp_path, 4, 8, 8)
    write_frames(tmp_path / "v", 2)
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="all 1 frame folders were skipped .*too short"):
        FrameFolder(tmp_path, 4, 8, 8)
    with pytest.raises(ValueError, match="frame_stride"):
        FrameFolder(tmp_path, 4, 8, 8, frame_stride=0)


def test_build_dataset_and_config_for_frames(tmp_path):
    write_frames(tmp_path / "v", 8)
    ds = build_dataset(DataConfig(source="frames", path=str(tmp_path), frame_stride=2, flip=True), frames=4,
                       height=16, width=16, seed=0, train=False)
    assert isinstance(ds, FrameFolder) and ds.frame_stride == 2 and ds.flip and not ds.train
    assert levels(ds[0]).tolist() == [0, 20, 40, 60]
    with pytest.raises(ConfigError, match='data.path is empty: data.source = "frames" needs a folder of frame folders'):
        load_config(None, model={"name": "tganv2"}, data={"source": "frames"})


def test_sparse_frames_read_the_picked_images(tmp_path):
    write_frames(tmp_path / "v", 20)
    ds = build_sparse_dataset(DataConfig(source="frames", path=str(tmp_path), sparse_frames=3, sparse_max_gap=8,
                                         flip=False), height=8, width=8, seed=0)
    for draw in range(5):
        item = ds.clip(0, draw=draw)
        got = levels(item.clips) // 10  # frame numbers
        assert item.clips.shape == (3, 3, 8, 8)
        assert (got - got[0]).tolist() == item.times.int().tolist()


def test_prepare_layout_frames(tmp_path, capsys):
    src = tmp_path / "src"
    write_frames(src / "walk" / "v1", 10, height=20, width=30)
    write_frames(src / "run" / "v2", 12, height=20, width=30, offset=3)
    mixed = write_frames(src / "run" / "v3", 10)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "frame_9.png")
    report = prepare(src, tmp_path / "cache", resolution=(16, 16), layout="frames", workers=1, min_frames=8,
                     progress=False)
    assert report.videos == 2 and list(report.skipped) == ["run/v3"]
    assert "frames of different sizes" in report.skipped["run/v3"]
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert [(v["source"], v["class"], v["label"], v["frames"]) for v in index["videos"]] == [
        ("run/v2", "run", 0, 12), ("walk/v1", "walk", 1, 10)]
    cached = np.load(tmp_path / "cache" / "videos" / "walk" / "v1.npy")
    frame_7 = np.asarray(Image.open(src / "walk" / "v1" / "frame_7.png").convert("RGB"))
    np.testing.assert_array_equal(cached[7], resize_frame(frame_7, 16, 16))  # natural order, the prepare resize
    clip = VideoCache(tmp_path / "cache", 8, 16, 16, train=False)[1]
    assert levels(clip).tolist() == list(range(0, 80, 10))
    code = main(["prepare", "--data", str(src), "--out", str(tmp_path / "c2"), "--layout", "frames",
                 "--frames-per-second", "8"])
    assert code == 2 and "--frames-per-second needs timestamps" in capsys.readouterr().err


def test_train_on_frame_folders_through_the_cli(tmp_path):
    data = tmp_path / "frames"
    for v in range(3):
        write_frames(data / f"clip_{v}", 10, height=18, width=22, offset=v)
    (data / "clip_0" / "labels.txt").write_text("ignored")
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_run_config(steps=2).to_toml())
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress",
                 "--set", "data.source=frames", "--set", f"data.path={data}"])
    assert code == 0
    assert (tmp_path / "run" / "checkpoints" / "step_0000002").is_dir()
