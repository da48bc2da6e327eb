"""DVG: the official model.pth (tests/fixtures/parity/dvg, written by the authors' code) converts with
`kinema convert dvg` and reproduces the official outputs (benchmarks/parity_dvg.py for how)."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gpytorch")

from kinema.api import convert  # noqa: E402
from kinema.errors import CheckpointError  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "dvg"
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    from parity_dvg import compare, kinema_outputs

    out = convert("dvg", FIXTURE / "model.pth", tmp_path_factory.mktemp("dvg") / "converted")
    reference = dict(np.load(FIXTURE / "official.npz"))
    return {name: (rel, abs_) for name, abs_, rel, _ in compare(reference, kinema_outputs(out, reference))}


def test_networks_and_rollout_equal_the_official_code(rows):
    for name in ("encoder_h", "encoder_skip0", "encoder_skip3", "decoder", "rollout"):
        assert rows[name][0] <= 1e-6, (name, rows[name])


def test_gp_equals_the_official_gpytorch_0_3(rows):
    # float64: the same maths (the converter maps gpytorch 0.3's whitening onto today's exactly)
    for name in ("gp_mean_float64", "gp_variance_float64", "neg_elbo_float64"):
        assert rows[name][0] <= 1e-6, (name, rows[name])
    # float32: within the official code's own float32 error (K_uu's conditioning amplifies rounding)
    for name in ("gp_mean", "gp_variance"):
        own = rows[f"({name}: official f32 vs its own f64)"][0]
        assert rows[name][0] <= max(2 * own, 1e-5), (name, rows[name], own)
    assert rows["neg_elbo"][0] <= 1e-5


def test_converted_checkpoint_samples_and_describes_itself(tmp_path):
    from kinema.cli import main

    out = tmp_path / "dvg"
    assert main(["convert", "dvg", str(FIXTURE / "model.pth"), str(out)]) == 0
    assert (out / "converted.json").is_file() and (out / "model.safetensors").is_file()
    import kinema

    model, config = kinema.load(out)
    assert config.model.output_activation == "tanh" and config.model.g_dim == 6 and config.model.nf == 4
    context = torch.rand(2, 3, 3, 64, 64) * 2 - 1
    video = model.sample(torch.tensor([1, 2]), frames=context, n_future=4)
    assert video.shape == (2, 3, 7, 64, 64) and torch.isfinite(video).all()
    assert main(["info", str(out)]) == 0


def test_bad_inputs_name_the_problem(tmp_path):
    # another family's file
    other = tmp_path / "other.pth"
    torch.save({"model_state_dict": [{}, {}], "epoch": 3}, other)
    with pytest.raises(CheckpointError, match="not an official DVG model.pth"):
        convert("dvg", other, tmp_path / "a")
    # damaged file
    cut = tmp_path / "cut.pth"
    cut.write_bytes((FIXTURE / "model.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        convert("dvg", cut, tmp_path / "b")
    # an option the converter does not know
    from kinema.foreign import load_foreign

    base = load_foreign(FIXTURE / "model.pth", inert=["models.dcgan_64.*", "models.lstm.*", "torch.nn.modules.*",
                                                        "argparse.Namespace"])
    odd = {"encoder": torch.nn.Linear(1, 1), "decoder": 0, "frame_predictor": 0, "likelihood": base["likelihood"],
           "gp_layer": base["gp_layer"], "opt": argparse.Namespace(n_past=5, warp_factor=9)}
    path = tmp_path / "odd.pth"
    torch.save(odd, path)
    with pytest.raises(CheckpointError, match="encoder is torch.nn.modules.linear.Linear, expected models.dcgan_64.encoder"):
        convert("dvg", path, tmp_path / "c")
    # a pickle wanting a class outside the allow-list is refused, not run
    evil = tmp_path / "evil.pth"
    torch.save({"encoder": _Planted(tmp_path / "pwned")}, evil)
    with pytest.raises(CheckpointError, match="outside the allow-list"):
        convert("dvg", evil, tmp_path / "d")
    assert not (tmp_path / "pwned").exists()


class _Planted:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_unknown_option_is_named_not_dropped(tmp_path, monkeypatch):
    import kinema.models.dvg.convert as dvg_convert

    real = dvg_convert.load_foreign

    def with_extra_option(path, inert=()):
        data = real(path, inert)
        data["opt"].state["warp_factor"] = 9
        return data

    monkeypatch.setattr(dvg_convert, "load_foreign", with_extra_option)
    with pytest.raises(CheckpointError, match="option --warp_factor is unknown"):
        convert("dvg", FIXTURE / "model.pth", tmp_path / "x")
