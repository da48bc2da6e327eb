"""Fault injection: data edge cases and command-line holes, each a clear one-line error (or handled).

Each case takes seconds on a tiny config: symlinked class folders and symlink loops, a cache index
that points outside the cache, impossible --resolution values, an error inside a DataLoader worker,
and the argument values that used to end in a traceback, a silent substitution or nothing at all.
"""

from __future__ import annotations

import json
import os
import stat
import time
import warnings

import pytest
import torch
from tiny import tiny_run_config
from videodata import numbered_frames

import kinema.data.prepare as prep
from kinema.cli import error_message, main
from kinema.data import CacheError, VideoCache, VideoFolder
from kinema.data.prepare import PrepareError, prepare
from kinema.data.ucf101 import folder_videos
from kinema.metrics.networks.weights import save_weights
from kinema.video import write_video

pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")


def run_error(argv, capsys) -> str:
    """The one-line error of a failing command (exit status 2, no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and 'File "' not in err, err
    return err


def tiny_videos(folder, count: int, frames: int = 10, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_video(folder / f"v{i}.mp4", numbered_frames(frames, 16, 16, seed=seed + i), fps=8)


@pytest.fixture(scope="module")
def linked_tree(tmp_path_factory):
    """``root/real/`` (class "real", 2 videos) and ``root/linked`` -> ``elsewhere/`` (class "linked",
    2 videos) holding ``back`` -> ``root`` (a loop)."""
    base = tmp_path_factory.mktemp("links")
    root, elsewhere = base / "root", base / "elsewhere"
    tiny_videos(root / "real", 2)
    tiny_videos(elsewhere, 2, seed=10)
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back").symlink_to(root, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def cache16(tmp_path_factory):
    """A 16x16 cache of three 10-frame videos, for the tiny config (8 frames, 16x16)."""
    base = tmp_path_factory.mktemp("cache16")
    tiny_videos(base / "videos", 3)
    prepare(base / "videos", base / "cache", resolution=(16, 16), workers=1, min_frames=8, progress=False)
    return base / "cache"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    config = base / "tiny.toml"
    config.write_text(tiny_run_config(steps=1).to_toml())
    out = base / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    return out


# --------------------------------------------------------------------------- data edge cases


def test_prepare_follows_a_symlinked_class_folder_and_skips_the_loop(linked_tree, tmp_path, capsys):
    with pytest.warns(UserWarning, match=r"skipping .*back: a symbolic link .* \(a loop\)"):
        entries = folder_videos(linked_tree)
    assert [(e.source, e.class_name, e.label) for e in entries] == [
        ("linked/v0.mp4", "linked", 0), ("linked/v1.mp4", "linked", 0),
        ("real/v0.mp4", "real", 1), ("real/v1.mp4", "real", 1)]
    out = tmp_path / "cache"
    with pytest.warns(UserWarning, match="a loop"):
        assert main(["prepare", "--data", str(linked_tree), "--out", str(out), "--resolution", "16x16",
                     "--workers", "1", "--min-frames", "8", "--no-progress"]) == 0
    assert "4 videos" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["classes"] == ["linked", "real"] and len(index["videos"]) == 4


def test_folder_source_follows_a_symlinked_class_folder(linked_tree):
    with pytest.warns(UserWarning, match="a loop"):
        ds = VideoFolder(linked_tree, frames=8, height=16, width=16)
    assert sorted(p.relative_to(linked_tree).as_posix() for p in ds.videos) == [
        "linked/v0.mp4", "linked/v1.mp4", "real/v0.mp4", "real/v1.mp4"]
    assert ds[0].shape == (3, 8, 16, 16)


def test_a_symlink_loop_alone_terminates(tmp_path):
    tiny_videos(tmp_path / "a", 1)
    (tmp_path / "a" / "self").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "parent").symlink_to(tmp_path, target_is_directory=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entries = folder_videos(tmp_path)
    assert [e.source for e in entries] == ["a/v0.mp4"]
    assert sum("a loop" in str(w.message) for w in caught) == 2


@pytest.mark.parametrize("file", ["../../outside.npy", "videos/../../outside.npy", "/etc/passwd", "", None])
def test_cache_index_pointing_outside_the_cache_is_refused(cache16, tmp_path, file):
    bad = tmp_path / "cache"
    bad.mkdir()
    for name in ("meta.json", "index.json"):
        (bad / name).write_text((cache16 / name).read_text())
    (tmp_path / "outside.npy").write_bytes((cache16 / "videos" / "v0.mp4.npy").read_bytes())
    index = json.loads((bad / "index.json").read_text())
    index["videos"][0]["file"] = file
    (bad / "index.json").write_text(json.dumps(index))
    with pytest.raises(CacheError, match="points outside the cache") as info:
        VideoCache(bad, frames=8, height=16, width=16)
    assert str(bad) in str(info.value) and "v0.mp4" in str(info.value)


def test_cache_index_malformed_entry_is_refused(cache16, tmp_path):
    bad = tmp_path / "cache"
    bad.mkdir()
    (bad / "meta.json").write_text((cache16 / "meta.json").read_text())
    (bad / "index.json").write_text(json.dumps({"videos": ["videos/v0.mp4.npy"]}))
    with pytest.raises(CacheError, match="malformed entry"):
        VideoCache(bad, frames=8, height=16, width=16)


@pytest.mark.parametrize("resolution", ["100000x100000", "4x4", "16x5000"])
def test_impossible_resolution_is_refused_up_front(linked_tree, tmp_path, capsys, resolution):
    start = time.perf_counter()
    err = run_error(["prepare", "--data", str(linked_tree), "--out", str(tmp_path / "c"), "--resolution",
                     resolution, "--no-progress"], capsys)
    assert "between 8 and 4096" in err and time.perf_counter() - start < 10
    assert not (tmp_path / "c").exists()


def test_resolution_beyond_available_memory_is_refused(linked_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "available_memory", lambda: 100 * 2**20)  # 100 MiB
    with pytest.raises(PrepareError, match=r"lower --resolution or --workers"):
        with pytest.warns(UserWarning, match="a loop"):
            prepare(linked_tree, tmp_path / "c", resolution=(2048, 2048), workers=2, min_frames=8, progress=False)


def test_worker_error_is_one_line_with_the_original_message(cache16, tmp_path, capsys):
    broken = tmp_path / "cache"
    broken.mkdir()
    for name in ("meta.json", "index.json"):
        (broken / name).write_text((cache16 / name).read_text())
    (broken / "videos").mkdir()
    for f in (cache16 / "videos").iterdir():
        (broken / "videos" / f.name).write_bytes(b"\x80\x04 not an array" * 20)  # damaged after preparation
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_run_config(steps=1).to_toml())
    err = run_error(["train", "--config", str(config), "--out", str(tmp_path / "r"), "--device", "cpu",
                     "--no-progress", "--set", "data.source=cache", "--set", f"data.path={broken}",
                     "--set", "data.workers=1", "--set", "train.batch_size=2"], capsys)
    assert "in a data loading worker: CacheError: cache file" in err and "cannot be read" in err
    assert "allow_pickle" not in err and len(err.strip().splitlines()) == 1


def test_error_message_strips_an_embedded_worker_traceback():
    embedded = ("Caught CacheError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                '  File "x.py", line 1, in f\n    raise CacheError("bad")\n    ^^^^^^^^^\n'
                "kinema.data.cache.CacheError: cache file x.npy cannot be read\n")
    assert error_message(ValueError(embedded)) == "in a data loading worker: CacheError: cache file x.npy cannot be read"
    assert error_message(ValueError("plain message")) == "plain message"


# --------------------------------------------------------------------------- command-line holes


@pytest.mark.parametrize("args, message", [
    (["--metrics", ","], "--metrics ',' names no metric"),
    (["--metrics", " , ,"], "names no metric"),
    (["--metrics", "motion256", "--num", "0"], "--num must be > 0, got 0"),
    (["--metrics", "motion256", "--num", "-3"], "--num must be > 0"),
    (["--metrics", "motion256", "--batch-size", "0"], "--batch-size must be > 0"),
    (["--metrics", "motion256", "--workers", "-1"], "--workers must be >= 0"),
])
def test_evaluate_argument_holes(tiny_run, capsys, args, message):
    assert message in run_error(["evaluate", "--checkpoint", str(tiny_run), *args], capsys)


def test_evaluate_huge_num_is_refused_before_generating(tiny_run, capsys):
    start = time.perf_counter()
    err = run_error(["evaluate", "--checkpoint", str(tiny_run), "--metrics", "motion256", "--num", "1000000000000",
                     "--cache", "none"], capsys)
    assert "too few real clips: the protocol needs 1000000000000, the dataset has 64" in err
    assert time.perf_counter() - start < 30


def test_evaluate_library_refuses_zero_num_no_metric_and_huge_noise(tiny_run, monkeypatch):
    import kinema.metrics.evaluate as ev
    from kinema.api import load

    with pytest.raises(ValueError, match="no metric"):
        ev.evaluate_model(None, [], {})
    with pytest.raises(ValueError, match="--num must be > 0"):
        ev.evaluate_model(None, ["motion256"], {}, num=0)
    model, _ = load(tiny_run)
    monkeypatch.setattr(prep, "available_memory", lambda: 2**30)
    with pytest.raises(ValueError, match=r"the noise of 10,000,000,000 generated clips alone is .* lower --num"):
        ev.evaluate_model(model, ["is2048_c3d_tganv2"], {}, num=10**9)  # IS: 10 repetitions, no real clips


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size must be > 0, got 0"),
    (["--num", "0"], "--num must be > 0"),
    (["--num", "1000000000000"], "held in memory until written"),
    (["--fps", "0"], "--fps must be a positive number of frames per second, got 0"),
    (["--fps", "-5"], "--fps must be a positive number"),
    (["--fps", "nan"], "--fps must be a positive number"),
    (["--fps", "inf"], "--fps must be a positive number"),
])
def test_sample_argument_holes(tiny_run, tmp_path, capsys, args, message):
    out = tmp_path / "s.gif"
    assert message in run_error(["sample", "--checkpoint", str(tiny_run), "--out", str(out), "--no-progress", *args],
                                capsys)
    assert not out.exists()


def test_sample_library_refuses_zero_fps(tiny_run, tmp_path):
    from kinema.api import sample

    with pytest.raises(ValueError, match="--fps must be a positive number"):
        sample(tiny_run, tmp_path / "s.gif", num=1, fps=0, device="cpu")


def test_prepare_argument_holes(linked_tree, tmp_path, capsys):
    base = ["prepare", "--data", str(linked_tree), "--out", str(tmp_path / "c"), "--no-progress"]
    assert "--frames-per-second must be a positive number" in run_error(base + ["--frames-per-second", "0"], capsys)
    assert "--workers must be > 0" in run_error(base + ["--workers", "0"], capsys)
    assert "--min-frames must be > 0" in run_error(base + ["--min-frames", "0"], capsys)


def test_config_that_is_a_folder_binary_or_invalid_names_the_file(tmp_path, capsys):
    folder = tmp_path / "configdir"
    folder.mkdir()
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nname = 1\n")
    for path, message in [(folder, "is a folder"), (binary, "is not a TOML text file"),
                          (broken, "is not valid TOML")]:
        err = run_error(["train", "--config", str(path), "--out", str(tmp_path / "r"), "--dry-run"], capsys)
        assert str(path.name) in err and message in err


@pytest.mark.parametrize("content, message", [
    ('{"model": ', "is not valid JSON"),
    ("[1, 2]", "holds a JSON list"),
    ('{"model": 5}', "config.json"),
    ('{"model": {"name": "nope"}}', "unknown model.name 'nope'"),
    (b"\xff\xfe\x00binary", "is not valid JSON"),
])
def test_invalid_config_json_names_the_file(tiny_run, tmp_path, capsys, content, message):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (config,) = run.glob("checkpoints/step_*/config.json")
    if isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    from kinema.registry import load_config_json
    from kinema.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as info:
        load_config_json(config)
    assert str(config) in str(info.value)
    for argv in (["info", str(run)], ["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s.gif")]):
        err = run_error(argv, capsys)
        assert "config.json" in err


def test_convert_inception_wrong_file_gives_kinemas_message(tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x92$" + bytes(range(256)) * 10)  # torch: UnpicklingError
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"eK" + bytes(range(256)) * 10)  # an APPENDS opcode first: torch raises IndexError
    module = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module)
    for src, detail in [(junk, "not a tensor-only PyTorch file"), (damaged, "not a tensor-only PyTorch file"),
                        (module, "torch.nn.modules.linear.Linear")]:
        err = run_error(["convert", "inception", str(src), str(tmp_path / "o.safetensors")], capsys)
        assert f"cannot read {src}" in err and detail in err and "pt_inception-2015-12-05" in err
        assert "weights_only" not in err and "trust" not in err and "Warning" not in err
    assert not (tmp_path / "o.safetensors").exists()


def test_convert_c3d_wrong_file_never_suggests_unpickling(tmp_path, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(3000))
    err = run_error(["convert", "c3d", str(junk), str(tmp_path / "o.safetensors")], capsys)
    assert f"{junk} is not a readable .npz" in err and "allow_pickle" not in err and "trust" not in err


def test_converted_weights_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_weights({"w": torch.zeros(2)}, tmp_path / "w.safetensors", "test")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o027)
        path = save_weights({"w": torch.zeros(2)}, tmp_path / "w2.safetensors", "test")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_evaluate_fake_folder_follows_a_symlinked_folder(tmp_path, capsys):
    from kinema.data import BouncingShapes
    from kinema.video import to_uint8

    clips = BouncingShapes(6, 8, 32, 32, seed=0)
    for i in range(6):
        folder = tmp_path / ("generated" if i < 3 else "real")
        folder.mkdir(exist_ok=True)
        write_video(folder / f"c{i}.mp4", to_uint8(clips[i]), fps=8)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "run1").symlink_to(tmp_path / "generated", target_is_directory=True)  # the only thing in --fake
    assert main(["evaluate", "--fake", str(fake), "--data", str(tmp_path / "real"), "--metrics", "motion256",
                 "--workers", "0", "--cache", "none", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "motion256:" in out and "(clips 3," in out
