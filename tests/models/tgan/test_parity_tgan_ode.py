"""TGAN-ODE authors' PyTorch code: their TGANv2 and TGANv2-ODE checkpoints (tests/fixtures/parity/tgan_ode,
saved as their scripts save them) convert with `kinema convert tgan_ode_port` and reproduce their outputs:
dense video (BN eval and train), every level's sparse render, BN running statistics, and the multi-level
discriminator's scores (benchmarks/parity_tgan_ode.py for how they were made)."""

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kinema.api import convert
from kinema.errors import CheckpointError, ConfigError
from kinema.foreign import UnsafePickleError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "tgan_ode"
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))


@pytest.fixture(scope="module", params=["convlstm", "ode"])
def rows(request, tmp_path_factory):
    from parity_tgan_ode import kinema_tganv2

    torch.set_num_threads(1)
    kind = request.param
    out = convert("tgan_ode_port", FIXTURE / f"tganv2_{kind}.ckpt", tmp_path_factory.mktemp(kind) / "converted")
    theirs = load_file(FIXTURE / f"tganv2_{kind}_outputs.safetensors")
    ours = {name: rel for name, _, rel, _ in kinema_tganv2(out, theirs)[0]}
    exact = {name: rel for name, _, rel, _ in kinema_tganv2(out, theirs, torch.float64)[0]}
    return kind, out, ours, exact


def test_generator_and_discriminator_equal_the_port(rows):
    kind, out, ours, exact = rows
    assert len(ours) == 13
    for name, rel in ours.items():
        # float32 rounding: within 1e-5 relative, or within twice the port's own float32 distance from the
        # exact (float64) result of the same weights
        assert rel <= max(1e-5, 2 * exact[name]), (kind, name, rel, exact[name])
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["temporal"] == kind and config["bn_eps"] == 1e-5 and config["dis_final_relu"] is False
    assert config["gen_channels"] == [8, 8, 4, 2, 2] and config["resolution"] == 16 and config["frames"] == 16


def test_training_iterations_equal_the_ports_loop(tmp_path):
    """Three iterations of the port's loop (tganv2 UCF101.py: D on a no-grad fake + lambda 0.5 summed R1,
    then G on a fresh draw; Adam 1e-4 (0, 0.9)) in float64 from its perturbed initialisation (fixture) and
    kinema's GANObjective with update_order = "discriminator_first" from the converted checkpoint, on the same
    batches, noise and sub-sampling offsets: every weight and BN statistic of both networks agrees to float64
    rounding. kinema's default order (G first, the official Chainer updater) is a different loop: it does not."""
    from parity_tgan_ode import kinema_tganv2_training

    torch.set_num_threads(1)
    out = convert("tgan_ode_port", FIXTURE / "tganv2_train.ckpt", tmp_path / "converted")
    theirs = load_file(FIXTURE / "tganv2_train_outputs.safetensors")
    rows = kinema_tganv2_training(out, theirs)
    assert len(rows) == 212
    worst = max(rows, key=lambda r: r[2])
    assert worst[2] < 1e-9, worst
    control = max(kinema_tganv2_training(out, theirs, update_order="generator_first"), key=lambda r: r[2])
    assert control[2] > 1e-3, control


def test_cli_convert_then_sample(tmp_path):
    from kinema.cli import main

    out = tmp_path / "converted"
    assert main(["convert", "tgan_ode_port", str(FIXTURE / "tganv2_ode.ckpt"), str(out)]) == 0
    provenance = json.loads((out / "converted.json").read_text())
    assert provenance["network"] == "tganv2_ode" and "stride 4" in provenance["training_subsampling"]
    assert main(["sample", "--checkpoint", str(out), "--num", "2", "--batch-size", "2", "--device", "cpu",
                 "--out", str(tmp_path / "grid.gif"), "--no-progress"]) == 0
    assert (tmp_path / "grid.gif").stat().st_size > 0


def _ckpt(tmp_path, gen, dis, name="x.ckpt", **extra):
    path = tmp_path / name
    torch.save({"epoch": 1, "model_state_dict": [gen, dis], **extra}, path)
    return path


