"""TGANv2: the official Chainer snapshots (tests/fixtures/parity/tganv2, written by pfnet-research/tgan2's
own code) convert with `kinema convert tganv2_chainer` and reproduce the official outputs: the dense
inference video, every level's sparse training render, the BN running statistics and the multi-level
discriminator's scores (benchmarks/parity_tganv2.py for how they were made)."""

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.api import convert
from kinema.errors import CheckpointError, ConfigError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "tganv2"
SPEC = json.loads((FIXTURE / "fixture.json").read_text())
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))


def _convert(src, out, overrides=None):
    return convert("tganv2_chainer", src, out, config=SPEC["config"],
                   overrides=SPEC["overrides"] if overrides is None else overrides)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from parity_tganv2 import bn_rows, compare, kinema_outputs

    torch.set_num_threads(1)
    ckpt = _convert(FIXTURE / "generator_iter_0.npz", tmp_path_factory.mktemp("tganv2") / "converted")
    theirs = dict(np.load(FIXTURE / "outputs.npz"))
    ours, model = kinema_outputs(ckpt, theirs["z"], SPEC["dense_frames"], SPEC["offsets"])
    exact, _ = kinema_outputs(ckpt, theirs["z"].astype(np.float64), SPEC["dense_frames"], SPEC["offsets"],
                              torch.float64)
    rows = {}
    for name in ("dense", "level1", "level2", "level3", "level4"):
        rows[name] = compare(name, ours[name], theirs[name])[2]
        rows[f"{name} floor"] = compare(name, exact[name], theirs[name])[2]  # official f32 vs exact maths
    for name, _, rel, _ in bn_rows(model, theirs):
        rows[name.split()[1]] = rel
    with torch.no_grad():
        scores = model.discriminate([torch.from_numpy(theirs[f"level{i}"]) for i in range(1, 5)])
    for i, score in enumerate(scores, 1):
        rows[f"dis{i}"] = compare(f"dis{i}", score.numpy(), theirs[f"dis{i}"][:, 0])[2]
    return ckpt, rows


def test_generator_at_every_level_equals_the_official_code(results):
    _, rows = results
    # float32 rounding: within 1e-5 relative, or within twice the official float32 output's own distance from
    # the exact (float64) result of the same weights -- a tanh render divides an error near 0 by a max near 1
    for name in ("dense", "level1", "level2", "level3", "level4"):
        assert rows[name] <= max(1e-5, 2 * rows[f"{name} floor"]), (name, rows[name], rows[f"{name} floor"])
    assert rows["avg_mean"] <= 1e-5 and rows["avg_var"] <= 1e-5, rows


def test_multi_level_discriminator_equals_the_official_code(results):
    _, rows = results
    for i in range(1, 5):
        assert rows[f"dis{i}"] <= 1e-5, (i, rows[f"dis{i}"])


def test_cli_convert_then_sample(tmp_path):
    from kinema.cli import main

    out = tmp_path / "converted"
    sets = [arg for item in SPEC["overrides"] for arg in ("--set", item)]
    assert main(["convert", "tganv2_chainer", str(FIXTURE), str(out), "--config", SPEC["config"], *sets]) == 0
    provenance = json.loads((out / "converted.json").read_text())
    assert provenance["discriminator"].endswith("discriminator_iter_0.npz") and provenance["iteration"] == 0
    assert main(["sample", "--checkpoint", str(out), "--num", "2", "--batch-size", "2", "--device", "cpu",
                 "--out", str(tmp_path / "grid.gif"), "--no-progress"]) == 0
    assert (tmp_path / "grid.gif").stat().st_size > 0
    assert main(["info", str(out)]) == 0


def test_generator_alone_initialises_the_discriminator_and_says_so(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "generator_iter_0.npz").write_bytes((FIXTURE / "generator_iter_0.npz").read_bytes())
    out = _convert(tmp_path / "g" / "generator_iter_0.npz", tmp_path / "out")
    assert "not in the source" in json.loads((out / "converted.json").read_text())["discriminator"]


def _npz(path, arrays):
    np.savez(path, **arrays)
    return path


