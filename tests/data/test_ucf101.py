"""UCF-101 layout: split lists, labels, groups, where the lists may live, and every bad input's message."""

import json
import shutil

import numpy as np
import torch
import pytest
from videodata import CLASSES, fake_ucf101, numbered_frames, ucf_name

from kinema.data import DatasetError, VideoCache
from kinema.data.prepare import prepare
from kinema.data.ucf101 import (
    folder_videos,
    list_videos,
    read_class_index,
    ucf101_videos,
)
from kinema.video import write_video


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    return fake_ucf101(tmp_path_factory.mktemp("ucf"))


def test_split_labels_and_groups(ucf):
    root, entries = ucf101_videos(ucf, "trainlist01")
    assert root == ucf
    assert len(entries) == 3 * 2 * 2  # 3 classes, groups 2-3, 2 clips
    assert {e.group for e in entries} == {2, 3}
    for e in entries:
        assert e.class_name == e.source.split("/")[0] and e.label == CLASSES.index(e.class_name)
    quirk = [e for e in entries if "HandStand" in e.source]
    assert quirk and all(e.class_name == "HandstandPushups" and e.label == 2 for e in quirk)
    _, test = ucf101_videos(ucf, "testlist01")  # no label column: labels from the class folder
    assert {e.group for e in test} == {1} and sorted({e.label for e in test}) == [0, 1, 2]
    _, everything = ucf101_videos(ucf)  # no split: every video of every class
    assert len(everything) == 18
    assert read_class_index(ucf.parent / "ucfTrainTestlist" / "classInd.txt") == CLASSES


def test_split_folder_locations(tmp_path, ucf):
    # the parent of UCF-101/ as --data, lists next to UCF-101/
    assert len(ucf101_videos(ucf.parent, "testlist02")[1]) == 6
    # lists inside the UCF-101 folder
    inside = fake_ucf101(tmp_path / "inside", groups=2, clips=1, frames=4, splits_inside=True)
    assert len(ucf101_videos(inside, "testlist01")[1]) == 3
    # lists anywhere, given explicitly
    moved = tmp_path / "lists"
    shutil.move(str(inside / "ucfTrainTestlist"), moved)
    with pytest.raises(FileNotFoundError, match="--splits DIR"):
        ucf101_videos(inside, "testlist01")
    assert len(ucf101_videos(inside, "testlist01", splits=moved)[1]) == 3
    with pytest.raises(FileNotFoundError, match="no classInd.txt"):
        ucf101_videos(inside, "testlist01", splits=tmp_path)


def test_prepare_ucf101_keeps_labels(tmp_path, ucf):
    report = prepare(ucf, tmp_path / "cache", "24x32", layout="ucf101", split="trainlist01", workers=1,
                     min_frames=4, progress=False)
    assert report.videos == 12 and not report.skipped
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["classes"] == CLASSES
    first = index["videos"][0]
    assert first["source"] == ucf_name("ApplyEyeMakeup", 2, 1) and first["group"] == 2 and first["label"] == 0
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["layout"] == "ucf101" and meta["split"] == "trainlist01" and meta["complete"] is True
    ds = VideoCache(tmp_path / "cache", frames=4, height=24, width=24, return_label=True)
    assert ds.class_names == CLASSES
    labels = [ds.label(i) for i in range(len(ds))]
    assert labels == [CLASSES.index(ds.source(i).split("/")[0]) for i in range(len(ds))]
    item = ds[5]
    assert item.clips.shape == (3, 4, 24, 24) and int(item.labels) == labels[5]


def test_not_ucf101(tmp_path):
    (tmp_path / "clips").mkdir()
    write_video(tmp_path / "clips" / "a.mp4", numbered_frames(4))
    with pytest.raises(DatasetError) as info:
        prepare(tmp_path / "clips", tmp_path / "cache", "24x32", layout="ucf101", workers=1)
    message = str(info.value)
    assert "is not UCF-101" in message and "v_<Class>_gXX_cYY.avi" in message and "ucfTrainTestlist" in message
    assert "--layout folder" in message
    assert not (tmp_path / "cache").exists()  # nothing is written for a bad input
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ucf101_videos(tmp_path / "nowhere")


