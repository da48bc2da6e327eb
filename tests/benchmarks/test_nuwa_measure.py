"""benchmarks/nuwa_measure.py: the colour / direction reader behind the text-conditioning figures of
docs/models/nuwa.md reads real captioned_shapes clips as their captions say (its ceiling)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kinema.data.captioned import CaptionedShapes

pytestmark = pytest.mark.usefixtures("one_thread")


def _measure():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "nuwa_measure.py"
    spec = importlib.util.spec_from_file_location("nuwa_measure", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reader_agrees_with_real_captions():
    measure = _measure()
    data = CaptionedShapes(num_clips=24, frames=8, height=32, width=32, seed=5)
    for i in range(len(data)):
        truth = data.ground_truth(i)
        assert measure.read_colour(data[i]) == truth["colour"], data.caption(i)
        assert measure.read_direction(data[i]) == truth["direction"], data.caption(i)


def test_held_out_nll_is_the_training_loss_on_the_held_out_clips():
    """``nuwa_measure.py nll``: per task, the mean next-token cross-entropy the objective trains on, computed
    on the held-out clips (seed 999) -- over all tokens, and over those after the given frames."""
    import torch

    from tiny import tiny_nuwa as nuwa

    measure = _measure()
    model = nuwa(tasks=["unconditional", "prediction"])
    with torch.no_grad():
        out = measure.measure_nll(model, 5, "captioned_shapes", batch=2)
        clips = measure.clips_of(model, "captioned_shapes", 5, 999)
        for task in ("unconditional", "prediction"):
            assert out[f"nll_{task}"] == pytest.approx(float(model.loss(clips, task=task)), rel=1e-5)
            assert out[f"nll_{task}_after_frame_1"] > 0


def test_predict_scores_the_frames_after_the_given_ones_against_copying_the_last_given_frame():
    """``nuwa_measure.py predict --future N --futures K`` (issue 30's frame-conditional protocol): the given
    frames are kept, the baseline repeats the last given frame, only the next N frames are scored, and
    best-of-K is at least the first draw's PSNR."""
    import torch

    from tiny import tiny_nuwa as nuwa

    measure = _measure()
    model = nuwa(cond_frames=2)
    with torch.no_grad():
        out = measure.measure_predict(model, 3, 0, None, "bouncing_shapes", future=1, futures=2)
        clips = measure.clips_of(model, "bouncing_shapes", 3, 999)
    assert out["given_frames"] == 2 and out["scored_frames"] == [2, 2]
    assert out["psnr_copy_last_given_frame"] == pytest.approx(measure.psnr(clips[:, :, 1:2], clips[:, :, 2:3]))
    assert out["gain_over_copy_db"] == pytest.approx(out["psnr_predicted_frames"] - out["psnr_copy_last_given_frame"])
    assert out["psnr_best_of_futures"] >= out["psnr_predicted_frames"] - 1e-6
    assert out["futures_pairwise_rms"] > 0  # sampled at temperature 1: the two draws differ


def test_predict_takes_a_frame_conditional_videogpt_prior():
    """The same protocol for VideoGPT conditioned on frames (issue 30's third frame-conditional family): its
    prior's ``sample(seeds, frames=...)``, its VQ-VAE's reconstruction as the tokenizer ceiling."""
    import json

    import torch

    from kinema.config import build_dataclass
    from kinema.models.videogpt.prior import VideoGPTPrior, VideoGPTPriorConfig

    measure = _measure()
    torch.manual_seed(0)
    vq = {"name": "videogpt_vqvae", "frames": 8, "resolution": 16, "downsample": [2, 4, 4], "hidden": 16,
          "res_layers": 1, "codebook_size": 32, "embedding_dim": 8}
    cfg = {"frames": 8, "resolution": 16, "downsample": [2, 4, 4], "codebook_size": 32, "hidden": 24, "heads": 2,
           "layers": 2, "cond_frames": 2, "cond_hidden": 12, "vqvae_config": json.dumps(vq)}
    model = VideoGPTPrior(build_dataclass(VideoGPTPriorConfig, cfg, "model")).eval()
    torch.nn.init.normal_(model.transformer.fc_out.weight, std=0.5)
    model.vqvae_loaded = True
    with torch.no_grad():
        out = measure.measure_predict(model, 2, 0, None, "bouncing_shapes", future=3, futures=2)
        clips = measure.clips_of(model, "bouncing_shapes", 2, 999)
        recon = model.vqvae.decode(model.vqvae.encode(clips)).clamp(-1, 1)
    assert out["given_frames"] == 2 and out["scored_frames"] == [2, 4]
    assert out["psnr_tokenizer_reconstruction_same_frames"] == pytest.approx(
        measure.psnr(recon[:, :, 2:5], clips[:, :, 2:5]))
    assert out["futures_pairwise_rms"] > 0


def test_tokenizer_ceiling_reads_the_reconstructions_as_the_captions_say():
    """``nuwa_measure.py tokenizer`` on captioned_shapes: the caption reader on the tokenizer's reconstructions
    of held-out clips -- the most a text model on these codes can agree with its captions. A perfect tokenizer
    scores 1; one that swaps red and blue is read as the swap."""
    from collections import Counter
    from types import SimpleNamespace

    measure = _measure()

    class Tokenizer:
        config = SimpleNamespace(frames=8, resolution=32)

        def __init__(self, swap_red_blue: bool):
            self.swap = swap_red_blue

        def encode(self, clips):  # (B, 3, T, H, W): the "codes" are the clips themselves, rounded
            return clips.round()

        def decode(self, codes):
            return codes.flip(1) if self.swap else codes

    perfect = measure.measure_tokenizer(Tokenizer(False), 16, None, "captioned_shapes")
    assert perfect["reconstruction_colour_agreement"] == 1.0
    assert perfect["reconstruction_direction_agreement"] == 1.0
    assert perfect["reconstruction_colour_misses"] == {}
    swapped = measure.measure_tokenizer(Tokenizer(True), 16, None, "captioned_shapes")
    truth = [measure.held_out(Tokenizer(True), 16).ground_truth(i)["colour"] for i in range(16)]
    assert swapped["reconstruction_direction_agreement"] == 1.0
    assert swapped["reconstruction_colour_agreement"] == pytest.approx(
        sum(c in ("green",) for c in truth) / 16)  # (r, g, b) -> (b, g, r): only green stays green
    # cyan (the swapped yellow) is as far from green as from blue; the reader takes the first, green
    swap = {"red": "blue", "blue": "red", "yellow": "green"}
    expected = Counter(f"{c}->{swap[c]}" for c in truth if c != "green")
    assert swapped["reconstruction_colour_misses"] == dict(expected)
