"""Prediction metrics (best-of-N SSIM / PSNR, motion-mode diversity) and the action-switch data they are
checked on: reference formulas on fixed arrays, scikit-image where installed, ground-truth modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kinema.data import SYNTHETIC_FAMILIES, build_dataset
from kinema.data.action_switch import MODE_STEPS, MODES, ActionSwitchDigits
from kinema.metrics.prediction import (MODE_NAMES, PSNR_CAP, best_of_n, best_of_n_metrics, context_frames,
                                       diversity_score, left_mode, motion_modes, psnr_per_frame, ssim_per_frame)
from kinema.models.base import Capabilities, VideoModel

pytestmark = pytest.mark.usefixtures("one_thread")


def fixed(shape, seed) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ssim_reference(a: np.ndarray, b: np.ndarray, r: float = 1.0, w: int = 7) -> float:
    """Mean SSIM of two 2-D images by the formula, one window at a time (Wang et al. 2004 with scikit-image's
    uniform window and sample covariance)."""
    c1, c2, vals = (0.01 * r) ** 2, (0.03 * r) ** 2, []
    for i in range(a.shape[0] - w + 1):
        for j in range(a.shape[1] - w + 1):
            x, y = a[i:i + w, j:j + w].ravel(), b[i:i + w, j:j + w].ravel()
            mx, my = x.mean(), y.mean()
            vx, vy = x.var(ddof=1), y.var(ddof=1)
            cxy = ((x - mx) * (y - my)).sum() / (x.size - 1)
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_psnr_and_ssim_agree_with_reference_formulas_per_channel_and_frame():
    a, b = fixed((2, 3, 2, 12, 10), 0), fixed((2, 3, 2, 12, 10), 1)
    b = (0.6 * a + 0.4 * b)  # correlated, so SSIM is well away from 0
    psnr, ssim = psnr_per_frame(a, b), ssim_per_frame(a, b)
    assert psnr.shape == ssim.shape == (2, 2)
    for n in range(2):
        for t in range(2):
            channels = range(3)
            ref_psnr = np.mean([10 * math.log10(1 / np.mean((a[n, c, t] - b[n, c, t]).numpy() ** 2)) for c in channels])
            ref_ssim = np.mean([ssim_reference(a[n, c, t].numpy(), b[n, c, t].numpy()) for c in channels])
            assert psnr[n, t].item() == pytest.approx(ref_psnr, abs=1e-9)
            assert ssim[n, t].item() == pytest.approx(ref_ssim, abs=1e-9)
    assert psnr_per_frame(a, a).eq(PSNR_CAP).all() and ssim_per_frame(a, a).sub(1).abs().max() < 1e-12
    assert ssim_per_frame(a, b, data_range=2.0).gt(ssim).all()  # the official float32 convention scores higher


def test_psnr_and_ssim_agree_with_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    a, b = fixed((1, 1, 3, 32, 32), 2), fixed((1, 1, 3, 32, 32), 3)
    b = (0.7 * a + 0.3 * b).clamp(0, 1)
    for t in range(3):
        x, y = a[0, 0, t].numpy(), b[0, 0, t].numpy()
        for r in (1.0, 2.0):
            assert ssim_per_frame(a, b, data_range=r)[0, t].item() == pytest.approx(
                metrics.structural_similarity(x, y, data_range=r), abs=1e-9)
        assert psnr_per_frame(a, b)[0, t].item() == pytest.approx(
            metrics.peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-9)


def test_best_of_n_on_fixed_scores():
    scores = torch.tensor([[[1.0, 5.0, 1.0], [3.0, 3.0, 3.0]],   # clip 0: future 1 is best on average (3 > 2.33)
                           [[0.0, 0.0, 9.0], [2.0, 2.0, 2.0]]])  # clip 1: future 0 (3 > 2)
    assert best_of_n(scores, "clip").tolist() == [[3.0, 3.0, 3.0], [0.0, 0.0, 9.0]]
    assert best_of_n(scores, "frame").tolist() == [[3.0, 5.0, 3.0], [2.0, 2.0, 9.0]]
    with pytest.raises(ValueError, match="select must be"):
        best_of_n(scores, "best")


class Offsets(VideoModel):
    """A prediction model for tests: future ``k`` is the real clip's future plus ``offsets[k]`` (noise = k)."""

    default_objective = "none"

    def __init__(self, dataset, offsets, context=2):
        super().__init__()
        self.dataset, self.offsets, self.context_frames = dataset, offsets, context
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.clips = {}

    @property
    def capabilities(self):
        return Capabilities(conditions=frozenset({"frames"}), context_frames=self.context_frames or 0)

    @property
    def video_shape(self):
        return tuple(self.dataset[0].shape)

    def sample_noise(self, n, generator=None, device=None):
        return torch.arange(n)

    def sample(self, noise, frames=None):
        clip = next(c for c in map(self.dataset.__getitem__, range(len(self.dataset)))
                    if torch.equal(c[:, : self.context_frames], frames[0]))
        out = clip[None].repeat(len(noise), 1, 1, 1, 1)
        for row, k in enumerate(noise.tolist()):
            out[row, :, self.context_frames:] = (out[row, :, self.context_frames:] + self.offsets[k]).clamp(-1, 1)
        return out


