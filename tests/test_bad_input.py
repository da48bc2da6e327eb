"""Bad values refused before work, naming the value: Python API argument types, integers past 64 bits, seeds,
and runs whose memory floor cannot fit (including under a cluster's ``ulimit -v``, where it was a segfault)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

import kinema
from kinema import api
from kinema.cli import main


@pytest.mark.parametrize("call, message", [
    (lambda: kinema.load("run", ema="no"), "load(): ema must be bool, got the string 'no'"),
    (lambda: api.train("tganv2_tiny", "out", resume="yes"), "train(): resume must be bool or 'auto', got the string 'yes'"),
    (lambda: api.train("tganv2_tiny", "out", resume="Auto"), "resume must be bool or 'auto'"),
    (lambda: api.evaluate(None, "fvd"), "evaluate(): metrics must be a list of str, got the string 'fvd'"),
    (lambda: api.train("tganv2_tiny", "out", overrides="train.steps=3"), "overrides must be a list of str"),
    (lambda: api.sample("run", "out", num="4"), "sample(): num must be int, got the string '4'"),
    (lambda: api.sample("run", "out", num=True), "num must be int, got True (bool)"),
    (lambda: api.load(3), "load(): path must be str or a path, got 3 (int)"),
    (lambda: api.load("run", device=0), "device must be str"),
    (lambda: api.prepare("a", "b", resolution=(64, "x")), "resolution must be str or a pair of int"),
    (lambda: api.info(None), "info(): path must be str or a path, got None"),
    (lambda: api.load("run", bogus=1), "load(): got an unexpected keyword argument 'bogus'"),
])
def test_the_python_api_refuses_wrong_types_naming_the_argument(call, message):
    with pytest.raises(TypeError) as info:
        call()
    assert message in str(info.value)


@pytest.mark.parametrize("call, message", [
    (lambda: api.sample("run", "out", seed=2**70), "sample(): seed must be in [0, 4,611,686,018,427,387,904]"),
    (lambda: api.sample("run", "out", seed=-1), "seed must be in [0,"),
    (lambda: api.sample("run", "out", num=0), "sample(): num must be in [1,"),
    (lambda: api.evaluate(None, ["fvd"], batch_size=0), "batch_size must be in [1,"),
])
def test_the_python_api_refuses_values_out_of_range(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


@pytest.mark.parametrize("resume", [False, True, "auto"])
def test_the_documented_values_still_pass(tmp_path, resume):
    """``resume`` True / False / "auto", a Path, a tuple for a list (the defaults are tuples), a torch.device."""
    import torch

    with pytest.raises(Exception) as info:  # past the checks: the config file does not exist
        api.plan(str(tmp_path / "missing.toml"), tmp_path / "out", overrides=("train.steps=1",), resume=resume)
    with pytest.raises(Exception) as info:
        api.train(str(tmp_path / "missing.toml"), tmp_path / "out", overrides=("train.steps=1",), resume=resume,
                  device=torch.device("cpu"))
    assert not isinstance(info.value, TypeError) and "missing.toml" in str(info.value)


def test_a_huge_seed_on_the_command_line_is_one_line(capsys, tmp_path):
    assert main(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "s"),
                 "--seed", str(2**70)]) == 2
    assert "seed must be in [0," in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=99999999999999999999", "train.batch_size: 99999999999999999999 is out of range"),
    ("train.seed=-1", "train.seed must be in [0,"),
    ("model.z_dim=100000000", "make the model smaller"),
    ("train.batch_size=100000000", "lower train.batch_size (now 100000000)"),
])
def test_dry_run_refuses_what_a_run_could_not_hold(capsys, override, message):
    assert main(["train", "--config", "tganv2_tiny", "--set", override, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_dry_run_states_the_memory_floor(capsys):
    assert main(["train", "--config", "tganv2_tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# memory: at least" in out and "optimiser state" in out


def test_a_batch_past_the_address_space_limit_is_refused_not_a_segfault(tmp_path):
    """The issue's repro: under ``ulimit -v 8000000`` a batch of 100,000 clips died with SIGSEGV and no message."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8_000_000 * 1024, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-m", "kinema", "--threads", "1", "train", "--config", "tganv2_tiny",
                           "--set", "train.batch_size=100000", "--out", str(tmp_path / "run"), "--no-progress"],
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "address space left under this process's limit, ulimit -v 8000000" in done.stderr
    assert "lower train.batch_size (now 100000)" in done.stderr
    assert not list(Path(tmp_path / "run").glob("checkpoints/*"))