def test_bad_inputs_name_the_problem(tmp_path):
    gen = dict(np.load(FIXTURE / "generator_iter_0.npz"))
    # no config: the .npz has no hyper-parameters; the error lists the sizes the file implies
    with pytest.raises(ConfigError, match=r"--config.*model.z_dim=8.*gen_channels=\[8, 32, 16, 8, 4, 2, 2\]"):
        convert("tganv2_chainer", FIXTURE / "generator_iter_0.npz", tmp_path / "a")
    # a config of another size: the first array that does not fit, with both shapes
    with pytest.raises(CheckpointError, match=r"generator.fc.weight is \(8, 8\) in the file but \(8, 16\)"):
        _convert(FIXTURE / "generator_iter_0.npz", tmp_path / "b", SPEC["overrides"] + ["model.z_dim=16"])
    # a config of another family, or a TGANv2 config the official code cannot have trained
    with pytest.raises(ConfigError, match="'tganv2' config"):
        convert("tganv2_chainer", FIXTURE / "generator_iter_0.npz", tmp_path / "c", config="tgan_ode_tiny")
    with pytest.raises(ConfigError, match="model.temporal = 'ode'"):
        _convert(FIXTURE / "generator_iter_0.npz", tmp_path / "c", SPEC["overrides"] + ['model.temporal="ode"'])
    # the discriminator given as SRC
    with pytest.raises(CheckpointError, match="discriminator snapshot; give the generator's generator_iter_0.npz"):
        _convert(FIXTURE / "discriminator_iter_0.npz", tmp_path / "d")
    # another family's file: a torch.save zip, an unrelated .npz
    torch.save({"model_state_dict": [{}, {}], "epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a Chainer .npz"):
        _convert(tmp_path / "other.pth", tmp_path / "e")
    with pytest.raises(CheckpointError, match="not a TGANv2 MultiTGANCLSTMGenerator snapshot"):
        _convert(_npz(tmp_path / "x.npz", {"conv1/W": np.zeros(3, np.float32)}), tmp_path / "e")
    # damaged
    cut = tmp_path / "generator_iter_5.npz"
    cut.write_bytes((FIXTURE / "generator_iter_0.npz").read_bytes()[:40000])
    with pytest.raises(CheckpointError, match="truncated or damaged|not an .npz"):
        _convert(cut, tmp_path / "f")
    # options of the official classes kinema does not have: named, never dropped
    with pytest.raises(CheckpointError, match="decoder1/w_xifoc/W.*n_layers > 1"):
        _convert(_npz(tmp_path / "two.npz", {**gen, "decoder1/w_xifoc/W": gen["decoder0/w_xifoc/W"]}), tmp_path / "g")
    with pytest.raises(CheckpointError, match="peephole"):
        _convert(_npz(tmp_path / "peep.npz", {**gen, "decoder0/peep_c_i": np.zeros((8, 1, 1), np.float32)}),
                 tmp_path / "g")
    with pytest.raises(CheckpointError, match="b3/gammas/W.*class-conditional"):
        _convert(_npz(tmp_path / "cbn.npz", {**gen, "b3/gammas/W": np.ones((5, 8), np.float32)}), tmp_path / "g")
    with pytest.raises(CheckpointError, match="'block4/c3/W' is not part of"):
        _convert(_npz(tmp_path / "odd.npz", {**gen, "block4/c3/W": np.ones(1, np.float32)}), tmp_path / "g")


def test_pickled_array_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    gen = dict(np.load(FIXTURE / "generator_iter_0.npz"))
    path = tmp_path / "generator_iter_0.npz"
    np.savez(path, **gen)
    with zipfile.ZipFile(path, "a") as z:  # an object array the way numpy pickles one
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.array([Payload()], dtype=object), allow_pickle=True)
        z.writestr("fc/extra.npy", buffer.getvalue())
    assert b"pwned" in path.read_bytes()  # the payload is in the file
    with pytest.raises(CheckpointError, match="'fc/extra' is an object array.*never unpickles"):
        _convert(path, tmp_path / "out")
    assert not marker.exists()
