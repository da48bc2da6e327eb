"""kinema.foreign: authors' pickles are read as data; nothing in a file is ever imported or run."""

import argparse
import os
import pickle

import pytest
import torch

from kinema.errors import CheckpointError
from kinema.foreign import Inert, UnsafePickleError, load_foreign, module_state_dict


class _WritesAFile:
    """A pickle that runs ``os.system`` when loaded the ordinary way."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_planted_code_is_refused_and_never_run(tmp_path, writer):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.ones(2)}, "hook": _WritesAFile(target)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(UnsafePickleError, match=r"system.*outside the allow-list"):
        load_foreign(path, inert=["argparse.Namespace", "torch.nn.modules.*"])
    assert not target.exists()


def test_lightning_style_checkpoint_namespace_is_inert(tmp_path):
    path = tmp_path / "vqvae.ckpt"
    torch.save({"state_dict": {"codebook.embeddings": torch.randn(4, 3)},
                "hyper_parameters": {"args": argparse.Namespace(n_codes=4, embedding_dim=3)}}, path)
    with pytest.raises(UnsafePickleError, match="argparse.Namespace"):  # not allowed unless the converter says so
        load_foreign(path)
    loaded = load_foreign(path, inert=["argparse.Namespace"])
    args = loaded["hyper_parameters"]["args"]
    assert isinstance(args, Inert) and args.class_path == "argparse.Namespace"
    assert args.attributes == {"n_codes": 4, "embedding_dim": 3}
    assert loaded["state_dict"]["codebook.embeddings"].shape == (4, 3)


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_pickled_module_gives_its_state_dict(tmp_path, writer):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.LSTM(4, 5))
    path = tmp_path / "model.pth"
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"encoder": module}))
    else:
        torch.save({"encoder": module}, path)
    record = load_foreign(path, inert=["torch.nn.modules.*"])["encoder"]
    state = module_state_dict(record)
    expected = module.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_truncated_and_missing_files_name_the_problem(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.randn(64, 64)}, path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: 200])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_foreign(cut)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_foreign(tmp_path / "nope.pth")


def test_convert_unknown_kind_lists_the_known_ones(tmp_path):
    from kinema.registry import convert

    with pytest.raises(Exception, match="unknown convert kind 'nope'.*i3d"):
        convert("nope", tmp_path / "x", tmp_path / "out")


def test_convert_never_overwrites_a_folder_it_did_not_write(tmp_path):
    pytest.importorskip("gpytorch")
    from pathlib import Path

    from kinema.api import convert

    source = Path(__file__).parent / "fixtures" / "parity" / "dvg" / "model.pth"
    precious = tmp_path / "my_run"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="exists and is not a converted checkpoint"):
        convert("dvg", source, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no half-written copy left
    from safetensors.torch import load_file

    out = convert("dvg", source, tmp_path / "converted")
    first = load_file(out / "model.safetensors")
    assert convert("dvg", source, out) == out  # re-converting into its own folder replaces it
    again = load_file(out / "model.safetensors")  # (tensors compared: safetensors' header order varies)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)
