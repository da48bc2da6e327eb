"""Trainer: outputs, checkpoints, bit-exact resume, same seed same sample, failures lose nothing."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_run_config

from kinema import api
from kinema.registry import load_config
from kinema.registry import load_model
from kinema.training import CheckpointError, Trainer, TrainingError
from kinema.runs import list_checkpoints
from kinema.training.checkpoint import save_checkpoint


def weights(ckpt):
    return load_file(ckpt / "model.safetensors")


def test_run_writes_checkpoint_samples_and_logs(tmp_path):
    ckpt = Trainer(tiny_run_config(steps=2), tmp_path, device="cpu", progress=False).fit()
    assert ckpt == tmp_path / "checkpoints" / "step_0000002"
    assert {p.name for p in ckpt.iterdir()} == {"config.json", "model.safetensors", "trainer_state.pt", "manifest.json"}
    assert (tmp_path / "samples" / "step_0000002.gif").stat().st_size > 0
    assert (tmp_path / "samples" / "step_0000002.mp4").stat().st_size > 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and "loss_g" in records[0]
    assert 0 <= records[1]["data_wait_fraction"] <= 1 and records[1]["videos_per_second"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert "train/loss_g" in events.Tags()["scalars"] and "samples" in events.Tags()["images"]
    gif = events.Images("samples")[-1]
    assert gif.step == 2 and gif.encoded_image_string[:6] == b"GIF89a"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")], "no temp dirs left"


def interrupt_at_step(trainer, step):
    """Ctrl-C (SIGINT) during step ``step + 1``: the trainer finishes that step, saves it and raises
    KeyboardInterrupt (kinema.errors.Interrupted)."""
    original = trainer.objective.train_step

    def step_or_interrupt(*args):
        if trainer.step == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    trainer.objective.train_step = step_or_interrupt


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    straight = Trainer(tiny_run_config(steps=6), tmp_path / "a", device="cpu", progress=False).fit()
    first = Trainer(tiny_run_config(steps=6), tmp_path / "b", device="cpu", progress=False)
    interrupt_at_step(first, 3)  # Ctrl-C during step 4: the trainer finishes and saves step 4, re-raises
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_0000004"]
    resumed = Trainer(tiny_run_config(steps=6), tmp_path / "b", device="cpu", resume=True, progress=False)
    assert resumed.step == 4
    end = resumed.fit()
    a, b = weights(straight), weights(end)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_seed_same_sample_before_and_after_checkpoint_round_trip(tmp_path):
    trainer = Trainer(tiny_run_config(steps=2, ema_decay=0.9), tmp_path, device="cpu", progress=False)
    ckpt = trainer.fit()
    assert (ckpt / "ema.safetensors").is_file()
    before = trainer.sample(trainer.model.sample_noise(3, generator=torch.Generator().manual_seed(7)))
    model, _, _ = load_model(tmp_path)
    a = api.generate(model, 3, seed=7)
    b = api.generate(model, 3, seed=7)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(before, a, rtol=1e-5, atol=1e-6)
    assert not torch.equal(a, api.generate(model, 3, seed=8))


def test_ema_differs_from_raw_weights(tmp_path):
    Trainer(tiny_run_config(steps=3, ema_decay=0.9), tmp_path, device="cpu", progress=False).fit()
    ema, _, _ = load_model(tmp_path, ema=True)
    raw, _, _ = load_model(tmp_path, ema=False)
    assert not torch.equal(api.generate(ema, 2, 0), api.generate(raw, 2, 0))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_run_config(steps=6)
    cfg.train.checkpoint_every = 2
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    original = trainer.objective.train_step

    def poisoned(micro_batches, ctx):
        if trainer.step == 3:
            micro_batches = [b.with_clips(b.clips * float("nan")) for b in micro_batches]
        return original(micro_batches, ctx)

    trainer.objective.train_step = poisoned
    with pytest.raises(TrainingError, match=r"step 4: loss '.*' is nan.*last good checkpoint is .*step_0000002"):
        trainer.fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002"]


def test_resume_without_checkpoint_and_existing_run_without_resume(tmp_path):
    with pytest.raises(TrainingError, match="holds no complete checkpoint to resume from"):
        Trainer(tiny_run_config(), tmp_path, device="cpu", resume=True, progress=False)
    Trainer(tiny_run_config(steps=1), tmp_path, device="cpu", progress=False).fit()
    with pytest.raises(TrainingError, match="already holds checkpoints.*pass --resume"):
        Trainer(tiny_run_config(), tmp_path, device="cpu", progress=False)


def test_resume_with_a_different_config_names_the_keys(tmp_path):
    Trainer(tiny_run_config(steps=1), tmp_path, device="cpu", progress=False).fit()
    changed = tiny_run_config(steps=4, lr=3e-4)
    changed.model.z_dim = 4
    with pytest.raises(TrainingError, match=r"(?s)model.z_dim: 8 -> 4.*train.lr: 0.0001 -> 0.0003"):
        Trainer(changed, tmp_path, device="cpu", resume=True, progress=False)


def test_interrupted_checkpoint_write_leaves_previous_checkpoints_intact(tmp_path, monkeypatch):
    trainer = Trainer(tiny_run_config(steps=1), tmp_path, device="cpu", progress=False)
    trainer.fit()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    trainer.step = 2
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, trainer.config, trainer.model, {})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000001"]
    _, _, ckpt = load_model(tmp_path)
    assert ckpt.name == "step_0000001"


def test_unwritable_out_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="cannot write to --out"):
        Trainer(tiny_run_config(), blocker / "run", device="cpu", progress=False)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        load_model(tmp_path)
    ckpt = Trainer(tiny_run_config(steps=1), tmp_path / "run", device="cpu", progress=False).fit()
    os.remove(ckpt / "trainer_state.pt")
    with pytest.raises(CheckpointError, match="incomplete.*trainer_state.pt"):
        load_model(ckpt)
    ckpt2 = Trainer(tiny_run_config(steps=1), tmp_path / "run2", device="cpu", progress=False).fit()
    config = json.loads((ckpt2 / "config.json").read_text())
    config["model"]["name"] = "videogpt"
    (ckpt2 / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="is damaged: config.json has .* bytes, manifest.json says"):
        load_model(ckpt2)
    (ckpt2 / "manifest.json").unlink()  # as written before manifests: the config itself is checked
    with pytest.raises(CheckpointError, match="unknown model.name 'videogpt'"):
        load_model(ckpt2)
    config["model"]["name"] = "tganv2"
    config["model"]["z_dim"] = 5
    (ckpt2 / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cannot load weights"):
        load_model(ckpt2)


def test_linear_lr_decay_reaches_zero(tmp_path):
    trainer = Trainer(tiny_run_config(steps=4), tmp_path, device="cpu", progress=False)
    trainer.fit()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([7.5e-5, 5e-5, 2.5e-5, 0.0])


def test_deterministic_flag_and_config_roundtrip(tmp_path):
    cfg = tiny_run_config(steps=1)
    again = load_config(None, **cfg.to_dict())
    assert again == cfg


def bf16_run_config(sparse: bool):
    cfg = tiny_run_config(steps=2, precision="bf16")
    cfg.model.sparse = sparse
    return cfg


def test_bf16_precision_trains_with_fp32_weights(tmp_path):
    # Dense mode: its 3-D convs never see a time axis of length 2 (see the next test).
    ckpt = Trainer(bf16_run_config(sparse=False), tmp_path / "bf16", device="cpu", progress=False).fit()
    full_cfg = bf16_run_config(sparse=False)
    full_cfg.train.precision = "fp32"
    full = Trainer(full_cfg, tmp_path / "fp32", device="cpu", progress=False).fit()
    bf16, fp32 = weights(ckpt), weights(full)
    assert all(v.dtype != torch.bfloat16 for v in bf16.values())
    assert all(torch.isfinite(v.float()).all() for v in bf16.values())
    assert any(not torch.equal(bf16[k], fp32[k]) for k in bf16), "autocast changed the arithmetic"


def test_bf16_on_cpu_non_finite_gradients_stop_with_a_hint(tmp_path):
    """PyTorch's CPU bf16 conv3d weight gradient is sometimes non-finite for T = 2 (torch 2.13); the
    gradient check stops such a run before the step and says what to do. Simulated with a hook."""
    trainer = Trainer(bf16_run_config(sparse=False), tmp_path, device="cpu", progress=False)
    trainer.model.discriminator.levels[0].linear.weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(TrainingError, match=r"gradient norm.*use train.precision = \"fp32\" on CPU"):
        trainer.fit()


def test_fp16_trains_with_loss_scaling_and_resumes_the_scale(tmp_path):
    cfg = bf16_run_config(sparse=False)
    cfg.train.precision = "fp16"
    cfg.train.steps = 3
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    interrupt_at_step(trainer, 1)  # during step 2: step 2 is saved
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    state = torch.load(tmp_path / "checkpoints" / "step_0000002" / "trainer_state.pt", weights_only=True)
    assert state["grad_scaler"]["scale"] == trainer.scaler.get_scale()
    resumed = Trainer(cfg, tmp_path, device="cpu", resume=True, progress=False)
    assert resumed.scaler.get_scale() == trainer.scaler.get_scale()
    final = weights(resumed.fit())
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in final.values() if v.is_floating_point())


@pytest.mark.skipif(not os.environ.get("KINEMA_SLOW_TESTS"), reason="compiling takes ~1 min on CPU; "
                    "set KINEMA_SLOW_TESTS=1 to run")
def test_compiled_generator_trains_and_checkpoints_plain_names(tmp_path):
    ckpt = Trainer(tiny_run_config(steps=2, compile=True), tmp_path, device="cpu", progress=False).fit()
    names = weights(ckpt).keys()
    assert "generator.fc.weight" in names and not any("_orig_mod" in n for n in names)
    model, _, _ = load_model(tmp_path)
    assert torch.isfinite(api.generate(model, 2, 0)).all()


def test_reading_data_leaves_the_global_rng_alone(tmp_path):
    """Dropout draws from the global RNG; a resumed run restores it, then builds a new data iterator,
    which must not draw from it (the DataLoader has its own generator)."""
    trainer = Trainer(tiny_run_config(steps=1), tmp_path, device="cpu", progress=False)
    torch.manual_seed(5)
    next(trainer._batches())
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_fused_optimizer_is_the_same_update(optimizer):
    """train.fused_optimizer (default on) is torch's fused Adam/AdamW: the update of the loop version up to
    float rounding, including weight decay and a zero beta1; off gives the loop version."""
    from kinema.training.trainer import build_optimizer

    torch.manual_seed(0)
    start = [torch.randn(50, 3), torch.randn(7)]
    grads = [torch.randn_like(w) for w in start]
    finals = {}
    for fused in (False, True):
        train = load_config("tganv2_tiny", [f"train.optimizer={optimizer}", "train.weight_decay=0.01",
                                            f"train.fused_optimizer={str(fused).lower()}"]).train
        params = [w.clone().requires_grad_() for w in start]
        opt = build_optimizer(train, params)
        assert opt.defaults.get("fused") is (True if fused else None)
        for step in range(5):
            for p, g in zip(params, grads):
                p.grad = g * (step + 1)
            opt.step()
        finals[fused] = torch.cat([p.detach().flatten() for p in params])
    assert not torch.equal(finals[True], torch.cat([w.flatten() for w in start]))  # it moved
    torch.testing.assert_close(finals[True], finals[False], rtol=1e-6, atol=1e-7)
