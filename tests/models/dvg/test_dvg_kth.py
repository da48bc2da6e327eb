"""The KTH layout of ``kinema prepare`` on a tiny fake KTH tree, how its greyscale videos reach DVG, and
``kinema evaluate`` of a DVG checkpoint with the prediction protocols."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kinema.cli import main
from kinema.data import build_dataset
from kinema.data.folder import DatasetError
from kinema.data.kth import KTH_ACTIONS, kth_videos
from kinema.registry import load_config
from kinema.video import write_video

pytestmark = pytest.mark.usefixtures("one_thread")

VIDEOS = ("walking/person01_walking_d1_uncomp.mp4", "walking/person21_walking_d2_uncomp.mp4",
          "boxing/person20_boxing_d1_uncomp.mp4", "boxing/person17_boxing_d3_uncomp.mp4")


def grey_video(seed: int, frames: int = 12) -> np.ndarray:
    """``(T, 30, 40, 3)`` uint8, equal channels: a bright square moving right on a dark background."""
    video = np.full((frames, 30, 40, 3), 30, np.uint8)
    for t in range(frames):
        x = 8 + 2 * t + seed
        video[t, 10:18, x:x + 8] = 220
    return video


@pytest.fixture()
def kth_tree(tmp_path):
    root = tmp_path / "kth"
    for k, rel in enumerate(VIDEOS):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / rel, grey_video(k))
    return root


def test_kth_videos_splits_by_person_and_labels_by_action(kth_tree):
    _, train = kth_videos(kth_tree, "train")
    assert sorted(e.source for e in train) == sorted(v for v in VIDEOS if "person21" not in v)
    assert {(e.class_name, e.label, e.group) for e in train} == {
        ("walking", 5, 1), ("boxing", 0, 20), ("boxing", 0, 17)}
    assert [e.group for e in kth_videos(kth_tree, "test")[1]] == [21]
    assert sorted(e.group for e in kth_videos(kth_tree, "mcnet_test")[1]) == [17, 20, 21]
    assert len(kth_videos(kth_tree)[1]) == 4 and KTH_ACTIONS.index("walking") == 5


def test_kth_layout_errors_name_the_problem(kth_tree, tmp_path):
    with pytest.raises(DatasetError, match="not a KTH split"):
        kth_videos(kth_tree, "trainlist01")
    write_video(kth_tree / "boxing" / "person02_walking_d1_uncomp.mp4", grey_video(0))
    with pytest.raises(DatasetError, match="walking video in the boxing/ folder"):
        kth_videos(kth_tree)
    (kth_tree / "boxing" / "person02_walking_d1_uncomp.mp4").unlink()
    write_video(kth_tree / "clip.mp4", grey_video(0))
    with pytest.raises(DatasetError, match="not a KTH file name"):
        kth_videos(kth_tree)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        kth_videos(tmp_path / "missing")


def test_prepare_kth_then_dvg_trains_and_is_evaluated(kth_tree, tmp_path, capsys):
    cache = tmp_path / "kth_16"
    assert main(["prepare", "--data", str(kth_tree), "--out", str(cache), "--resolution", "16x16", "--layout", "kth",
                 "--split", "train", "--workers", "1", "--min-frames", "8", "--no-progress"]) == 0
    index = json.loads((cache / "index.json").read_text())
    assert sorted(v["group"] for v in index["videos"]) == [1, 17, 20]
    assert json.loads((cache / "meta.json").read_text())["split"] == "train"
    assert main(["prepare", "--data", str(kth_tree), "--out", str(tmp_path / "x"), "--layout", "kth",
                 "--splits", str(tmp_path)]) == 2
    assert "--splits is for --layout ucf101" in capsys.readouterr().err
    test_cache = tmp_path / "kth_16_test"
    assert main(["prepare", "--data", str(kth_tree), "--out", str(test_cache), "--resolution", "16x16", "--layout",
                 "kth", "--split", "test", "--workers", "1", "--min-frames", "8", "--no-progress"]) == 0

    # greyscale: the cache holds (T, H, W, 3) with equal channels; clips are (3, T, H, W); DVG averages them
    cfg = load_config("configs/dvg_kth_64.toml").data
    cfg.path = str(cache)
    clip = build_dataset(cfg, frames=8, height=16, width=16, seed=0)[0]
    assert clip.shape == (3, 8, 16, 16) and torch.equal(clip[0], clip[1]) and torch.equal(clip[0], clip[2])

    run = tmp_path / "run"
    sets = [f"--set=model.{k}={v}" for k, v in (("resolution", 16), ("nf", 8), ("g_dim", 4), ("rnn_size", 16),
                                                ("gp_inducing", 8), ("n_past", 3), ("n_future", 3),
                                                ("trigger_window", 8), ("trigger_warmup", 4))]
    assert main(["--threads", "1", "train", "--config", "configs/dvg_kth_64.toml", "--out", str(run), "--steps", "2",
                 "--no-progress", "--device", "cpu", "--set", "train.batch_size=3", "--set", "train.num_samples=2",
                 "--set", f"data.path={cache}", *sets]) == 0
    out = tmp_path / "eval.jsonl"
    assert main(["--threads", "1", "evaluate", "--checkpoint", str(run), "--metrics", "bestof100_ssim_psnr",
                 "--data", str(test_cache), "--num", "1", "--device", "cpu", "--workers", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["eval"]["bestof100_ssim_psnr"]
    assert result["futures"] == 100 and result["context_frames"] == 3 and result["num"] == 1
    assert len(result["ssim"]) == len(result["psnr"]) == len(result["copy_last_psnr"]) == 3
    assert "bestof100_ssim_psnr:" in capsys.readouterr().out
    # diversity needs ground-truth modes: a KTH cache has none
    assert main(["--threads", "1", "evaluate", "--checkpoint", str(run), "--metrics", "modes_diversity10",
                 "--data", str(test_cache), "--num", "1", "--device", "cpu", "--workers", "0"]) == 2
    assert "action_switch_digits" in capsys.readouterr().err