def test_best_of_n_metrics_pick_the_best_future_and_agree_with_a_reference():
    data = ActionSwitchDigits(3, 6, 16, 16, seed=4)
    offsets = [0.3, 0.05, -0.2]
    model = Offsets(data, offsets)
    result = best_of_n_metrics(model, data, 3, 3, seed=0, batch_size=2)
    assert result["predicted_frames"] == 4 and result["futures"] == 3 and len(result["psnr"]) == 4
    real = torch.stack([data[i] for i in range(3)])
    unit = lambda x: (x.double() + 1) / 2  # noqa: E731
    target = unit(real[:, :, 2:])
    for metric, key in ((psnr_per_frame, "psnr"), (ssim_per_frame, "ssim")):
        # per clip, the future whose mean over frames is best, found by brute force
        futures = [metric(unit((real[:, :, 2:] + o).clamp(-1, 1)), target) for o in offsets]  # each (3, 4)
        best = [max(futures, key=lambda f: f[c].mean().item())[c] for c in range(3)]
        np.testing.assert_allclose(result[key], torch.stack(best).mean(0).numpy(), atol=1e-5)
    assert result["psnr"] == pytest.approx(psnr_per_frame(unit((real[:, :, 2:] + 0.05).clamp(-1, 1)), target)
                                           .mean(0).tolist(), abs=1e-5)  # the smallest offset wins on PSNR
    copy = unit(real[:, :, 1:2].expand(-1, -1, 4, -1, -1))
    np.testing.assert_allclose(result["copy_last_psnr"], psnr_per_frame(copy, target).mean(0).numpy(), atol=1e-5)
    assert result["psnr_mean"] > np.mean(result["mean_future_psnr"])


def test_context_frames_names_a_model_that_is_not_a_prediction_model():
    data = ActionSwitchDigits(1, 4, 16, 16)
    model = Offsets(data, [0.0])
    model.context_frames = None
    with pytest.raises(ValueError, match="does not say how many"):
        context_frames(model)
    Offsets.capabilities = property(lambda self: Capabilities())
    try:
        with pytest.raises(ValueError, match="does not condition on frames"):
            context_frames(model)
    finally:
        del Offsets.capabilities
        Offsets.capabilities = property(lambda self: Capabilities(conditions=frozenset({"frames"}),
                                                                  context_frames=self.context_frames or 0))


def test_action_switch_digits_modes_are_the_steps_and_switch_at_random():
    assert SYNTHETIC_FAMILIES["action_switch_digits"] is ActionSwitchDigits and MODES == MODE_NAMES
    data = ActionSwitchDigits(40, 24, 32, 32, seed=1, switch_probability=0.2)
    switches, seen = [], set()
    for i in range(len(data)):
        gt = data.ground_truth(i)
        pos, vel, modes = gt["positions"][0], gt["velocities"][0], gt["modes"][0]
        np.testing.assert_allclose(vel, MODE_STEPS[modes] * gt["speeds"][0])  # every step is a pure mode
        np.testing.assert_allclose(pos[1:], pos[:-1] + vel[:-1], atol=1e-9)  # and is taken exactly
        lo = gt["extents"][0, [0, 2]]
        hi = np.array([31.0, 31.0]) - gt["extents"][0, [1, 3]]
        assert (pos >= lo - 1e-9).all() and (pos <= hi + 1e-9).all()
        switches.append(gt["switches"][0, 1:])
        seen.update(modes.tolist())
        np.testing.assert_array_equal(gt["direction_changes"][0, 1:], modes[1:] != modes[:-1])
    assert seen == set(range(5))
    assert 0.12 < np.mean(switches) < 0.28  # switch_probability 0.2
    assert torch.equal(data[3], ActionSwitchDigits(40, 24, 32, 32, seed=1, switch_probability=0.2)[3])
    with pytest.raises(ValueError, match="switch_probability"):
        ActionSwitchDigits(1, 4, 16, 16, switch_probability=1.5)


