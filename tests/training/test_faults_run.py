"""Fault injection for long runs (tiny config, seconds each): a second writer, preemption signals,
kills during a checkpoint write, bad checkpoints, non-finite values, a full disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_run_config

from kinema import api
from kinema.cli import main
from kinema.errors import CheckpointError, ConfigError, Interrupted, TrainingError
from kinema.registry import load_config
from kinema.runlock import LOCK_NAME, STALE_AFTER
from kinema.runs import list_checkpoints
from kinema.training import Trainer
import kinema.training.checkpoint as checkpoint_module


def trainer(out, steps=6, resume=False, **train):
    return Trainer(tiny_run_config(steps=steps, **train), out, device="cpu", resume=resume, progress=False)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def logged_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def signal_during_step(t: Trainer, step: int, signum: int) -> None:
    """Deliver ``signum`` to this process in the middle of step ``step + 1`` (after its first half
    has drawn noise and run forward passes would be the same: the handler only sets a flag)."""
    original = t.objective.train_step

    def step_with_signal(micro_batches, ctx):
        if t.step == step:
            os.kill(os.getpid(), signum)
        return original(micro_batches, ctx)

    t.objective.train_step = step_with_signal


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 6-step run: the reference for every resume."""
    out = tmp_path_factory.mktemp("straight")
    return trainer(out).fit()


# --------------------------------------------------------------------------- one writer per run


def test_second_run_in_the_same_out_is_refused_at_once(tmp_path):
    first = trainer(tmp_path, steps=2)
    with pytest.raises(TrainingError, match=rf"in use by another training run \(process {os.getpid()} on host"):
        trainer(tmp_path, steps=2)
    first.fit()
    assert not (tmp_path / LOCK_NAME).exists(), "fit() releases the lock"
    trainer(tmp_path, steps=2, resume=True).fit()  # free again


def test_lock_held_by_another_process_names_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, socket, time\n"
        f"fd = os.open({str(tmp_path / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), 'started': 'now'}).encode())\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(TrainingError, match=rf"process {holder.pid} on host {socket.gethostname()}, running since now; it holds the lock.*delete .*\.lock"):
            trainer(tmp_path, steps=1)
    finally:
        holder.kill()
        holder.wait()
    trainer(tmp_path, steps=1).fit()  # the kernel dropped its flock: the stale record is reclaimed


def test_stale_lock_of_a_dead_process_is_reclaimed_with_a_message(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    trainer(tmp_path, steps=1).fit()
    assert f"reclaiming the stale lock {tmp_path / LOCK_NAME} of process {dead.pid}" in capsys.readouterr().err


def test_lock_from_another_host_is_refused_until_its_heartbeat_is_old(tmp_path, capsys):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": 4242, "host": "node-17", "started": "x"}))
    with pytest.raises(TrainingError, match="process 4242 on host node-17"):
        trainer(tmp_path, steps=1)
    old = time.time() - STALE_AFTER - 60
    os.utime(lock, (old, old))
    trainer(tmp_path, steps=1).fit()
    assert "of process 4242 on host node-17 (no heartbeat" in capsys.readouterr().err


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_step_saves_a_checkpoint_that_resumes_bit_exactly(tmp_path, straight, signum, code):
    before = signal.getsignal(signum)
    t = trainer(tmp_path)
    signal_during_step(t, 3, signum)
    with pytest.raises(Interrupted) as info:
        t.fit()
    assert info.value.exit_code == code and "\n" not in str(info.value)
    assert f"stopped by {signal.Signals(signum).name} after step 4" in str(info.value)
    assert signal.getsignal(signum) is before, "handlers restored"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000004"]
    assert not (tmp_path / LOCK_NAME).exists()
    end = trainer(tmp_path, resume=True).fit()
    assert_same_weights(straight, end)
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]


def test_second_signal_exits_at_once(tmp_path, monkeypatch):
    t = trainer(tmp_path, steps=1)
    calls = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: calls.append(("kill", pid, signum)))
    monkeypatch.setattr(signal, "signal", lambda signum, handler: calls.append(("signal", signum, handler)))
    t.stop.on_signal(signal.SIGTERM, None)
    assert t.stop.signum == signal.SIGTERM and not calls
    t.stop.on_signal(signal.SIGTERM, None)  # default action, then the signal again: the process ends
    assert calls == [("signal", signal.SIGTERM, signal.SIG_DFL), ("kill", os.getpid(), signal.SIGTERM)]
    t.close()