def test_a_pickled_object_as_weights_is_refused_without_advising_weights_only_false(tmp_path):
    import argparse

    import torch

    from kinema.errors import ConfigError
    from kinema.metrics.lpips import LPIPS, LPIPSError
    from kinema.objectives.nuwa import VGG16Features

    path = tmp_path / "weights.pth"
    torch.save({"net.0.weight": torch.zeros(1), "args": argparse.Namespace(a=1)}, path)
    for load, error in [(LPIPS.from_file, LPIPSError), (VGG16Features.from_file, ConfigError)]:
        with pytest.raises(error) as info:
            load(path)
        text = str(info.value)
        assert "it stores the Python object argparse.Namespace, not only tensors" in text, text
        assert "weights_only" not in text and "never runs code" in text
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(LPIPSError, match="cannot read .*empty.pth as a state dict of tensors"):
        LPIPS.from_file(tmp_path / "empty.pth")


def test_a_folder_given_as_i3d_weights_is_named_as_a_folder(tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "i3d.safetensors").write_bytes(b"")
    from kinema.metrics.networks.i3d import load_i3d
    from kinema.metrics.networks.weights import WeightsError

    with pytest.raises(WeightsError, match=r"weights is a folder; pass the converted .safetensors file itself "
                                           r"\(it holds i3d.safetensors\)"):
        load_i3d(tmp_path / "weights")


# --------------------------------------------------------------------------- second adversarial round


@pytest.mark.parametrize("argv, message", [
    (["demo", "run", "--port", "-1"], "--port must be in 0..65535"),  # was an OverflowError traceback
    (["demo", "run", "--port", "70000"], "--port must be in 0..65535"),
    (["sample", "--checkpoint", "run", "--out", ""], "--out is empty; give a path"),  # "" was the current folder
    (["export", "run", ""], "OUT is empty; give a path"),
    (["info", " "], "PATH is empty; give a path"),
    (["train", "--config", "tganv2_tiny", "--dry-run", "--set", "train.steps=3\ntrain.lr=5"],
     "the value spans several lines"),  # the second key was dropped without a word
])
def test_bad_command_lines_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_config_files_odd_but_common(tmp_path, capsys):
    """A byte-order mark (Windows editors) is read as TOML; a base config with a non-table section was an
    AttributeError traceback; `extends = ""` pointed at the current folder."""
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbfextends = \"tganv2_tiny\"\n")
    assert main(["train", "--config", str(tmp_path / "bom.toml"), "--dry-run"]) == 0
    (tmp_path / "base.toml").write_text("model = 3\n")
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[model]\nname = "tganv2"\n')
    assert main(["train", "--config", str(tmp_path / "child.toml"), "--dry-run"]) == 2
    assert "top-level key 'model' is the value 3, not a [section]" in capsys.readouterr().err
    (tmp_path / "empty.toml").write_text('extends = ""\n')
    assert main(["train", "--config", str(tmp_path / "empty.toml"), "--dry-run"]) == 2
    assert "extends must be a config name or path (a non-empty string)" in capsys.readouterr().err


def test_numpy_integers_are_integers_and_a_path_is_not_a_model(tmp_path):
    np = pytest.importorskip("numpy")
    import torch

    run = tmp_path / "run"
    assert main(["train", "--config", "tganv2_tiny", "--out", str(run), "--steps", "1", "--no-progress",
                 "--set", "train.num_samples=1"]) == 0
    model, _ = kinema.load(run)
    assert torch.equal(api.generate(model, num=np.int64(1), seed=np.int32(3)), api.generate(model, num=1, seed=3))
    with pytest.raises(ValueError, match="seed must be in"):
        api.generate(model, num=1, seed=np.int64(-1))
    with pytest.raises(TypeError, match=r"expected a kinema model .*got str \(a path: load it first"):
        api.generate(str(run), num=1)  # was an AttributeError deep inside
    with pytest.raises(ValueError, match="load\\(\\): path is an empty string"):
        kinema.load("")
    from kinema.demo import DemoApp
    from kinema.errors import SamplingError

    with pytest.raises(SamplingError, match="--num 10000000000000: the videos are held in memory"):
        DemoApp(run, num=10**13)  # was accepted, and the first Generate ran the server out of memory
    import http.client
    import threading
    from http.server import ThreadingHTTPServer

    from kinema.demo import make_handler

    app = DemoApp(run, num=1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(app))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for length in ("abc", "-5"):  # a traceback in the server thread / a read that waits for the client
            client = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=20)
            client.putrequest("POST", "/generate")
            client.putheader("Content-Length", length)
            client.endheaders()
            reply = client.getresponse()
            assert reply.status == 400 and b"Content-Length must be a whole number" in reply.read()
    finally:
        server.shutdown()
        app.close()