def test_motion_modes_recover_the_ground_truth_from_the_frames():
    data = ActionSwitchDigits(30, 12, 32, 32, seed=2)
    est = motion_modes(torch.stack([data[i] for i in range(30)]))
    truth = torch.stack([torch.as_tensor(data.ground_truth(i)["modes"][0, :-1]) for i in range(30)])
    assert (est == truth).double().mean() > 0.97
    # a blank prediction does not move: still
    assert motion_modes(torch.full((1, 3, 4, 16, 16), -1.0)).eq(0).all()


def test_left_mode_needs_a_run_of_another_mode():
    modes = torch.tensor([[2, 2, 1, 2, 2], [2, 1, 1, 2, 2], [0, 0, 0, 0, 0]])
    assert left_mode(modes, 2, 2).tolist() == [False, True, True]
    assert left_mode(modes, 2, 1).tolist() == [True, True, True]


class Replay(Offsets):
    """Futures for tests: the real future (``mode="real"``) or the last context frame repeated."""

    def __init__(self, dataset, mode, context=3):
        super().__init__(dataset, [0.0], context)
        self.mode = mode

    def sample_noise(self, n, generator=None, device=None):
        return torch.zeros(n, dtype=torch.long)

    def sample(self, noise, frames=None):
        out = super().sample(noise, frames)
        if self.mode == "copy":
            out[:, :, self.context_frames:] = out[:, :, self.context_frames - 1: self.context_frames]
        return out


def test_diversity_score_of_the_real_future_and_of_a_frozen_one():
    data = ActionSwitchDigits(24, 10, 32, 32, seed=5, switch_probability=0.3)
    real = diversity_score(Replay(data, "real"), data, 24, 2, seed=0)
    assert real["estimator_accuracy"] > 0.97
    assert real["value"] == pytest.approx(real["real_changed"], abs=0.05) and 0 < real["real_changed"] < 1
    assert real["pairwise_disagreement"] == 0  # identical futures
    frozen = diversity_score(Replay(data, "copy"), data, 24, 2, seed=0)
    still = np.mean([data.ground_truth(i)["modes"][0, 1] == 0 for i in
                     torch.randperm(24, generator=torch.Generator().manual_seed(0)).tolist()])
    assert frozen["value"] == pytest.approx(1 - still)  # a frozen future leaves every mode but "still"
    assert frozen["distinct_modes"] == 1
    with pytest.raises(ValueError, match="one object per clip"):
        diversity_score(Replay(ActionSwitchDigits(2, 10, 32, 32, num_digits=2), "real"),
                        ActionSwitchDigits(2, 10, 32, 32, num_digits=2), 2, 2)
    bouncing = build_dataset(type("C", (), {"source": "synthetic", "family": "bouncing_shapes", "num_clips": 2})(),
                             frames=10, height=32, width=32, seed=0)
    with pytest.raises(ValueError, match="action_switch_digits"):
        diversity_score(Replay(data, "real"), bouncing, 2, 2)


class Alternate(Replay):
    """Even noise rows: the real future; odd rows: the last context frame repeated."""

    def sample_noise(self, n, generator=None, device=None):
        return torch.arange(n)

    def sample(self, noise, frames=None):
        out = Replay.sample(self, torch.zeros(len(noise), dtype=torch.long), frames)
        odd = noise % 2 == 1
        out[odd, :, self.context_frames:] = out[odd, :, self.context_frames - 1: self.context_frames]
        return out


def test_pairwise_disagreement_counts_steps_where_two_futures_differ():
    data = ActionSwitchDigits(6, 8, 32, 32, seed=7)
    model = Alternate(data, "real")
    result = diversity_score(model, data, 6, 2, seed=0)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0)).tolist()
    # 2 futures: the real one and a still one; they differ where the real mode (from the last context frame)
    # is not still
    expected = np.mean([np.mean(data.ground_truth(i)["modes"][0, 2:7] != 0) for i in order])
    assert result["pairwise_disagreement"] == pytest.approx(expected)


