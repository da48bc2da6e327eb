"""benchmarks/vdm_levels.py: the per-level denoising measurement, checked on a model whose output is known."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from kinema.registry import build_model, load_config  # noqa: E402
from kinema.training.checkpoint import save_checkpoint  # noqa: E402


def test_untrained_v_model_gives_alpha_z_at_every_level(tmp_path):
    import vdm_levels

    # an untrained VDM's output layer is zero: v-hat = 0, so x-hat = alpha z and eps-hat = sigma z, whose errors
    # the measurement must report exactly: x-hat nearly the clip at the least noisy level, nearly 0 at the noisiest
    config = load_config("vdm_tiny16", ['model.parameterization="v"', "model.frames=16", "model.resolution=16"])
    model = build_model(config.model)
    save_checkpoint(tmp_path / "run", 0, config, model, {})
    out = tmp_path / "levels.jsonl"
    assert vdm_levels.main(["--checkpoint", str(tmp_path / "run"), "--clips", "2", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["level"] for r in rows] == list(range(32, 0, -1))
    assert all(a["logsnr"] < b["logsnr"] for a, b in zip(rows, rows[1:]))  # noisiest first
    first, last = rows[0], rows[-1]
    assert last["x_hat_clipped_mse"] < 0.01 < first["x_hat_clipped_mse"]
    assert abs(first["x_hat_clipped_mean"]) < 0.01 and abs(last["x_hat_clipped_mean"] - last["clips_mean"]) < 0.01
    # eps-hat = sigma z = sigma (alpha x + sigma eps): error ~ 0 where sigma ~ 1 (noisiest), large where alpha ~ 1
    assert first["eps_mse"] < 1e-3 < last["eps_mse"]
    assert torch.isfinite(torch.tensor([r["eps_mse"] for r in rows])).all()
