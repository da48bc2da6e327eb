"""train.init_from: fine-tune from another checkpoint (a kinema run or a `kinema convert` output)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kinema.api import train
from kinema.errors import TrainingError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "dvg"
TINY = ["train.batch_size=2", "train.num_samples=2", "train.log_every=1", "data.num_clips=8",
        "train.sample_every=1000", "train.checkpoint_every=1000", "train.threads=1"]


@pytest.fixture
def config(tmp_path):
    from tiny import TINY_MODEL

    path = tmp_path / "tiny.toml"
    path.write_text("[model]\n" + "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in TINY_MODEL.items()) + "\n")
    return path


def test_fine_tune_starts_from_the_source_weights(tmp_path, config):
    source = train(config, tmp_path / "src", TINY + ["train.steps=2", "train.ema_decay=0.9"], progress=False)
    run = tmp_path / "ft"
    ckpt = train(config, run, TINY + ["train.steps=1", "train.ema_decay=0.9", f"train.init_from={source}",
                                              "train.lr=1e-12"], progress=False)
    # lr 1e-12: one Adam step moves a weight by about 1e-12, so the fine-tuned weights are the source's
    before, after = load_file(source / "model.safetensors"), load_file(ckpt / "model.safetensors")
    learnt = [k for k in before if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(before[k], after[k], atol=1e-8) for k in learnt)
    fresh = load_file(train(config, tmp_path / "fresh", TINY + ["train.steps=1", "train.lr=1e-12"], progress=False)
                      / "model.safetensors")
    assert not all(torch.allclose(before[k], fresh[k], atol=1e-8) for k in learnt)  # the test can fail
    ema_before, ema_after = load_file(source / "ema.safetensors"), load_file(ckpt / "ema.safetensors")
    # the average continues from the source's EMA: one update with decay 0.9 towards the (unchanged) weights
    prefix = "generator."
    assert all(torch.allclose(ema_after[k], 0.9 * ema_before[k] + 0.1 * before[k], atol=1e-6) for k in ema_before
               if k.startswith(prefix) and "running" not in k and "num_batches" not in k)


def test_fine_tune_refuses_another_network(tmp_path, config):
    source = train(config, tmp_path / "src", TINY + ["train.steps=1"], progress=False)
    with pytest.raises(TrainingError, match=r"differs from this run's(.|\n)*model.z_dim: 8 -> 16"):
        train(config, tmp_path / "ft", [*TINY, "model.z_dim=16", "train.steps=1",
                                                f"train.init_from={source}"], progress=False)


def test_fine_tune_a_converted_checkpoint_without_a_config(tmp_path):
    pytest.importorskip("gpytorch")
    from kinema.api import convert

    converted = convert("dvg", FIXTURE / "model.pth", tmp_path / "dvg")
    ckpt = train(None, tmp_path / "ft", ["train.steps=1", "train.batch_size=2", "train.num_samples=2",
                                         "train.threads=1", "data.num_clips=8", f"train.init_from={converted}"],
                 progress=False)
    assert (ckpt / "model.safetensors").is_file()