def test_prediction_protocols_during_training_and_the_dvg_benchmark(tmp_path):
    pytest.importorskip("gpytorch")
    import importlib.util
    import json
    from pathlib import Path

    from kinema.cli import main

    run = tmp_path / "run"
    sets = [f"--set=model.{k}={v}" for k, v in (("resolution", 16), ("nf", 8), ("g_dim", 4), ("rnn_size", 16),
                                                ("gp_inducing", 8))]
    assert main(["--threads", "1", "train", "--config", "configs/dvg_tiny.toml", "--out", str(run), "--steps", "2",
                 "--no-progress", "--device", "cpu", "--set", "train.batch_size=4", "--set", "train.num_samples=2",
                 "--set", "data.num_clips=8", "--set", "train.eval_every=2", "--set", "train.eval_num=2",
                 "--set", 'train.eval_metrics=["modes_diversity10"]', *sets]) == 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    diversity = next(r["eval"]["modes_diversity10"] for r in logged if "eval" in r)
    assert diversity["futures"] == 10 and diversity["num"] == 2 and 0 <= diversity["value"] <= 1

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dvg_prediction.py"
    spec = importlib.util.spec_from_file_location("dvg_prediction", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    result = bench.main(["--checkpoint", str(run), "--clips", "2", "--futures", "2", "--future", "6", "--early", "2",
                         "--out", str(out)])
    assert json.loads(out.read_text())["summary"] == result["summary"]
    assert len(result["lstm_psnr"]) == len(result["copy_last_psnr"]) == 6
    assert result["summary"]["diversity_never"]["pairwise_disagreement"] == 0  # the LSTM alone is deterministic
    assert set(result["summary"]["lstm_psnr_of_mean_mse"]) == {"frames_1_2", "frames_3_6"}


def random_lpips_file(tmp_path):
    from kinema.metrics.lpips import LPIPS

    torch.manual_seed(0)
    net = LPIPS()
    for name, p in net.named_parameters():  # lpips' linear layers are non-negative
        if name.startswith("lin"):
            p.data = p.data.abs()
    path = tmp_path / "lpips_alex.pth"
    torch.save(net.state_dict(), path)
    return path


def test_lpips_matches_the_lpips_package(monkeypatch, tmp_path):
    """Against the lpips package's LPIPS(net="alex") with its own v0.1 linear weights and a random AlexNet
    (pnet_rand). Without torchvision the package gets torchvision's AlexNet layout from a stand-in module,
    so then this checks scaling, normalisation, linear layers, averaging and the state-dict keys."""
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("lpips") is None:
        pytest.skip("the reference needs the lpips package: pip install lpips")
    from kinema.metrics.lpips import LPIPS, _layer

    if importlib.util.find_spec("torchvision") is None:
        def alexnet(pretrained=False, **kwargs):
            m = torch.nn.Module()
            m.features = torch.nn.Sequential(*[_layer(i) for i in range(12)], torch.nn.MaxPool2d(3, 2))
            return m

        tv = types.ModuleType("torchvision")
        tv.models = types.SimpleNamespace(alexnet=alexnet, squeezenet1_1=None, vgg16=None)
        monkeypatch.setitem(sys.modules, "torchvision", tv)
        monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    torch.manual_seed(0)
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    torch.save(ref.state_dict(), tmp_path / "ref.pth")
    mine = LPIPS.from_file(tmp_path / "ref.pth")
    x, y = fixed((3, 3, 40, 36), 8).float() * 2 - 1, fixed((3, 3, 40, 36), 9).float() * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(mine(x, y), ref(x, y).flatten(), atol=1e-6, rtol=1e-5)


def test_lpips_from_a_user_file_and_its_errors(tmp_path):
    from kinema.metrics.lpips import LPIPS, LPIPSError

    net = LPIPS.from_file(random_lpips_file(tmp_path))
    x, y = fixed((2, 3, 32, 32), 10).float() * 2 - 1, fixed((2, 3, 32, 32), 11).float() * 2 - 1
    assert net(x, x).abs().max() < 1e-6 and (net(x, y) > 0).all()
    torch.testing.assert_close(net(x, y), net(y, x))
    with pytest.raises(LPIPSError, match="no such file; write one with"):
        LPIPS.from_file(tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "vgg.pth")
    with pytest.raises(LPIPSError, match="not an AlexNet LPIPS state dict"):
        LPIPS.from_file(tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match="at least 31x31"):
        net(x[..., :16, :16], y[..., :16, :16])


def test_best_of_n_lpips_is_the_lowest_future(tmp_path):
    from kinema.metrics.lpips import LPIPS
    from kinema.metrics.prediction import lpips_per_frame

    net = LPIPS.from_file(random_lpips_file(tmp_path))
    data = ActionSwitchDigits(2, 5, 32, 32, seed=4)
    offsets = [0.4, 0.1, -0.3]
    result = best_of_n_metrics(Offsets(data, offsets), data, 2, 3, seed=0, lpips=net)
    real = torch.stack([data[i] for i in range(2)])
    unit = lambda x: (x.double() + 1) / 2  # noqa: E731
    target = unit(real[:, :, 2:])
    futures = [lpips_per_frame(net, unit((real[:, :, 2:] + o).clamp(-1, 1)), target) for o in offsets]
    best = [min(futures, key=lambda f: f[c].mean().item())[c] for c in range(2)]
    np.testing.assert_allclose(result["lpips"], torch.stack(best).mean(0).numpy(), atol=1e-5)
    assert len(result["copy_last_lpips"]) == 3
