"""Evaluation plumbing: protocols, generated/real batching, the real-feature cache, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kinema.cli import main
from kinema.data import BouncingShapes, RotatingBars
from kinema.metrics import evaluate as ev
from kinema.metrics.protocols import PROTOCOLS, get_protocol
from kinema.training import Trainer
from tiny import tiny_run_config


def colour_features(videos: torch.Tensor) -> torch.Tensor:
    """A cheap stand-in network: per-channel mean and std of each clip, (N, 6)."""
    return torch.cat([videos.mean((2, 3, 4)), videos.std((2, 3, 4))], 1)


@pytest.fixture()
def cheap_network(monkeypatch):
    calls = []

    def fake_feature_function(protocol, weights, device):
        calls.append(protocol.name)
        return colour_features

    monkeypatch.setattr(ev, "feature_function", fake_feature_function)
    return calls


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(tiny_run_config(steps=1), out, device="cpu", progress=False)
    trainer.fit()
    return trainer.model.eval(), out


def test_protocol_registry():
    assert {"fvd2048_16f", "fvd2048_128f", "kvd2048_16f", "is2048_c3d_tganv2"} <= set(PROTOCOLS)
    p = get_protocol("fvd2048_16f")
    assert (p.network, p.statistic, p.num_samples, p.frames) == ("i3d", "fvd", 2048, 16)
    assert get_protocol("is2048_c3d_tganv2").repeats == 10
    with pytest.raises(ValueError, match="unknown metric 'fid'; available: fvd2048_16f"):
        get_protocol("fid")


def test_fvd_with_a_stand_in_network_separates_distributions_and_caches_reals(tiny_model, tmp_path, cheap_network):
    model, _ = tiny_model
    same = BouncingShapes(32, 8, 16, 16, seed=0)
    other = RotatingBars(32, 8, 16, 16, seed=0)
    kw = dict(weights={}, num=16, seed=0, batch_size=8, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="needs 16 frames per video but the model generates 8"):
        ev.evaluate_model(model, ["fvd2048_16f"], dataset=same, dataset_key={"d": "same"}, **kw)
    proto = ev.Protocol("fvd_test", "i3d", "fvd", 16, 8)
    PROTOCOLS["fvd_test"] = proto
    try:
        a = ev.evaluate_model(model, ["fvd_test"], dataset=same, dataset_key={"d": "same"}, **kw)["fvd_test"]
        cached = list(tmp_path.glob("i3d-8f-*.npy"))
        assert len(cached) == 1 and (cached[0].with_suffix(".json")).is_file()
        again = ev.evaluate_model(model, ["fvd_test"], dataset=same, dataset_key={"d": "same"}, **kw)["fvd_test"]
        assert again["value"] == a["value"] and len(list(tmp_path.glob("i3d-8f-*.npy"))) == 1
        b = ev.evaluate_model(model, ["fvd_test"], dataset=other, dataset_key={"d": "other"}, **kw)["fvd_test"]
        assert a["value"] != b["value"] and a["num"] == 16 and a["protocol_num"] == 16
        with pytest.raises(ValueError, match="too few real clips: the protocol needs 64, the dataset has 32"):
            ev.evaluate_model(model, ["fvd_test"], dataset=same, dataset_key={"d": "x"},
                              **{**kw, "num": 64})
    finally:
        del PROTOCOLS["fvd_test"]


def test_real_features_of_a_dataset_against_itself_give_zero_fvd(cheap_network):
    data = BouncingShapes(8, 8, 16, 16, seed=1)
    feats = ev.extract(ev.real_batches(data, 8, 0, 4, 8), colour_features, 8, "real")
    result = ev.score(ev.Protocol("t", "i3d", "fvd", 8, 8), feats, feats)
    assert abs(result["value"]) < 1e-9


def test_quantise_matches_written_videos():
    videos = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    q = ev.quantise(videos)
    assert q.dtype == np.uint8 and q.shape == (2, 4, 8, 8, 3)


def test_evaluate_cli_errors(tiny_model, tmp_path, capsys):
    _, run = tiny_model
    assert main(["evaluate", "--checkpoint", str(run), "--metrics", "fid"]) == 2
    assert "unknown metric 'fid'" in capsys.readouterr().err
    code = main(["evaluate", "--checkpoint", str(run), "--metrics", "fvd2048_16f", "--num", "4",
                 "--i3d", str(tmp_path / "missing.safetensors"), "--cache", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "i3d weights file" in err and "kinema convert i3d" in err
    assert main(["convert", "c3d", str(tmp_path / "nope.npz"), str(tmp_path / "o.safetensors")]) == 2


def test_weights_errors_name_the_problem(tmp_path):
    from safetensors.torch import save_file
    from torch import nn

    from kinema.metrics.networks.weights import WeightsError, load_weights, save_weights

    net = nn.Sequential(nn.Linear(2, 3))
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(net, tmp_path / "x.safetensors", "i3d")
    save_weights(net.state_dict(), tmp_path / "c3d.safetensors", "c3d")
    with pytest.raises(WeightsError, match="holds c3d weights, but i3d weights are needed"):
        load_weights(net, tmp_path / "c3d.safetensors", "i3d")
    save_file({"0.weight": torch.zeros(3, 2)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsError, match=r"1 missing keys \(e.g. 0.bias\)"):
        load_weights(net, tmp_path / "partial.safetensors", "i3d")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="not a safetensors weights file"):
        load_weights(net, tmp_path / "junk.safetensors", "i3d")


def test_restricted_unpickler_refuses_code(tmp_path):
    import pickle

    from kinema.metrics.networks.weights import restricted_unpickle

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(json.loads))  # a function reference: never to be resolved
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle json.loads"):
        restricted_unpickle(path)
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"params": {"w": np.ones((2, 2), np.float32)}}))
    assert restricted_unpickle(ok)["params"]["w"].shape == (2, 2)


def test_kinema_evaluate_end_to_end_with_random_weight_i3d(tmp_path, capsys, unverified_metric_weights):
    """A tiny 16-frame checkpoint scored by FVD and KVD with a random-weight I3D (real I3D shape)."""
    from kinema.metrics.networks.i3d import InceptionI3d
    from kinema.metrics.networks.weights import save_weights

    torch.manual_seed(0)
    weights = save_weights(InceptionI3d().state_dict(), tmp_path / "i3d_random.safetensors", "i3d")
    cfg = tiny_run_config(steps=1)
    cfg.model.frames = 16
    run = tmp_path / "run"
    Trainer(cfg, run, device="cpu", progress=False).fit()
    argv = ["evaluate", "--checkpoint", str(run), "--metrics", "fvd2048_16f,kvd2048_16f", "--num", "3",
            "--i3d", str(weights), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "r.jsonl"),
            "--device", "cpu", "--batch-size", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fvd2048_16f:" in out and "kvd2048_16f:" in out and "(clips 3, step 1)" in out
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert record["eval"]["fvd2048_16f"]["value"] > 0 and record["eval"]["fvd2048_16f"]["protocol_num"] == 2048
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["eval"].keys() == record["eval"].keys()
    assert len(list((tmp_path / "cache").glob("i3d-16f-*.npy"))) == 1, "FVD and KVD share the real features"


def test_inception_score_protocol_repeats_over_fresh_samples(tiny_model, monkeypatch):
    model, _ = tiny_model
    PROTOCOLS["is_test"] = ev.Protocol("is_test", "c3d", "is", 16, 8, repeats=3)
    monkeypatch.setattr(ev, "feature_function",
                        lambda protocol, weights, device: lambda v: torch.softmax(10 * colour_features(v), 1))
    try:
        result = ev.evaluate_model(model, ["is_test"], weights={}, num=4, seed=0, batch_size=6)["is_test"]
    finally:
        del PROTOCOLS["is_test"]
    assert 1.0 <= result["value"] <= 6.0 and result["std"] is not None and result["num"] == 4


def test_frame_fid_api_and_protocol_count_frames(tiny_model, monkeypatch):
    from kinema.metrics.fid import FrameFID

    per_frame = lambda frames: torch.from_numpy(frames.reshape(len(frames), -1, 3).mean(1)).double()  # noqa: E731
    fid = FrameFID(feature_fn=per_frame)
    videos = (torch.rand(4, 3, 8, 16, 16) * 2 - 1)
    fid.update(videos, real=True)
    fid.update(videos, real=False)
    assert abs(fid.compute()) < 1e-6 and fid.real.count == 32
    fid.update(np.zeros((8, 16, 16, 3), np.uint8), real=False)
    assert fid.compute() > 1
    fid.reset()
    with pytest.raises(ValueError, match="at least 2 real frames"):
        fid.compute()
    with pytest.raises(TypeError, match="pass uint8 frames/videos or float videos"):
        fid.update(np.zeros((2, 16, 16, 3), np.float32), real=True)

    model, _ = tiny_model
    PROTOCOLS["fid_test"] = ev.Protocol("fid_test", "inception", "fid", 20, 8)
    monkeypatch.setattr(ev, "feature_function", lambda p, w, d: lambda v: per_frame(ev.quantise(v).reshape(
        -1, *v.shape[3:], 3)))
    try:
        data = BouncingShapes(16, 8, 16, 16, seed=0)
        result = ev.evaluate_model(model, ["fid_test"], weights={}, dataset=data, dataset_key={"d": 1},
                                   seed=0, batch_size=4)["fid_test"]
    finally:
        del PROTOCOLS["fid_test"]
    assert result["num"] == 20 and result["value"] > 0  # 20 frames = 3 clips of 8, truncated


def test_fvd_entry_point_on_raw_uint8_videos(tmp_path, unverified_metric_weights):
    from kinema.metrics import fvd
    from kinema.metrics.networks.i3d import InceptionI3d
    from kinema.metrics.networks.weights import save_weights

    torch.manual_seed(0)
    weights = save_weights(InceptionI3d().state_dict(), tmp_path / "i3d.safetensors", "i3d")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 9, 32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 128, (3, 9, 32, 32, 3), dtype=np.uint8)
    assert abs(fvd(a, a, i3d_weights=weights)) < 1e-6
    assert fvd(a, b, i3d_weights=weights) > 0
    with pytest.raises(ValueError, match="different frame counts"):
        fvd(a, b[:, :5], i3d_weights=weights)
    with pytest.raises(TypeError, match="FVD takes uint8 videos"):
        fvd(a.astype(np.float32), b.astype(np.float32), i3d_weights=weights)


def test_protocols_that_do_not_suit_the_model_are_refused_before_any_work(tiny_model, tmp_path):
    """A prediction model under a protocol that samples from noise alone (and the reverse) is refused by name
    at once -- by kinema evaluate, and by the trainer before its first step when train.eval_every is set."""
    from kinema.registry import build_model, load_config
    from kinema.training import TrainingError

    dvg = build_model(load_config("dvg_tiny").model)
    with pytest.raises(ValueError, match=r"motion256 samples the model from noise alone.*DVG needs a condition "
                                         r"\(frames\).*bestof100_ssim_psnr"):
        ev.evaluate_model(dvg, ["motion256"], {}, dataset=None)
    with pytest.raises(ValueError, match=r"bestof100_ssim_psnr continue real clips' frames.*does not take frames"):
        ev.evaluate_model(tiny_model[0], ["bestof100_ssim_psnr"], {}, dataset=None)
    config = load_config("dvg_tiny", ["train.eval_every=2", "train.steps=2", 'train.eval_metrics=["motion256"]'])
    with pytest.raises(TrainingError, match=r"train.eval_metrics: motion256 samples the model from noise alone"):
        Trainer(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_frame_conditional_model_is_scored_on_its_continuations_of_the_real_clips(cheap_network, tmp_path):
    """FVD & co. of a model that only continues frames (VideoGPT's BAIR protocol): each generated video
    starts from the first context_frames frames of one of the real clips it is compared with."""
    from kinema.registry import build_model, load_config

    torch.manual_seed(0)
    dvg = build_model(load_config("dvg_tiny").model).eval()
    t = dvg.video_shape[1]
    shapes, bars = BouncingShapes(16, t, 32, 32, seed=0), RotatingBars(16, t, 32, 32, seed=0)
    PROTOCOLS["fvd_test"] = ev.Protocol("fvd_test", "i3d", "fvd", 8, t)
    try:
        kw = dict(weights={}, num=8, seed=3, cache_dir=tmp_path)
        a = ev.evaluate_model(dvg, ["fvd_test"], dataset=shapes, dataset_key={"d": "s"}, batch_size=8, **kw)
        b = ev.evaluate_model(dvg, ["fvd_test"], dataset=shapes, dataset_key={"d": "s"}, batch_size=3, **kw)
        assert a["fvd_test"]["value"] == pytest.approx(b["fvd_test"]["value"], rel=1e-6)  # not the batch size
        with pytest.raises(ValueError, match="needs real clips to start from"):
            ev.evaluate_model(dvg, ["fvd_test"], dataset=None, **kw, batch_size=8)
    finally:
        del PROTOCOLS["fvd_test"]
    # the conditioning reaches the videos: other real clips, other generated set
    videos = lambda data: torch.cat(list(ev.continued_batches(dvg, data, 8, t, seed=3, batch_size=4)))
    from_shapes, from_bars = videos(shapes), videos(bars)
    assert from_shapes.shape == (8, 3, t, 32, 32)
    assert not torch.allclose(from_shapes, from_bars)
    with pytest.raises(ValueError, match=r"motion256 samples the model from noise alone"):
        ev.evaluate_model(dvg, ["motion256"], {}, dataset=shapes)


def test_continuous_time_models_are_scored_at_the_protocols_length(cheap_network, tmp_path):
    """fvd2048_128f of a model trained on 8 frames: a continuous-time model (capabilities.continuous_time)
    renders times 0..127 -- its first frames are the ones it samples by default --, a discrete-time one is
    refused by name; the trainer's train.eval_every agrees."""
    from kinema.registry import build_model, load_config
    from kinema.training import TrainingError

    torch.manual_seed(0)
    ode = build_model(load_config("tgan_ode_tiny").model).eval()
    assert ode.capabilities.continuous_time and ode.video_shape[1] == 8
    long = torch.cat(list(ev.generated_batches(ode, 3, 128, seed=1, batch_size=2)))
    short = torch.cat(list(ev.generated_batches(ode, 3, 8, seed=1, batch_size=2)))
    assert long.shape == (3, 3, 128, 32, 32) and torch.equal(long[:, :, :8], short)
    real = BouncingShapes(4, 128, 32, 32, seed=0)
    result = ev.evaluate_model(ode, ["fvd2048_128f"], {}, dataset=real, dataset_key={"d": "s"}, num=4, batch_size=2,
                               cache_dir=tmp_path)["fvd2048_128f"]
    assert result["frames"] == 128 and np.isfinite(result["value"])
    discrete = build_model(tiny_run_config().model).eval()
    with pytest.raises(ValueError, match="needs 128 frames per video but the model generates 8"):
        ev.evaluate_model(discrete, ["fvd2048_128f"], {}, dataset=real, num=4, batch_size=2)
    weights = tmp_path / "i3d.safetensors"
    weights.write_bytes(b"")  # the trainer checks the file exists before training; nothing is scored here
    ode_run = load_config("tgan_ode_tiny", ["train.eval_every=2", 'train.eval_metrics=["fvd2048_128f"]',
                                            f"train.eval_i3d={str(weights)!r}"])
    Trainer(ode_run, tmp_path / "ode", device="cpu", progress=False).close()
    tganv2_run = tiny_run_config()
    tganv2_run.train.eval_every, tganv2_run.train.eval_metrics = 2, ["fvd2048_128f"]
    tganv2_run.train.eval_i3d = str(weights)
    with pytest.raises(TrainingError, match="need 128-frame clips but the model generates 8"):
        Trainer(tganv2_run, tmp_path / "tganv2", device="cpu", progress=False)


def test_one_held_out_real_set_for_training_and_kinema_evaluate(tmp_path):
    """The trainer's train.eval_every and kinema evaluate take the held-out clips, their seed and their cache
    key from heldout_real_set; the key names the frame stride, so two strides never share cached features."""
    import dataclasses

    cfg = tiny_run_config(steps=2)
    cfg.train.eval_every, cfg.train.eval_num = 2, 4
    trainer = Trainer(cfg, tmp_path / "run", device="cpu", progress=False)
    trainer.close()
    _, key = ev.heldout_real_set(cfg.data, cfg.train.seed, 8, 16, 16)
    assert trainer._eval["key"] == key and key["seed"] == cfg.train.seed + ev.HELD_OUT_SEED_OFFSET
    strided = ev.heldout_real_set(dataclasses.replace(cfg.data, frame_stride=2), cfg.train.seed, 8, 16, 16)[1]
    assert key["frame_stride"] == 1 and strided["frame_stride"] == 2 and strided != key
