"""train.eval_every: the quality curve during training, not only the losses."""

from __future__ import annotations

import json

import pytest
from tiny import tiny_run_config

from kinema.training import Trainer, TrainingError


def test_eval_every_logs_the_motion_protocol_on_held_out_clips(tmp_path):
    cfg = tiny_run_config(steps=2)
    cfg.train.eval_every, cfg.train.eval_num = 2, 4
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    assert trainer._eval["key"]["seed"] != cfg.train.seed  # synthetic: clips the training never sees
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in evals] == [2]
    result = evals[0]["eval"]["motion256"]
    assert result["num"] == 4 and 0 <= result["value"] <= 1 and "speed_distance" in result


def test_eval_every_refuses_fvd_without_weights_and_short_models(tmp_path, monkeypatch):
    monkeypatch.delenv("KINEMA_I3D_WEIGHTS", raising=False)
    cfg = tiny_run_config(steps=2)
    cfg.train.eval_every, cfg.train.eval_metrics = 1, ["fvd2048_16f"]
    with pytest.raises(TrainingError, match="need 16-frame clips but the model generates 8: set model.frames = 16"):
        Trainer(cfg, tmp_path / "a", device="cpu", progress=False)
    cfg.model.frames = 16
    with pytest.raises(TrainingError, match="need the I3D weights.*kinema convert i3d"):
        Trainer(cfg, tmp_path / "b", device="cpu", progress=False)


def test_resuming_with_more_steps_continues_the_lr_decay_without_a_jump(tmp_path):
    import shutil

    from kinema.runs import list_checkpoints

    cfg = tiny_run_config(steps=4, checkpoint_every=2, lr_schedule="linear")
    Trainer(cfg, tmp_path, device="cpu", progress=False).fit()
    shutil.rmtree(list_checkpoints(tmp_path)[-1])  # as if killed after step 2 (LR factor 0.5 there)
    cfg.train.steps = 6
    trainer = Trainer(cfg, tmp_path, device="cpu", resume=True, progress=False)
    assert trainer.lr_plan.anchor == (2, 0.5)
    trainer.fit()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if '"lr"' in line][-4:]  # steps 3..6 of the resumed run: 0.5 -> 0 over the remaining 4 steps
    assert lrs == pytest.approx([cfg.train.lr * f for f in (0.375, 0.25, 0.125, 0.0)], rel=0.05, abs=1e-9)  # logged to 6 places
    # a schedule that reached 0 cannot be stretched: the error says how to continue
    cfg.train.steps = 8
    with pytest.raises(TrainingError, match="reached 0 at step 6.*--set train.lr_schedule=constant"):
        Trainer(cfg, tmp_path, device="cpu", resume=True, progress=False)
