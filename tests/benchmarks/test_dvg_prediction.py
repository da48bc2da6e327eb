"""benchmarks/dvg_prediction.py: the strip figure, also when the GP trigger fires on no clip."""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from kinema.data import build_dataset  # noqa: E402
from kinema.registry import build_model, load_config  # noqa: E402


def tiny_dvg():
    config = load_config("dvg_cpu16", ["model.g_dim=8", "model.nf=8", "model.rnn_size=16", "model.n_future=4"])
    torch.manual_seed(0)
    model = build_model(config.model).eval()
    data = build_dataset(config.data, frames=config.model.n_past + 4, height=32, width=32, seed=5, train=False)
    return model, data


def fire_on(model, monkeypatch, fires):
    """Make ``model.sample`` report the GP trigger as fired where ``fires(call, triggered)`` sets it (the call
    counts the ``return_info`` samplings, one per clip tried); the LSTM rollout row passes through."""
    sample, calls = model.sample, []

    def spy(*args, **kwargs):
        if not kwargs.get("return_info"):  # the LSTM rollout row
            return sample(*args, **kwargs)
        video, info = sample(*args, **kwargs)
        fired = torch.zeros_like(info["triggered"])
        fires(len(calls), fired)
        calls.append(1)
        return video, {**info, "triggered": fired}

    monkeypatch.setattr(model, "sample", spy)


def test_figure_draws_clip_zero_when_the_trigger_never_fires(tmp_path, monkeypatch):
    import dvg_prediction

    model, data = tiny_dvg()
    fire_on(model, monkeypatch, lambda call, fired: None)
    out = dvg_prediction.figure(model, data, str(tmp_path / "strip.png"), future=4, rows=2)
    assert out["clip"] == 0 and out["first_trigger_frame"] == [None, None]
    image = np.asarray(Image.open(tmp_path / "strip.png"))
    # rows: the clip, the rollout, 2 futures; columns: the 3 + 4 frames; 34-pixel cells, scaled 2x
    assert image.shape == (4 * 34 * 2, 7 * 34 * 2, 3)


def test_figure_picks_the_first_clip_where_the_trigger_fires(tmp_path, monkeypatch):
    import dvg_prediction

    model, data = tiny_dvg()

    def on_the_third_clip(call, fired):
        if call == 2:
            fired[0, 1] = True  # future 0, predicted frame 2

    fire_on(model, monkeypatch, on_the_third_clip)
    out = dvg_prediction.figure(model, data, str(tmp_path / "strip.png"), future=4, rows=2)
    assert out == {"clip": 2, "first_trigger_frame": [2, None]}