def test_cli_sigterm_saves_and_exits_143_with_one_line(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kinema.cli", "--threads", "1", "train", "--config", "tganv2_tiny", "--out", str(out),
         "--steps", "100000", "--no-progress", "--set", "train.batch_size=2", "--set", "train.num_samples=2",
         "--set", "train.log_every=1", "--set", "model.frames=8", "--set", "model.resolution=16",
         "--set", "model.base_size=2", "--set", "model.levels=3", "--set", "model.gen_channels=[16,16,8,8]",
         "--set", "model.dis_channels=[8,16]", "--set", "model.z_dim=8", "--set", "data.num_clips=64"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.time() + 120
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("kinema train: stopped by SIGTERM after step ") and "continue with --resume" in last
    step = int(last.split("after step ")[1].split(":")[0])
    assert [int(p.name[5:]) for p in list_checkpoints(out)] == [step]


# --------------------------------------------------------------------------- kills during a write


def test_kill_during_a_checkpoint_write_leaves_no_orphan_after_the_next_start(tmp_path, capsys):
    """SIGKILL (no handler runs) in the middle of writing step 4: the temporary folder and the lock stay
    behind; the next start reclaims the lock, deletes the orphan and resumes from step 2."""
    out = tmp_path / "run"
    script = (
        "import os, signal, sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from tiny import tiny_run_config\n"
        "from kinema.training import Trainer\n"
        f"t = Trainer(tiny_run_config(steps=6, checkpoint_every=2), {str(out)!r}, device='cpu', progress=False)\n"
        "real = torch.save\n"
        "def save_then_die(obj, f, *a, **k):\n"
        "    real(obj, f, *a, **k)\n"
        "    if t.step == 4:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = save_then_die\n"
        "t.fit()\n")
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == [".tmp-step_0000004-%d" % proc_pid(root), "step_0000002"]
    assert (out / LOCK_NAME).exists()
    t = trainer(out, resume=True)
    assert t.step == 2
    assert sorted(p.name for p in root.iterdir()) == ["step_0000002"]
    err = capsys.readouterr().err
    assert "reclaiming the stale lock" in err and "removed .tmp-step_0000004-" in err
    t.fit()


def proc_pid(root: Path) -> int:
    return int(next(root.glob(".tmp-*")).name.rsplit("-", 1)[1])


def test_a_resave_killed_between_its_renames_restores_the_old_copy(tmp_path):
    t = trainer(tmp_path, steps=2)
    t.fit()
    root = tmp_path / "checkpoints"
    # re-saving step 2 moves the old copy aside, then renames the new one in: killed in between
    os.replace(root / "step_0000002", root / ".old-step_0000002-99998")
    (root / ".tmp-step_0000002-99998").mkdir()
    t = trainer(tmp_path, steps=2, resume=True)
    assert t.step == 2
    assert sorted(p.name for p in root.iterdir()) == ["step_0000002"]
    t.close()


def test_a_failed_write_leaves_no_temporary_folder(tmp_path, monkeypatch):
    t = trainer(tmp_path, steps=2)
    t.fit()
    monkeypatch.setattr(checkpoint_module.torch, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    t.step = 3
    with pytest.raises(KeyboardInterrupt):
        t.save()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002"]


# --------------------------------------------------------------------------- bad checkpoints


def two_checkpoints(out):
    """Checkpoints at steps 2 and 4 of a 6-step run stopped by SIGTERM during step 4."""
    t = trainer(out, steps=6, checkpoint_every=2)
    signal_during_step(t, 3, signal.SIGTERM)
    with pytest.raises(Interrupted):
        t.fit()
    return out / "checkpoints" / "step_0000002", out / "checkpoints" / "step_0000004"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_config(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["model"]["z_dim"] = 5
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage, reason, manifest_reason", [
    (lambda c: truncate(c / "model.safetensors"), "model.safetensors is truncated", "model.safetensors has"),
    (lambda c: truncate(c / "trainer_state.pt"), "trainer_state.pt cannot be loaded", "trainer_state.pt has"),
    (edit_config, "model.safetensors does not match the model in config.json", "config.json has"),
    (lambda c: (c / "config.json").write_text("{not json"), "config.json is not a valid kinema config",
     "config.json has"),
])
@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_bad_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, straight, damage, reason,
                                                              manifest_reason, manifest):
    """With its manifest the damage is caught by sha256 and size; without one (checkpoints written before
    manifests) by the checks of each file. Either way the skipped checkpoint is set aside, not deleted."""
    old, new = two_checkpoints(tmp_path)
    if not manifest:
        (new / "manifest.json").unlink()
    damage(new)
    t = Trainer(tiny_run_config(steps=6), tmp_path, device="cpu", resume=True, progress=False)
    assert t.step == 2
    err = capsys.readouterr().err
    why = manifest_reason if manifest else reason
    assert f"skipping checkpoint {new}: {why}" in err and "using step_0000002" in err
    assert f"set aside step_0000004 as {new.parent / 'set-aside-step_0000004'}" in err
    assert_same_weights(straight, t.fit())  # the fallback resume is exact too
    assert (new.parent / "set-aside-step_0000004" / "model.safetensors").is_file()  # kept, as damaged as it was
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]  # steps 3-4 of the first run were dropped
    # the CLI path (config taken from the checkpoint) takes the same fallback
    assert api.resolve_run_config(None, tmp_path, resume=True).train.steps == 6


