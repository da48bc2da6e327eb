"""VideoGPT parity fixture: checkpoints the authors' code saved (tests/fixtures/parity/videogpt, GENERATE.md)
converted with `kinema convert` give the official outputs; bad inputs are refused by name."""

from __future__ import annotations

import argparse
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kinema.api import convert, load
from kinema.errors import CheckpointError, ConfigError
from kinema.foreign import UnsafePickleError

torch.set_num_threads(1)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "videogpt"
TOL = 1e-5


def rel(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max()).item()


@pytest.fixture(scope="module")
def official():
    return load_file(FIXTURE / "official_outputs.safetensors")


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    return convert("videogpt_vqvae", FIXTURE / "official_vqvae.ckpt", tmp_path_factory.mktemp("vq") / "vqvae")


def test_vqvae_matches_official(vq_dir, official):
    model = load(vq_dir)[0]
    video = 2 * (official["pixels"].float() / 255 - 0.5)  # official [-0.5, 0.5] (data.py:80, :104) -> kinema [-1, 1]
    with torch.no_grad():
        assert rel(model.encode_latents(video), official["latents"]) <= TOL
        assert torch.equal(model.encode(video), official["codes"])
        assert rel(model.decode(official["codes"]) / 2, official["reconstruction"]) <= TOL


@pytest.mark.parametrize("name", ["full", "sparse_class"])
def test_prior_logits_match_official(name, vq_dir, official, tmp_path):
    out = convert("videogpt_prior", FIXTURE / f"official_prior_{name}.ckpt", tmp_path / name, first_stage=vq_dir)
    model, config = load(out)
    assert config.model.attention == ("sparse" if name == "sparse_class" else "full")
    assert config.model.layer_norm == "official" and config.model.start == "learned"
    labels = official.get(f"labels_{name}")
    codes = official["codes"].flatten(1)
    with torch.no_grad():
        logits = model.logits(codes, labels=labels)
    assert rel(logits, official[f"logits_{name}"]) <= TOL


def test_converted_prior_samples_with_the_cli(vq_dir, tmp_path):
    from kinema.cli import main

    out = tmp_path / "prior"
    assert main(["convert", "videogpt_prior", str(FIXTURE / "official_prior_full.ckpt"), str(out),
                 "--first-stage", str(vq_dir)]) == 0
    video = tmp_path / "samples.gif"
    assert main(["sample", "--checkpoint", str(out), "--num", "1", "--out", str(video), "--device", "cpu"]) == 0
    assert video.is_file()


# ------------------------------------------------------------------------------------------- bad input


def test_prior_without_or_with_an_unconverted_vqvae_is_refused(tmp_path):
    src = FIXTURE / "official_prior_full.ckpt"
    with pytest.raises(ConfigError, match="needs --first-stage.*kinema convert videogpt_vqvae"):
        convert("videogpt_prior", src, tmp_path / "a")
    with pytest.raises(ConfigError, match="is a file.*kinema convert videogpt_vqvae"):
        convert("videogpt_prior", src, tmp_path / "b", first_stage=FIXTURE / "official_vqvae.ckpt")
    with pytest.raises(ConfigError, match="convert the VQ-VAE"):
        convert("videogpt_prior", src, tmp_path / "c", first_stage=tmp_path)


def test_prior_on_another_vqvae_is_refused(vq_dir, tmp_path):
    other = tmp_path / "other_vq"
    shutil.copytree(vq_dir, other)
    state = load_file(other / "model.safetensors")
    state["codebook.embeddings"] = state["codebook.embeddings"] + 1
    from safetensors.torch import save_file

    save_file(state, other / "model.safetensors", metadata={"step": "0"})
    from kinema.runs import write_manifest

    write_manifest(other)  # a sound folder of another VQ-VAE, as its own conversion would write it
    with pytest.raises(ConfigError, match="not the VQ-VAE this transformer was trained on.*codebook.embeddings"):
        convert("videogpt_prior", FIXTURE / "official_prior_full.ckpt", tmp_path / "p", first_stage=other)