def test_bad_inputs_name_the_problem(tmp_path):
    ckpt = torch.load(FIXTURE / "tganv2_convlstm.ckpt", weights_only=True)
    gen, dis = ckpt["model_state_dict"]
    # another family / format
    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointError, match="not a checkpoint of the TGAN-ODE authors' scripts"):
        convert("tgan_ode_port", tmp_path / "lightning.ckpt", tmp_path / "a")
    with pytest.raises(CheckpointError, match="none of the TGAN-ODE port's networks"):
        convert("tgan_ode_port", _ckpt(tmp_path, {"encoder.weight": torch.zeros(1)}, {}), tmp_path / "a")
    # damaged
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes((FIXTURE / "tganv2_convlstm.ckpt").read_bytes()[:30000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        convert("tgan_ode_port", cut, tmp_path / "b")
    # an entry the converter does not know: named, not dropped
    with pytest.raises(CheckpointError, match="unknown entry 'ema'"):
        convert("tgan_ode_port", _ckpt(tmp_path, gen, dis, ema={}), tmp_path / "c")
    with pytest.raises(CheckpointError, match="'build.Up1.extra.weight' is not part of"):
        convert("tgan_ode_port", _ckpt(tmp_path, {**gen, "build.Up1.extra.weight": torch.zeros(1)}, dis), tmp_path / "c")
    # networks of the port kinema does not convert
    with pytest.raises(CheckpointError, match="higher-order ODE generator"):
        convert("tgan_ode_port", _ckpt(tmp_path, {**gen, "dsdt_encoders.0.weight": torch.zeros(1)}, dis), tmp_path / "d")
    # a config that does not describe the file
    with pytest.raises(ConfigError, match="model.dis_final_relu = True does not describe"):
        convert("tgan_ode_port", FIXTURE / "tganv2_convlstm.ckpt", tmp_path / "e", config="tganv2_ucf101_192",
                overrides=["model.bn_eps=1e-5", 'model.temporal="convlstm"'])
    with pytest.raises(CheckpointError, match=r"do not fit kinema's tganv2 \(32 missing, 0 unexpected, 204 of another shape"):
        convert("tgan_ode_port", FIXTURE / "tganv2_convlstm.ckpt", tmp_path / "e", config="tganv2_ucf101_192",
                overrides=["model.bn_eps=1e-5", "model.dis_final_relu=false", "model.base_size=1",
                           "model.resolution=64"])


def test_pickle_outside_the_allow_list_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"epoch": 0, "model_state_dict": [{}, {}], "opt": Payload()}, f)
    with pytest.raises(UnsafePickleError, match=r"wants (io|builtins)\.open"):
        convert("tgan_ode_port", path, tmp_path / "out")
    assert not marker.exists()


def test_64x64_tgan_ode_without_the_initial_mlp(tmp_path):
    """`tgan SVC ODE UCF101.py` saves tgan_ode.VideoGenerator(linear=False): x(0) = z. The converter maps it
    to model.temporal_init_mlp = false (the 64x64 networks have no fixture: benchmarks/parity_tgan_ode.py
    --config paper compares them with the port; here a checkpoint in the port's names, from kinema's model)."""
    from kinema.models.tgan.model import TGAN, TGANConfig
    from kinema.nn.temporal import TemporalConfig

    with pytest.raises(ConfigError, match="init_mlp"):
        TemporalConfig(kind="ode", order=2, init_mlp=False).validate()
    torch.manual_seed(0)
    model = TGAN(TGANConfig(temporal_init_mlp=False, gen_channels=[64, 32, 16, 8, 4], dis_channels=[4, 8, 8, 8])).eval()
    names = {"generator.image.content.": "slow.", "generator.image.motion.": "fast.", "generator.image.deconvs.": "model.",
             "generator.temporal.field.net.0.": "temp.ode_fn.fn.0.", "discriminator.convs.": "model3d."}
    gen, dis = {}, {}
    for key, value in model.state_dict().items():
        if key == "discriminator.score.weight":
            dis["conv2d.weight"] = value[:, :, 0]
        elif key == "discriminator.score.bias":
            dis["conv2d.bias"] = value
        else:
            prefix = next(p for p in names if key.startswith(p))
            (dis if prefix.startswith("discriminator") else gen)[names[prefix] + key[len(prefix):]] = value
    out = convert("tgan_ode_port", _ckpt(tmp_path, gen, dis), tmp_path / "out")
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["temporal"] == "ode" and config["temporal_init_mlp"] is False
    assert config["gen_channels"] == [64, 32, 16, 8, 4] and config["dis_channels"] == [4, 8, 8, 8]
    import kinema

    converted, _ = kinema.load(out)
    z = torch.rand(2, 100) * 2 - 1
    with torch.no_grad():
        assert torch.equal(converted.sample(z), model.sample(z))
