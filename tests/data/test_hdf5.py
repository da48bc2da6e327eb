"""data.source = "hdf5": VideoGPT's HDF5 layout ({split}_data frames back to back, {split}_idx first frames)."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from tiny import tiny_run_config

from kinema.cli import main
from kinema.config import DataConfig
from kinema.data import DatasetError, HDF5Videos, build_dataset
from kinema.errors import ConfigError
from kinema.metrics.evaluate import heldout_real_set
from kinema.registry import load_config

h5py = pytest.importorskip("h5py")  # in the [test] extra; kinema itself imports it only for this source


def write_videogpt_hdf5(path, lengths=(30, 30, 20), test_lengths=(30,), height=8, width=8):
    """A file in the layout of VideoGPT's bair_image_to_hdf5.py: frame k of video v is flat level ``40 v + k``
    in every channel, so a clip's values tell which video and frames it came from."""
    with h5py.File(path, "w") as f:
        for split, lens in (("train", lengths), ("test", test_lengths)):
            frames = np.concatenate([np.full((n, height, width, 3), 0, np.uint8) + (40 * v + np.arange(n, dtype=np.uint8))
                                     [:, None, None, None] for v, n in enumerate(lens)])
            f.create_dataset(f"{split}_data", data=frames)
            f.create_dataset(f"{split}_idx", data=np.cumsum([0, *lens[:-1]]).astype(np.int64))
            f.create_dataset(f"{split}_actions", data=np.zeros((len(frames), 4), np.float32))  # not read
    return path


def levels(clip: torch.Tensor) -> np.ndarray:
    return ((clip[0, :, 0, 0] + 1) * 127.5).round().int().numpy()


def test_clips_come_from_within_one_video_with_the_authors_start_range(tmp_path):
    path = write_videogpt_hdf5(tmp_path / "bair.hdf5")
    ds = HDF5Videos(path, frames=8, height=8, width=8)
    assert len(ds) == 3 and ds.num_frames == [30, 30, 20] and not ds.skipped
    starts = {0: set(), 1: set(), 2: set()}
    for draw in range(300):
        i = draw % 3
        x = ds.clip(i, draw=draw)
        assert x.shape == (3, 8, 8, 8) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
        got = levels(x)
        video, start = divmod(int(got[0]), 40)
        assert video == i and got.tolist() == list(range(got[0], got[0] + 8))  # consecutive, one video
        starts[i].add(start)
    # np.random.randint(0, L - 8) in videogpt/data.py:163: starts 0 .. L - 9, never the last window L - 8
    assert starts[0] == set(range(0, 22)) and starts[2] == set(range(0, 12))


def test_eval_split_stride_and_exact_length(tmp_path):
    path = write_videogpt_hdf5(tmp_path / "bair.hdf5", lengths=(30, 15, 16), test_lengths=(10, 12))
    ds = HDF5Videos(path, frames=4, height=8, width=8, frame_stride=2, train=False)
    assert [levels(ds[i]).tolist() for i in range(3)] == [[0, 2, 4, 6], [40, 42, 44, 46], [80, 82, 84, 86]]
    test = HDF5Videos(path, frames=4, height=4, width=4, split="test", train=False)
    assert len(test) == 2 and test[1].shape == (3, 4, 4, 4) and levels(test[1]).tolist() == [40, 41, 42, 43]
    with pytest.warns(UserWarning):
        exact = HDF5Videos(path, frames=16, height=8, width=8)  # video 2 has exactly 16 frames: its one clip
    assert [r[:22] for r in exact.skipped.values()] == ["too short: 15 frames, "]
    assert levels(exact.clip(1, draw=7)).tolist() == list(range(80, 96))


def test_short_videos_are_skipped_and_counted(tmp_path):
    path = write_videogpt_hdf5(tmp_path / "bair.hdf5", lengths=(30, 5, 30))
    with pytest.warns(UserWarning) as caught:
        ds = HDF5Videos(path, frames=8, height=8, width=8)
    assert "HDF5Videos: skipping train video 1 (train_data[30:35]): too short: 5 frames" in str(caught[0].message)
    assert len(ds) == 2 and list(ds.skipped) == ["train video 1 (train_data[30:35])"]
    assert "2 of 3 videos usable, 1 skipped" in ds.summary()
    assert levels(ds.clip(1, draw=0))[0] // 40 == 2


def test_pickled_copy_reopens_the_file(tmp_path):
    ds = HDF5Videos(write_videogpt_hdf5(tmp_path / "bair.hdf5"), frames=4, height=8, width=8, train=False)
    first = ds[0]
    copy = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker gets
    assert torch.equal(copy[0], first) and torch.equal(copy[2], ds[2])