def test_resume_is_resolved_once_under_the_lock_and_handed_down(tmp_path, capsys, monkeypatch, straight):
    """`kinema train --resume` without --config: the checkpoint to resume from (and its config) is found
    once, by the run folder, and the trainer continues from it -- the api does not look for it again."""
    import kinema.runs as runs

    old, new = two_checkpoints(tmp_path)
    truncate(new / "model.safetensors")
    examined = []
    problem = runs.checkpoint_problem
    monkeypatch.setattr(runs, "checkpoint_problem", lambda ckpt, *a: examined.append(ckpt.name) or problem(ckpt, *a))
    end = api.train(None, tmp_path, resume=True, device="cpu", progress=False)
    assert examined == ["step_0000004", "step_0000002"]  # one search: the bad newest, then the one used
    assert capsys.readouterr().err.count(f"skipping checkpoint {new}") == 1
    assert_same_weights(straight, end)


def test_no_valid_checkpoint_is_a_clear_error(tmp_path, capsys):
    old, new = two_checkpoints(tmp_path)
    truncate(old / "model.safetensors")
    truncate(new / "trainer_state.pt")
    with pytest.raises(CheckpointError, match=r"none of the 2 checkpoints .* is usable: step_0000004: trainer_state.pt"):
        trainer(tmp_path, resume=True)
    assert main(["--threads", "1", "train", "--out", str(tmp_path), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kinema train: error: ") and "none of the 2 checkpoints" in err[0]


def test_folders_that_are_not_checkpoints_are_ignored(tmp_path):
    old, new = two_checkpoints(tmp_path)
    shutil.copytree(new, new.with_name("step_0000020.bak"))
    (new.parent / "step_0000004.swp").write_text("editor")
    (new.parent / "step_").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002", "step_0000004"]
    assert "step:       4 of 6" in api.info(tmp_path)
    assert trainer(tmp_path, steps=5, resume=True).step == 4


# --------------------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("text", ["train.lr=inf", "train.lr=nan", "train.betas=[0.0, nan]", "train.grad_clip=-inf"])
def test_non_finite_config_values_are_refused(text, tmp_path, capsys):
    key = text.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}(\[1\])?: must be a finite number"):
        load_config("tganv2_tiny", [text])
    assert main(["train", "--config", "tganv2_tiny", "--out", str(tmp_path), "--set", text]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be a finite number" in err[0]


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    t = trainer(tmp_path, steps=4, checkpoint_every=1)
    original = t.objective.train_step

    def diverging(micro_batches, ctx):
        metrics = original(micro_batches, ctx)
        if t.step == 1:  # the update of step 2 leaves the weights non-finite, with a finite loss
            with torch.no_grad():
                next(t.model.parameters()).fill_(float("inf"))
        return metrics

    t.objective.train_step = diverging
    with pytest.raises(TrainingError, match=r"step 2: 1 of \d+ weight tensors are not finite.*no checkpoint was "
                                            r"written \(the last good checkpoint is .*step_0000001\)"):
        t.fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000001"]


# --------------------------------------------------------------------------- full disk


def enospc_safetensors(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def enospc_torch_save(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("target, fake", [("save_file", enospc_safetensors), ("torch_save", enospc_torch_save)])
def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, capsys,
                                                                                   target, fake):
    old, _ = two_checkpoints(tmp_path)
    shutil.rmtree(_)
    if target == "save_file":
        monkeypatch.setattr(checkpoint_module, "save_file", fake)
    else:
        monkeypatch.setattr(checkpoint_module.torch, "save", fake)
    code = main(["--threads", "1", "train", "--out", str(tmp_path), "--resume", "--no-progress",
                 "--set", "train.steps=3", "--set", "train.checkpoint_every=1"])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("kinema: resuming")]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    message = lines[0]
    assert message.startswith("kinema train: error: disk full: writing checkpoint step 3 to ")
    assert "needs about" in message and "bytes)" in message and "is free" in message
    assert "the earlier checkpoints are intact (latest step_0000002)" in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002"]
    assert trainer(tmp_path, steps=3, resume=True).step == 2  # still resumable


def test_a_run_that_cannot_fit_one_checkpoint_is_refused_before_starting(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(TrainingError, match=r"not enough disk space for a checkpoint: .* with 1000 bytes free, one "
                                            r"checkpoint needs about .*nothing was written"):
        trainer(tmp_path)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / LOCK_NAME).exists()


def test_disk_full_on_a_real_tiny_filesystem(tmp_path, capsys):
    """A 1200 KiB tmpfs: the first checkpoint (~720 KB) fits, the second does not (needs root to mount)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        out = mount / "run"
        cfg = tiny_run_config(steps=6, checkpoint_every=1, sample_every=1000)
        t = Trainer(cfg, out, device="cpu", progress=False)
        with pytest.raises(TrainingError, match=rf"disk full: writing checkpoint step \d to {out}/checkpoints on "
                                                rf"{mount} needs about .* the earlier checkpoints are intact"):
            t.fit()
        kept = list_checkpoints(out)
        assert kept and all(not p.name.startswith(".") for p in (out / "checkpoints").iterdir())
        assert load_file(kept[-1] / "model.safetensors")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# --------------------------------------------------------------------------- kinema prepare, full disk


def test_prepare_short_write_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """numpy reports a full disk as a short write without an errno; it used to read 'check that --out
    is a writable folder'."""
    import kinema.data.prepare as prep
    from videodata import numbered_frames, write_avi

    write_avi(tmp_path / "src" / "a.avi", numbered_frames(10))

    def short_write(*args, **kwargs):
        raise OSError("245760 requested and 61312 written")

    monkeypatch.setattr(prep.np, "save", short_write)
    with pytest.raises(prep.PrepareError) as info:
        prep.prepare(tmp_path / "src", tmp_path / "cache", resolution=(24, 32), workers=1, min_frames=8, progress=False)
    message = str(info.value)
    assert "No space left on device (ENOSPC)" in message and "writable" not in message
    assert "bytes free (this video needs 23,040)" in message and "Rerun the same command" in message


def test_prepare_refuses_early_when_the_cache_clearly_cannot_fit(tmp_path, monkeypatch):
    import kinema.data.prepare as prep
    from videodata import numbered_frames, write_avi

    for i in range(8):
        write_avi(tmp_path / "src" / f"v{i}.avi", numbered_frames(10))
    monkeypatch.setattr(prep, "_disk_space", lambda path: ("/data", 1000))
    with pytest.raises(prep.PrepareError, match=r"the cache will not fit on /data: the 4 videos left need about "
                                                r"92,160 bytes .* 1,000 bytes are free.*rerun the same command"):
        prep.prepare(tmp_path / "src", tmp_path / "cache", resolution=(24, 32), workers=1, min_frames=8, progress=False)
    assert len(list((tmp_path / "cache" / "videos").iterdir())) == prep.PROJECT_AFTER  # kept for the resume
