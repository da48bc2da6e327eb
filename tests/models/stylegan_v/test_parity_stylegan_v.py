"""StyleGAN-V: the authors' network snapshot (tests/fixtures/parity/stylegan_v, written by the official code at
3fecd69, see GENERATE.md there) converts with ``kinema convert stylegan_v`` and gives the official outputs."""

from __future__ import annotations

import copy
import gzip
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kinema
from kinema.errors import CheckpointError
from kinema.foreign import UnsafePickleError, load_foreign
from kinema.models.stylegan_v import convert as sgv_convert
from kinema.registry import convert

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "stylegan_v"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sgv") / "network-snapshot-000000.pkl"
    path.write_bytes(gzip.decompress((FIXTURE / "network-snapshot-000000.pkl.gz").read_bytes()))
    return path


@pytest.fixture(scope="module")
def converted(snapshot, tmp_path_factory) -> Path:
    return convert("stylegan_v", snapshot, tmp_path_factory.mktemp("sgv_out") / "ckpt")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def test_outputs_match_the_official_code(converted):
    x, theirs = load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")
    model_g, _ = kinema.load(converted, ema=False)
    model_ema, config = kinema.load(converted, ema=True)
    assert config.model.resolution == 16 and config.model.channel_base == 64 and config.model.motion_kernel == 3
    noise = model_ema.join_noise(x["z"], x["motion_z"])
    with torch.no_grad():
        ours = {
            "motion_v": model_ema.generator.motion(x["motion_z"], x["t"]),
            "video_G": model_g.synthesize(noise, x["t"]),
            "video_G_ema": model_ema.synthesize(noise, x["t"]),
            "video_G_ema_psi0.7": model_ema.synthesize(noise, x["t"], truncation_psi=0.7),
            "d_clips": model_ema.synthesize(noise, x["d_t"]),
            "D_logits_fake": model_ema.discriminator(theirs["d_clips"], x["d_t"]),
            "D_logits_random": model_ema.discriminator(x["d_random"], x["d_t"]),
        }
    assert set(ours) == set(theirs)
    for name, ref in theirs.items():
        assert ours[name].shape == ref.shape, name
        assert _rel(ours[name], ref) <= 1e-5, (name, _rel(ours[name], ref))
    # G and G_ema are different networks in the snapshot: the EMA weights are the ones kinema.load uses
    assert _rel(theirs["video_G"], theirs["video_G_ema"]) > 1e-3


def test_cli_convert_then_sample(snapshot, tmp_path):
    from kinema.cli import main

    out = tmp_path / "ckpt"
    assert main(["convert", "stylegan_v", str(snapshot), str(out)]) in (0, None)
    assert {"config.json", "model.safetensors", "ema.safetensors", "converted.json"} <= {p.name for p in out.iterdir()}
    paths = kinema.api.sample(out, tmp_path / "samples.gif", num=2, seed=1, device="cpu", t_start=0.0, t_end=3.0,
                              frames=4)
    assert paths and all(p.is_file() for p in paths)


# --------------------------------------------------------------------------- bad input


