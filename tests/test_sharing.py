"""Sharing a trained model (tiny TGANv2, seconds): `kinema export` -> an inference folder with a model card that
sample / evaluate / info / load / from_pretrained (folder and an offline Hugging Face Hub cache) and
train.init_from accept; bad exports and Hub ids end in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kinema
from kinema import api
from kinema.cli import main
from kinema.errors import CheckpointError
from kinema.registry import load_model


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharing") / "run"
    assert main(["train", "--config", "tganv2_tiny", "--out", str(out), "--steps", "4", "--no-progress",
                 "--set", "train.checkpoint_every=2", "--set", "train.sample_every=2", "--set", "train.eval_every=4",
                 "--set", 'train.eval_metrics=["motion256"]', "--set", "train.eval_num=8"]) == 0
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny"
    assert main(["export", str(run), str(out), "--num-samples", "4", "--no-progress"]) == 0
    return out


def test_an_export_holds_ema_weights_config_card_samples_and_manifest(run, exported):
    assert {p.name for p in exported.iterdir()} == {"config.json", "model.safetensors", "export.json", "README.md",
                                                     "samples.gif", "samples.png", "manifest.json"}
    ema_model, _, ckpt = load_model(run, ema=True)
    stored = load_file(exported / "model.safetensors")
    assert stored.keys() == ema_model.state_dict().keys()
    assert all(torch.equal(stored[k], v) for k, v in ema_model.state_dict().items()), "the EMA weights, merged"
    record = json.loads((exported / "export.json").read_text())
    assert record["step"] == 4 and record["weights"] == "ema" and record["source"] == str(ckpt.resolve())
    card = (exported / "README.md").read_text()
    assert "library_name: kinema" in card and "| step | 4 of 4 |" in card
    assert "kinema train --config tganv2_tiny --out" in card, "the command that trained it"
    block = card[card.index("## Trained with"):card.index("## Evaluation")].strip().splitlines()
    assert block[2] == "```sh" and block[-1] == "```", "the command block opens and closes"
    assert "| 4 | `motion256` |" in card, "the run's evaluation records"
    assert "![samples](samples.gif)" in card and '[model]\nname = "tganv2"' in card


def test_raw_export_holds_the_weights_as_trained(run, tmp_path):
    out = api.export(run, tmp_path / "raw", raw=True, num_samples=1)
    raw_model, _, _ = load_model(run, ema=False)
    stored = load_file(out / "model.safetensors")
    assert all(torch.equal(stored[k], v) for k, v in raw_model.state_dict().items())
    assert json.loads((out / "export.json").read_text())["weights"] == "raw"


def test_sample_info_evaluate_and_load_take_the_export(run, exported, tmp_path, capsys):
    model, config = kinema.load(exported)
    same, _ = kinema.load(run)  # EMA overlaid on the run's checkpoint: the same network
    assert torch.equal(api.generate(model, 2, seed=3), api.generate(same, 2, seed=3))
    assert main(["sample", "--checkpoint", str(exported), "--out", str(tmp_path / "s"), "--num", "2"]) == 0
    assert main(["info", str(exported)]) == 0
    assert "exported:   step 4 of 4, ema weights" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(exported), "--metrics", "motion256", "--num", "8",
                 "--out", str(tmp_path / "r.jsonl")]) == 0
    assert json.loads((tmp_path / "r.jsonl").read_text())["eval"]["motion256"]["value"] >= 0


def test_the_card_samples_are_what_kinema_sample_gives(exported, tmp_path):
    from kinema.video import read_video

    assert main(["sample", "--checkpoint", str(exported), "--out", str(tmp_path / "s"), "--num", "4",
                 "--seed", "0"]) == 0
    assert torch.equal(torch.as_tensor(read_video(exported / "samples.gif")),
                       torch.as_tensor(read_video(tmp_path / "s" / "grid.gif")))


def test_fine_tuning_starts_from_the_export(exported, tmp_path):
    out = tmp_path / "ft"
    assert main(["train", "--out", str(out), "--init-from", str(exported), "--steps", "1", "--no-progress"]) == 0
    assert (out / "checkpoints" / "step_0000001").is_dir()
    assert f'init_from = "{exported}"' in (out / "config.toml").read_text()


def hub_cache(root: Path, repo: str, folder: Path) -> Path:
    """The Hub's cache layout (models--user--name/refs/main -> snapshots/<commit>/files), as a download leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, base / "snapshots" / commit)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    return root


