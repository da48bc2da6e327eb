"""NÜWA prediction models through the evaluation protocols (issue 27 item 2): a prediction checkpoint is
scored by the frame-conditional protocols (best-of-N SSIM/PSNR, FVD of its continuations of the real clips)
through ``kinema evaluate``, and the capability check refuses, before any work, exactly what a NÜWA cannot
be scored with. Tiny sizes (16 px, 16 frames of 4x4 tokens), a random-weight I3D of the real shape, CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kinema.cli import main
from kinema.metrics import evaluate as ev
from kinema.metrics.prediction import context_frames
from kinema.models.base import Capabilities

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: shared cores, one thread

SMALL = ["model.resolution=16", "model.downsample=4", "model.frames=16", "train.batch_size=2", "train.num_samples=1",
         "data.num_clips=8", "train.steps=1", "train.log_every=1", "train.sample_every=1", "train.checkpoint_every=1"]
TRANSFORMER = ["model.codebook_size=16", "model.hidden=32", "model.heads=2", "model.encoder_layers=1",
               "model.decoder_layers=1", "model.block_frames=4"]


def sets(values):
    return [a for v in values for a in ("--set", v)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("nuwa_vq") / "vq"
    vq = SMALL + ["model.hidden=16", "model.codebook_size=16", "model.embedding_dim=8", "model.disc_hidden=8",
                  "objective.disc_start=1"]
    assert main(["--threads", "1", "train", "--config", "nuwa_vqgan_tiny", *sets(vq), "--out", str(out)]) == 0
    return out


def test_a_nuwa_prediction_checkpoint_is_scored_by_bestof100_and_fvd_through_kinema_evaluate(tokenizer, tmp_path,
                                                                                            capsys, unverified_metric_weights):
    from kinema.metrics.networks.i3d import InceptionI3d
    from kinema.metrics.networks.weights import save_weights

    run = tmp_path / "nuwa"
    assert main(["--threads", "1", "train", "--config", "nuwa_tiny", *sets(SMALL + TRANSFORMER +
                 [f"model.vqgan={tokenizer}"]), "--out", str(run)]) == 0
    torch.manual_seed(0)
    weights = save_weights(InceptionI3d().state_dict(), tmp_path / "i3d_random.safetensors", "i3d")
    argv = ["--threads", "1", "evaluate", "--checkpoint", str(run), "--metrics", "bestof100_ssim_psnr,fvd2048_16f",
            "--num", "3", "--i3d", str(weights), "--cache", "none", "--out", str(tmp_path / "r.jsonl"),
            "--device", "cpu", "--batch-size", "50", "--workers", "0"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "bestof100_ssim_psnr:" in out and "fvd2048_16f:" in out
    record = json.loads((tmp_path / "r.jsonl").read_text())["eval"]
    best = record["bestof100_ssim_psnr"]
    # frame 1 is the context (model.cond_frames = 1), frames 2..16 are predicted, 100 futures per clip
    assert best["context_frames"] == 1 and best["predicted_frames"] == 15 and best["futures"] == 100
    assert best["num"] == 3 and len(best["ssim"]) == len(best["psnr"]) == 15
    assert all(math.isfinite(v) for v in best["psnr"]) and -1 <= best["value"] <= 1
    fvd = record["fvd2048_16f"]
    assert math.isfinite(fvd["value"]) and fvd["value"] > 0 and fvd["protocol_num"] == 2048


def test_the_capability_check_and_the_protocols_agree_for_every_kind_of_nuwa():
    """What the check lets through, the protocol can score (context_frames is declared, not probed); what it
    cannot score is refused before any work, by name."""
    from tiny import tiny_nuwa as nuwa

    prediction = nuwa()  # cond_frames = 1, tasks = ["prediction"]
    caps = prediction.capabilities
    assert caps.context_frames == 1 and not caps.unconditional and "frames" in caps.conditions
    assert context_frames(prediction) == 1 and ev.continues_frames(prediction)
    ev.check_model_suits(prediction, ["bestof100_ssim_psnr", "fvd2048_16f", "modes_diversity10"])
    with pytest.raises(ValueError, match="motion256 samples the model from noise alone"):
        ev.check_model_suits(prediction, ["motion256"])

    both = nuwa(tasks=["unconditional", "prediction"])  # samples from noise and from frames
    assert both.capabilities.context_frames == 1 and not ev.continues_frames(both)  # FVD samples from noise
    ev.check_model_suits(both, ["bestof100_ssim_psnr", "fvd2048_16f", "motion256"])

    unconditional = nuwa(cond_frames=0)  # takes given frames only as a token prefix: not a prediction model
    assert unconditional.capabilities.context_frames == 0 and "frames" in unconditional.capabilities.conditions
    ev.check_model_suits(unconditional, ["fvd2048_16f"])
    for metric in ("bestof100_ssim_psnr", "modes_diversity10"):
        with pytest.raises(ValueError, match=rf"{metric} continue real clips' frames.*not a prediction model"):
            ev.check_model_suits(unconditional, [metric])
    with pytest.raises(ValueError, match="not a prediction model"):
        context_frames(unconditional)
    with pytest.raises(ValueError, match="needs 'frames' among the conditions"):
        Capabilities(context_frames=1)  # a declared context is a frames condition


def test_a_nuwa_prediction_continues_the_given_frames_for_the_protocols():
    """continued_batches (FVD & co. of a model that only continues frames) hands NÜWA the first
    cond_frames frames of real clips; its videos start with their tokens, and other clips give other videos."""
    from kinema.data import BouncingShapes, RotatingBars

    from tiny import tiny_nuwa as nuwa

    model = nuwa()
    t, r = model.config.frames, model.config.resolution
    shapes, bars = BouncingShapes(4, t, r, r, seed=0), RotatingBars(4, t, r, r, seed=0)
    a = torch.cat(list(ev.continued_batches(model, shapes, 4, t, seed=3, batch_size=2)))
    b = torch.cat(list(ev.continued_batches(model, shapes, 4, t, seed=3, batch_size=4)))
    assert a.shape == (4, 3, t, r, r) and torch.equal(a, b)  # not the batch size
    order = torch.randperm(4, generator=torch.Generator().manual_seed(3)).tolist()  # real_batches' draw
    given = model.encode(torch.stack([shapes[i] for i in order])[:, :, :1])
    with torch.no_grad():  # the context frame's tokens are kept: frame 1 is their (per-frame) decoding
        assert torch.allclose(a[:, :, :1], model.vqgan.decode(given).clamp(-1, 1), atol=1e-5)
    assert not torch.allclose(a, torch.cat(list(ev.continued_batches(model, bars, 4, t, seed=3, batch_size=4))))