def test_another_family_is_refused(tmp_path):
    path = tmp_path / "videogpt.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {}}, path)
    with pytest.raises(CheckpointError, match=r"expected a StyleGAN-V network snapshot.*found \['hyper_parameters', "
                                              r"'state_dict'\]"):
        convert("stylegan_v", path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _reconstruct_persistent_obj(meta):  # stands in for torch_utils.persistence's; never called by kinema
    raise AssertionError("kinema must not call the reconstructor")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class _Persistent:
    """A StyleGAN2-ADA persistent record as torch_utils.persistence pickles it, built without its code."""

    def __init__(self, class_name: str, source: str):
        self.meta = {"type": "class", "version": 4, "module_src": source, "class_name": class_name, "state": {}}

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


def test_stylegan2_ada_snapshot_is_refused(tmp_path, monkeypatch):
    module = types.ModuleType("torch_utils.persistence")
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    src = "class Generator: pass  # StyleGAN2-ADA networks.py\nclass Discriminator: pass\n"
    path = tmp_path / "stylegan2-ada.pkl"
    path.write_bytes(pickle.dumps({"G": _Persistent("Generator", src), "D": _Persistent("Discriminator", src),
                                   "G_ema": _Persistent("Generator", src)}))
    with pytest.raises(CheckpointError, match=r"no MotionMappingNetwork.*not StyleGAN-V"):
        convert("stylegan_v", path, tmp_path / "out")


def test_damaged_file_is_refused(snapshot, tmp_path):
    path = tmp_path / "truncated.pkl"
    path.write_bytes(snapshot.read_bytes()[: snapshot.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        convert("stylegan_v", path, tmp_path / "out")


class _WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_class_outside_the_allow_list_is_named_and_never_run(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": _WritesAFile(target), "D": None, "G_ema": None}))
    with pytest.raises(UnsafePickleError, match=r"wants (posix|nt|os)\.system, which is outside the allow-list"):
        convert("stylegan_v", path, tmp_path / "out")
    assert not target.exists()


@pytest.fixture()
def tampered(snapshot, monkeypatch):
    """The fixture as load_foreign reads it, for editing one hyper-parameter; the converter then reads it."""
    data = load_foreign(snapshot, inert=sgv_convert.INERT)

    def edit(fn):
        fn(data)
        monkeypatch.setattr(sgv_convert, "load_foreign", lambda *a, **k: data)

    return edit


def _generator_config(data) -> dict:
    return data["G"].state["_init_kwargs"]["cfg"].attributes["_content"]


def test_unknown_constructor_argument_is_named(tampered, snapshot, tmp_path):
    tampered(lambda data: data["G"].state["_init_kwargs"].__setitem__("style_mixing", 0.9))
    with pytest.raises(CheckpointError, match=r"G's constructor arguments has style_mixing, which .* does not know"):
        convert("stylegan_v", snapshot, tmp_path / "out")


def test_unknown_config_key_is_named(tampered, snapshot, tmp_path):
    def add(data):
        _generator_config(data)["motion"].attributes["_content"]["motion_dropout"] = 0.5

    tampered(add)
    with pytest.raises(CheckpointError, match=r"model.generator.motion has motion_dropout"):
        convert("stylegan_v", snapshot, tmp_path / "out")


def test_unsupported_value_is_named(tampered, snapshot, tmp_path):
    tampered(lambda data: _generator_config(data)["use_noise"].attributes.__setitem__("_val", True))
    with pytest.raises(CheckpointError, match=r"model.generator.use_noise = True"):
        convert("stylegan_v", snapshot, tmp_path / "out")


def test_interpolations_are_resolved_against_the_pickled_root(snapshot):
    data = load_foreign(snapshot, inert=sgv_convert.INERT)
    cfg = sgv_convert._Config(data["G"].state["_init_kwargs"]["cfg"], "fixture")
    assert cfg.path == ["model", "generator"]
    assert _generator_config(data)["sampling"].attributes["_val"] == "${sampling}"
    assert cfg.node("sampling", "max_num_frames") == 16  # ${sampling} -> ${dataset.max_num_frames}
    assert cfg.node("motion", "motion_z_distance") == 4  # ${model.generator.time_enc.min_period_len}
    config, _ = sgv_convert.read_config(data["G"], data["D"], "fixture")
    assert (config.max_num_frames, config.motion_z_distance, config.concat_res) == (16, 4, 8)
    assert copy.deepcopy(config) == config


def test_missing_config_value_is_named(tampered, snapshot, tmp_path):
    tampered(lambda data: _generator_config(data)["time_enc"].attributes["_content"].pop("dim"))
    with pytest.raises(CheckpointError, match=r"config has no model.generator.time_enc.dim"):
        convert("stylegan_v", snapshot, tmp_path / "out")
