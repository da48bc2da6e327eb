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


def test_held_out_seed_scores_another_seeds_clips():
    """--held-out-seed: a run trained with train.seed 1 is scored on the clips held out from a seed-0 run
    (the default, its own train.seed, gives other clips)."""
    import dvg_prediction

    seed0 = load_config("dvg_cpu16", ["train.seed=0"])
    seed1 = load_config("dvg_cpu16", ["train.seed=1"])
    reference = dvg_prediction.held_out_clips(seed0, 4, seed0.train.seed)[0]
    own = dvg_prediction.held_out_clips(seed1, 4, seed1.train.seed)[0]
    chosen = dvg_prediction.held_out_clips(seed1, 4, 0)[0]
    torch.testing.assert_close(chosen, reference, rtol=0, atol=0)
    assert not torch.equal(own, reference)
    assert chosen.shape[1] == seed1.model.n_past + 4