def test_wrong_family_is_refused(vq_dir, tmp_path):
    with pytest.raises(CheckpointError, match="not a VideoGPT VQ-VAE checkpoint.*look like a VideoGPT transformer.*videogpt_prior"):
        convert("videogpt_vqvae", FIXTURE / "official_prior_full.ckpt", tmp_path / "a")
    with pytest.raises(CheckpointError, match="not a VideoGPT transformer checkpoint.*lack.*look like a VideoGPT VQ-VAE.*videogpt_vqvae"):
        convert("videogpt_prior", FIXTURE / "official_vqvae.ckpt", tmp_path / "b", first_stage=vq_dir)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"args": argparse.Namespace(lr=1)}},
               tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="lack embedding_dim.*no VideoGPT model"):
        convert("videogpt_vqvae", tmp_path / "other.ckpt", tmp_path / "c")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a PyTorch Lightning checkpoint"):
        convert("videogpt_vqvae", tmp_path / "plain.pt", tmp_path / "d")


def test_damaged_file_is_refused(tmp_path):
    data = (FIXTURE / "official_vqvae.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        convert("videogpt_vqvae", tmp_path / "cut.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Re-save an official checkpoint after ``edit(ckpt)`` (loaded with the full unpickler: the test's own file)."""
    import sys
    import types

    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")  # the class key of 'callbacks'
    module.ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": module.__name__})
    parsing = types.ModuleType("pytorch_lightning.utilities.parsing")
    parsing.AttributeDict = type("AttributeDict", (dict,), {"__module__": parsing.__name__})
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.utilities")
    saved = {k: sys.modules.get(k) for k in (*names, module.__name__, parsing.__name__)}
    sys.modules.update({**{k: types.ModuleType(k) for k in names}, module.__name__: module, parsing.__name__: parsing})
    try:
        ckpt = torch.load(src, weights_only=False)
        edit(ckpt)
        torch.save(ckpt, dst)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return dst


def test_hyper_parameters_as_a_lightning_attribute_dict(tmp_path):
    """Some Lightning versions pickle hparams as their AttributeDict (a dict subclass): read as an inert record."""
    import sys

    def edit(c):
        c["hyper_parameters"] = sys.modules["pytorch_lightning.utilities.parsing"].AttributeDict(c["hyper_parameters"])

    src = _rewrite(FIXTURE / "official_vqvae.ckpt", tmp_path / "ad.ckpt", edit)
    model = load(convert("videogpt_vqvae", src, tmp_path / "out"))[0]
    assert model.config.downsample == [1, 4, 4] and model.config.codebook_size == 32


def test_unknown_hyper_parameter_is_refused_by_name(tmp_path):
    src = _rewrite(FIXTURE / "official_vqvae.ckpt", tmp_path / "x.ckpt",
                   lambda c: setattr(c["hyper_parameters"]["args"], "codebook_beta", 0.5))
    with pytest.raises(ConfigError, match="hyper-parameter 'codebook_beta'"):
        convert("videogpt_vqvae", src, tmp_path / "out")
    # the known non-model settings are kept in converted.json, not dropped silently
    out = convert("videogpt_vqvae", FIXTURE / "official_vqvae.ckpt", tmp_path / "ok")
    import json

    recorded = json.loads((out / "converted.json").read_text())
    assert recorded["not_model_settings"]["gradient_clip_val"] == 0.0
    assert recorded["hyper_parameters"]["downsample"] == [1, 4, 4]


class _Planted:
    def __reduce__(self):
        return (exec, ("open('/tmp/kinema_videogpt_planted', 'w').write('ran')",))


def test_pickle_wanting_a_class_outside_the_allow_list_is_never_run(tmp_path):
    planted = Path("/tmp/kinema_videogpt_planted")
    planted.unlink(missing_ok=True)
    src = _rewrite(FIXTURE / "official_vqvae.ckpt", tmp_path / "evil.ckpt",
                   lambda c: c.__setitem__("hyper_parameters", {"args": c["hyper_parameters"]["args"], "x": _Planted()}))
    with pytest.raises(UnsafePickleError, match="wants (__builtin__|builtins).exec"):
        convert("videogpt_vqvae", src, tmp_path / "out")
    assert not planted.exists()
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"state_dict": {}, "hyper_parameters": {"args": _Planted()}}, f)
    with pytest.raises(UnsafePickleError, match="wants (__builtin__|builtins).exec"):
        convert("videogpt_vqvae", tmp_path / "evil.pkl", tmp_path / "out2")
    assert not planted.exists()