def test_from_pretrained_reads_a_folder_and_an_offline_hub_cache(exported, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub", reason="the Hub path needs kinema[hub] (in the test extra)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may go to the network
    model, config = kinema.from_pretrained(exported)
    cache = hub_cache(tmp_path / "cache", "alice/tiny-tganv2", exported)
    from_hub, _ = kinema.from_pretrained("alice/tiny-tganv2", cache_dir=cache)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), from_hub.state_dict().values()))
    with pytest.raises(CheckpointError, match="'alice/other' is not in the Hugging Face Hub cache and HF_HUB_OFFLINE "
                                              "is set, so nothing is downloaded"):
        kinema.from_pretrained("alice/other", cache_dir=cache)
    with pytest.raises(CheckpointError, match="does not exist; pass an export, run or checkpoint folder"):
        kinema.from_pretrained(tmp_path / "nowhere")


def test_push_to_hub_uploads_the_folder(exported, monkeypatch):
    hub = pytest.importorskip("huggingface_hub", reason="the Hub path needs kinema[hub] (in the test extra)")
    calls = []

    class FakeApi:  # records what would be sent; nothing goes to the network
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create", repo_id, private))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    from kinema.sharing import push_to_hub

    assert push_to_hub(exported, "alice/tiny", private=True) == "https://huggingface.co/alice/tiny"
    assert calls[0] == ("create", "alice/tiny", True) and "model.safetensors" in calls[1][2]


def test_bad_exports_end_in_one_line(run, exported, tmp_path, capsys):
    assert main(["export", str(tmp_path / "empty"), str(tmp_path / "e")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(["export", str(run), str(tmp_path / "taken")]) == 2
    assert "exists and is not a kinema export" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "model.safetensors").unlink()
    assert main(["sample", "--checkpoint", str(broken), "--out", str(tmp_path / "s")]) == 2
    assert f"checkpoint {broken} is incomplete (missing model.safetensors)" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    shutil.copytree(exported, foreign)
    shutil.copyfile(run / "checkpoints" / "step_0000004" / "trainer_state.pt", foreign / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors has .* bytes, manifest.json says"):
        kinema.load(foreign)


def test_an_export_with_other_files_in_it_is_never_emptied(run, exported, tmp_path, capsys):
    """Replacing an export deleted the whole folder: a user's notes in it, or a run trained into it, went too."""
    target = tmp_path / "mine"
    shutil.copytree(exported, target)
    (target / "NOTES.txt").write_text("mine")
    assert main(["export", str(run), str(target), "--num-samples", "1", "--no-progress"]) == 2
    assert "also holds NOTES.txt, which replacing it would delete" in capsys.readouterr().err
    assert (target / "NOTES.txt").read_text() == "mine"
    assert main(["export", str(run), str(run / "checkpoints" / "step_0000004" / "exp"), "--num-samples", "1"]) == 2
    assert "is inside the checkpoint folder" in capsys.readouterr().err  # pruning the checkpoint would delete it


def test_a_re_export_keeps_the_step_and_weights_of_its_source(exported, tmp_path):
    """Exporting an export recorded step -1 and "raw" weights although they were the EMA's at step 4."""
    again = tmp_path / "again"
    assert main(["export", str(exported), str(again), "--num-samples", "1", "--no-progress"]) == 0
    record = json.loads((again / "export.json").read_text())
    assert (record["step"], record["weights"]) == (4, "ema")
    assert record["exported_from"]["source"].endswith("step_0000004")
    assert "| step | 4 of 4 |" in (again / "README.md").read_text()


def test_a_full_disk_or_a_sigterm_during_export_keeps_the_earlier_export(run, exported, tmp_path, monkeypatch, capsys):
    """A full disk was a SafetensorError traceback; SIGTERM killed the process and left the partial folder."""
    import safetensors.torch

    target = tmp_path / "target"
    shutil.copytree(exported, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def full(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(["export", str(run), str(target), "--num-samples", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "disk full: writing the export" in err and "the earlier export there is intact" in err
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not list(tmp_path.glob(".tmp-*"))


def test_card_and_records_survive_odd_logs(run, tmp_path):
    """A commands.jsonl line that is not UTF-8 stopped the export; a ``` in a command ended the card's block."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with open(copy / "commands.jsonl", "ab") as f:
        f.write(b"\xff\xfe\n" + json.dumps({"command": "kinema train --set 'x=```'"}).encode() + b"\n")
    assert main(["export", str(copy), str(tmp_path / "e"), "--num-samples", "1", "--no-progress"]) == 0
    card = (tmp_path / "e" / "README.md").read_text()
    assert "````sh\n" in card and "kinema train --set 'x=```'" in card


def test_sigterm_during_export_leaves_nothing_half_written(run, exported, tmp_path):
    """SIGTERM killed the process and left the partial .tmp- folder (a whole model) behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "target"
    shutil.copytree(exported, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(kinema.__file__).parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "kinema", "--threads", "1", "export", str(run), str(target),
                             "--num-samples", "4000", "--no-progress"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".tmp-target-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "kinema export: stopped by SIGTERM" in err
    assert not list(tmp_path.glob(".tmp-*"))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