def test_missing_datasets_are_named_with_what_the_file_holds(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("videos", data=np.zeros((4, 8, 8, 3), np.uint8))
        f.create_group("meta").create_dataset("fps", data=np.float32(8))
    with pytest.raises(DatasetError) as e:
        HDF5Videos(path, 4, 8, 8)
    message = str(e.value)
    assert "has no dataset train_data or train_idx (data.split = 'train')" in message
    assert "it holds meta/, meta/fps () float32, videos (4, 8, 8, 3) uint8." in message
    assert "Expected VideoGPT's layout" in message


@pytest.mark.parametrize("data, idx, match", [
    (np.zeros((10, 8, 8), np.uint8), np.array([0]), r"train_data is uint8 \(10, 8, 8\), expected uint8 \(N, H, W, 3\)"),
    (np.zeros((10, 8, 8, 3), np.float32), np.array([0]), "train_data is float32"),
    (np.zeros((10, 8, 8, 3), np.uint8), np.array([0.0, 5.0]), "train_idx is float64 .* expected a non-empty integer"),
    (np.zeros((10, 8, 8, 3), np.uint8), np.array([0, 6, 4]), "must ascend from 0 to at most 10 .* video 1 would be"),
])
def test_malformed_layout_errors(tmp_path, data, idx, match):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as f:
        f["train_data"], f["train_idx"] = data, idx
    with pytest.raises(DatasetError, match=match):
        HDF5Videos(path, 4, 8, 8)


def test_path_and_install_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"HDF5 file .*nowhere.hdf5 does not exist: data.source = \"hdf5\""):
        HDF5Videos(tmp_path / "nowhere.hdf5", 4, 8, 8)
    with pytest.raises(FileNotFoundError, match="is a folder"):
        HDF5Videos(tmp_path, 4, 8, 8)
    (tmp_path / "notes.hdf5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="is not a readable HDF5 file"):
        HDF5Videos(tmp_path / "notes.hdf5", 4, 8, 8)
    with pytest.raises(ValueError, match="split must be one of train, test, got 'val'"):
        HDF5Videos(tmp_path / "notes.hdf5", 4, 8, 8, split="val")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'kinema\[hdf5\]'"):
        HDF5Videos(tmp_path / "notes.hdf5", 4, 8, 8)


def test_config_and_build_dataset(tmp_path):
    path = write_videogpt_hdf5(tmp_path / "bair.hdf5")
    ds = build_dataset(DataConfig(source="hdf5", path=str(path), split="test"), frames=4, height=8, width=8, seed=0,
                       train=False)
    assert isinstance(ds, HDF5Videos) and ds.split == "test" and len(ds) == 1
    with pytest.raises(ConfigError, match='data.path is empty: data.source = "hdf5" needs an HDF5 file'):
        load_config(None, model={"name": "tganv2"}, data={"source": "hdf5"})
    with pytest.raises(ConfigError, match='data.split = \'test\' selects the videos of an HDF5 file .* remove'):
        load_config(None, model={"name": "tganv2"}, data={"source": "folder", "path": "x", "split": "test"})
    train_key = heldout_real_set(DataConfig(source="hdf5", path=str(path)), 0, 4, 8, 8)[1]
    test_key = heldout_real_set(DataConfig(source="hdf5", path=str(path), split="test"), 0, 4, 8, 8)[1]
    assert (train_key["split"], test_key["split"]) == ("train", "test")  # cached real features never mix splits
    for name in ("videogpt_vqvae_bair_64", "videogpt_prior_bair_64", "videogpt_vqvae_bair_64_stride4x2x2"):
        data = load_config(name).data
        assert (data.source, data.split, data.path) == ("hdf5", "train", "data/bair/bair.hdf5")


def test_train_on_hdf5_through_the_cli(tmp_path):
    path = write_videogpt_hdf5(tmp_path / "bair.hdf5", height=16, width=16, test_lengths=(30,) * 4)
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_run_config(steps=2).to_toml())
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress",
                 "--set", "data.source=hdf5", "--set", f"data.path={path}", "--set", "data.workers=1"])
    assert code == 0
    assert (tmp_path / "run" / "checkpoints" / "step_0000002").is_dir()
    # `kinema evaluate --data FILE.hdf5` scores against the file's held-out videos: its test split
    from kinema.api import _real_data

    data = _real_data(path)
    assert (data.source, data.split) == ("hdf5", "test")
    assert len(heldout_real_set(data, 0, 4, 16, 16)[0]) == 4