def test_split_file_errors(tmp_path):
    root = fake_ucf101(tmp_path, groups=2, clips=1, frames=4)
    lists = tmp_path / "ucfTrainTestlist"
    (lists / "trainlist02.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"trainlist02.txt is missing"):
        ucf101_videos(root, "trainlist02")
    with pytest.raises(DatasetError, match="unknown UCF-101 split 'train1'.*trainlist01"):
        ucf101_videos(root, "train1")
    # a list naming videos that are not there: the first few are listed
    (lists / "trainlist03.txt").write_text("".join(f"Archery/v_Archery_g{g:02d}_c09.avi 2\n" for g in range(1, 9)))
    with pytest.raises(DatasetError) as info:
        ucf101_videos(root, "trainlist03")
    assert "names 8 of its 8 videos that are not under" in str(info.value)
    assert "v_Archery_g01_c09.avi" in str(info.value) and "v_Archery_g08_c09.avi" not in str(info.value)
    # train and test lists sharing a group
    (lists / "testlist01.txt").write_text(ucf_name("Archery", 2, 1) + "\n")
    with pytest.raises(DatasetError, match="share 1 \\(class, group\\) pairs, e.g. class Archery group g02"):
        ucf101_videos(root, "trainlist01")
    with pytest.raises(DatasetError, match="share"):
        ucf101_videos(root, "testlist01")
    # a label outside classInd
    (lists / "trainlist01.txt").write_text(ucf_name("Archery", 2, 1) + " 7\n")
    with pytest.raises(DatasetError, match="label '7' is not in 1..3"):
        ucf101_videos(root, "trainlist01")
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(DatasetError, match="without gaps"):
        ucf101_videos(root, "trainlist02")
    (lists / "classInd.txt").unlink()
    with pytest.raises(FileNotFoundError, match="split lists not found"):
        ucf101_videos(root)


def test_folder_layout_labels_and_flags(tmp_path):
    for rel in ["b/x.mp4", "a/y.mp4", "a/deep/z.mp4", "top.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"not decoded here")
    (tmp_path / "notes.txt").write_text("ignored")
    entries = folder_videos(tmp_path)
    assert [(e.source, e.label, e.class_name) for e in entries] == [
        ("a/deep/z.mp4", 0, "a"), ("a/y.mp4", 0, "a"), ("b/x.mp4", 1, "b"), ("top.mp4", -1, None)]
    with pytest.raises(DatasetError, match="need --layout ucf101"):
        list_videos(tmp_path, "folder", split="trainlist01")
    with pytest.raises(DatasetError, match="unknown layout"):
        list_videos(tmp_path, "kinetics")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no video files"):
        folder_videos(tmp_path / "empty")
    assert np.array_equal(numbered_frames(3, seed=1), numbered_frames(3, seed=1))


def test_class_conditional_training_reads_labels_from_the_cache(ucf, tmp_path):
    """data.labels = true: the trainer hands (clips, labels) micro-batches to an objective that uses them."""
    from kinema.errors import ConfigError
    from kinema.registry import load_config
    from kinema.training import Trainer, TrainingError

    cache = tmp_path / "cache"
    prepare(ucf, cache, "16x24", layout="ucf101", split="trainlist01", workers=1, min_frames=4, progress=False)
    model = {"name": "vdm", "frames": 4, "resolution": 16, "base_channels": 8, "channel_mult": [1, 2],
             "num_res_blocks": 1, "attention_resolutions": [8], "head_channels": 4, "embed_channels": 16,
             "max_frames": 8, "dropout": 0.0, "sampling_steps": 2, "num_classes": len(CLASSES)}
    train = {"steps": 2, "batch_size": 4, "accumulate": 2, "log_every": 1, "sample_every": 2,
             "checkpoint_every": 2, "num_samples": 2}
    cfg = load_config(None, model=model, data={"source": "cache", "path": str(cache), "labels": True}, train=train)
    trainer = Trainer(cfg, tmp_path / "run", device="cpu", progress=False)
    seen = []
    step = trainer.objective.train_step
    trainer.objective.train_step = lambda micro, ctx: seen.append(micro) or step(micro, ctx)
    trainer.fit()
    clips, labels = seen[0][0].clips, seen[0][0].labels
    assert clips.shape == (2, 3, 4, 16, 16) and labels.dtype == torch.int64 and len(seen[0]) == 2
    index = json.loads((cache / "index.json").read_text())
    assert set(labels.tolist()) <= {v["label"] for v in index["videos"]}

    gan = load_config(None, model={"name": "tganv2"}, data={"source": "cache", "path": str(cache), "labels": True})
    with pytest.raises(TrainingError, match="'gan' objective does not use class labels"):
        Trainer(gan, tmp_path / "gan", device="cpu", progress=False)
    with pytest.raises(ConfigError, match='data.labels = true needs labelled clips'):
        load_config(None, model={"name": "tganv2"}, data={"labels": True})
