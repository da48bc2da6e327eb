"""C3D (Inception Score classifier): shapes, Chainer pooling, weight conversion, preprocessing."""

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from kinema.metrics.networks import c3d
from kinema.metrics.networks.c3d import (
    C3D,
    chainer_pool_size,
    convert_c3d,
    expected_shapes,
    load_c3d,
    load_mean_clip,
    preprocess_for_c3d,
)
from kinema.metrics.networks.weights import WeightsError, load_weights, save_weights

# The published network's parameters (Chainer npz conv1a/W ... fc8/b), written out by hand.
PUBLISHED = {
    "conv1a": (64, 3, 3, 3, 3), "conv2a": (128, 64, 3, 3, 3),
    "conv3a": (256, 128, 3, 3, 3), "conv3b": (256, 256, 3, 3, 3),
    "conv4a": (512, 256, 3, 3, 3), "conv4b": (512, 512, 3, 3, 3),
    "conv5a": (512, 512, 3, 3, 3), "conv5b": (512, 512, 3, 3, 3),
    "fc6": (4096, 8192), "fc7": (4096, 4096), "fc8": (101, 4096),
}
PUBLISHED_STATE = {**{f"{k}.weight": s for k, s in PUBLISHED.items()},
                   **{f"{k}.bias": (s[0],) for k, s in PUBLISHED.items()}}


def chainer_max_pool(x: np.ndarray, k, s) -> np.ndarray:
    """Chainer ``max_pooling_nd(cover_all=True)`` on (N, C, *spatial): pad the end with -inf."""
    out = [chainer_pool_size(n, kk, ss) for n, kk, ss in zip(x.shape[2:], k, s)]
    padded = np.full(x.shape[:2] + tuple((o - 1) * ss + kk for o, kk, ss in zip(out, k, s)), -np.inf)
    padded[(...,) + tuple(slice(0, n) for n in x.shape[2:])] = x
    y = np.empty(x.shape[:2] + tuple(out))
    for idx in np.ndindex(*out):
        window = tuple(slice(i * ss, i * ss + kk) for i, kk, ss in zip(idx, k, s))
        y[(...,) + idx] = padded[(...,) + window].max(axis=(-3, -2, -1))
    return y


def test_chainer_pool_size_formula():
    for n in range(1, 20):
        assert chainer_pool_size(n, 2, 2) == (int(np.ceil((n - 2) / 2)) + 1 if n >= 2 else 1)
    # the sizes in the network: T 16 -> 8 -> 4 -> 2 -> 1, H/W 112 -> 56 -> 28 -> 14 -> 7 -> 4
    assert [chainer_pool_size(n, 2, 2) for n in (16, 8, 4, 2, 112, 56, 28, 14, 7)] == [8, 4, 2, 1, 56, 28, 14, 7, 4]


@pytest.mark.parametrize("shape", [(2, 7, 7), (1, 5, 3), (3, 1, 4), (16, 9, 11)])
def test_pools_match_chainer_cover_all(shape):
    with torch.device("meta"):  # the pools hold no parameters, so a meta-built net's pools run on CPU
        net = C3D()
    x = torch.randn(1, 2, *shape, dtype=torch.float64, device="cpu")
    for module, k in ((net.pool1, (1, 2, 2)), (net.pool, (2, 2, 2))):
        np.testing.assert_array_equal(module(x).numpy(), chainer_max_pool(x.numpy(), k, k))


def test_state_dict_has_the_published_keys_and_shapes():
    assert expected_shapes() == PUBLISHED_STATE


def test_forward_at_real_size_gives_probabilities():
    torch.manual_seed(0)
    model = C3D().eval()
    x = torch.randn(1, 3, 16, 112, 112) * 50
    seen = []  # the last output of the shared 2x2x2 pool is pool5
    model.pool.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        probs = model(x)
    pool5 = seen[-1]
    assert pool5.shape == (1, 512, 1, 4, 4)
    assert probs.shape == (1, 101)
    assert torch.allclose(probs.sum(-1), torch.ones(1), atol=1e-5) and (probs >= 0).all()
    # fc6 reads the pool5 map in (C, T, H, W) order (Caffe / Chainer): check against numpy's C order
    w6, b6 = model.fc6.weight.detach().numpy(), model.fc6.bias.detach().numpy()
    flat = pool5.numpy().reshape(1, 512 * 1 * 4 * 4, order="C")
    h = np.maximum(flat @ w6.T + b6, 0)
    with torch.no_grad():
        ref = model.fc8(torch.relu(model.fc7(torch.from_numpy(h).float())))
        assert torch.allclose(model.classify(pool5), ref, atol=1e-4)
    with pytest.raises(ValueError, match="preprocess_for_c3d"):
        model(torch.zeros(1, 3, 16, 64, 64))


def test_published_key_set_loads_with_no_missing_or_unexpected_keys(tmp_path, unverified_metric_weights):
    state = {k: torch.zeros(shape) for k, shape in PUBLISHED_STATE.items()}
    state["fc8.bias"] = torch.arange(101.0)
    path = save_weights(state, tmp_path / "c3d.safetensors", "c3d")
    model = load_c3d(path)  # load_weights is strict: any missing / unexpected / reshaped key raises
    assert not model.training
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == PUBLISHED_STATE
    assert torch.equal(model.fc8.bias, state["fc8.bias"]) and not model.conv1a.weight.any()
    with pytest.raises(WeightsError, match="c3d weights, but i3d"):
        load_weights(torch.nn.Linear(1, 1), path, "i3d")


def test_convert_round_trip_of_chainer_npz(tmp_path, monkeypatch):
    # The real sizes take 300 MB and seconds to write; the converter reads its target shapes from
    # expected_shapes(), so shrink those and keep the key layout (the full-size shapes are pinned
    # by the tests above).
    small = {k: (2,) + s[1:2] if len(s) > 1 else (2,) for k, s in PUBLISHED_STATE.items()}
    monkeypatch.setattr(c3d, "expected_shapes", lambda: small)
    arrays = {}
    for i, name in enumerate(PUBLISHED):
        w = np.arange(np.prod(small[f"{name}.weight"]), dtype=np.float64).reshape(small[f"{name}.weight"]) + 100 * i
        arrays[f"{name}/W"], arrays[f"{name}/b"] = w, np.array([i, -i], dtype=np.float64)
    np.savez(tmp_path / "c3d.npz", **arrays, **{"pre/W": np.zeros(3)})
    out = convert_c3d(tmp_path / "c3d.npz", tmp_path / "c3d.safetensors")
    state = load_file(str(out))
    assert sorted(state) == sorted(PUBLISHED_STATE)
    for name in PUBLISHED:
        assert state[f"{name}.weight"].dtype == torch.float32
        np.testing.assert_array_equal(state[f"{name}.weight"].numpy(), arrays[f"{name}/W"])
        np.testing.assert_array_equal(state[f"{name}.bias"].numpy(), arrays[f"{name}/b"])
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["kinema_network"] == "c3d"


def test_key_renaming_prefix_styles_and_errors():
    small = {f"{n}/{p}": np.zeros(1) for n in PUBLISHED for p in ("W", "b")}
    assert sorted(c3d._rename_c3d_keys(small)) == sorted(PUBLISHED_STATE)
    prefixed = {f"predictor/{k}": v for k, v in small.items()} | {"predictor/pre/W": np.zeros(1), "gen/x": np.zeros(1)}
    assert sorted(c3d._rename_c3d_keys(prefixed)) == sorted(PUBLISHED_STATE)
    torch_style = {f"{k}": np.zeros(1) for k in PUBLISHED_STATE}
    assert sorted(c3d._rename_c3d_keys(torch_style)) == sorted(PUBLISHED_STATE)
    with pytest.raises(WeightsError, match="missing fc8.bias"):
        c3d._rename_c3d_keys({k: v for k, v in small.items() if k != "fc8/b"})
    with pytest.raises(WeightsError, match="batch norm"):
        c3d._rename_c3d_keys(small | {"bn1a/gamma": np.zeros(1)})
    with pytest.raises(WeightsError, match="no conv1a weights"):
        c3d._rename_c3d_keys({"w": np.zeros(1)})


def test_convert_rejects_wrong_shapes_and_bad_files(tmp_path):
    arrays = {f"{n}/{p}": np.zeros(1, np.float32) for n in PUBLISHED for p in ("W", "b")}
    np.savez(tmp_path / "small.npz", **arrays)
    with pytest.raises(WeightsError, match=r"conv1a.weight has shape \(1,\)"):
        convert_c3d(tmp_path / "small.npz", tmp_path / "out.safetensors")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not a readable .npz"):
        convert_c3d(tmp_path / "junk.npz", tmp_path / "out.safetensors")
    with pytest.raises(WeightsError, match="does not exist"):
        convert_c3d(tmp_path / "nope.npz", tmp_path / "out.safetensors")
    with pytest.raises(WeightsError, match="kinema convert c3d"):
        load_c3d(tmp_path / "nope.safetensors")


# --- preprocessing ------------------------------------------------------------------------------

def mean_ramp() -> torch.Tensor:
    """A BGR mean clip whose value says where it was read: 1000 c + 100 t + ... distinct per (h, w)."""
    c, t, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (3, 16, 128, 171)), indexing="ij")
    return c * 1000 + t * 10 + h * 0.5 + w * 0.001


@pytest.mark.parametrize("protocol", ["tganv2", "tgan"])
def test_preprocess_shapes_and_constant_videos(protocol):
    mean = mean_ramp()
    rgb = torch.tensor([-0.5, 0.25, 1.0]).view(1, 3, 1, 1, 1)
    videos = rgb.expand(2, 3, 16, 48, 80).clone()
    x = preprocess_for_c3d(videos, protocol, mean)
    assert x.shape == (2, 3, 16, 112, 112) and x.dtype == torch.float32
    crop = mean[:, :, 8:120, 8:120] if protocol == "tganv2" else mean[:, :, 8:120, 29:141]
    bgr = rgb.flip(1)[0]  # (3, 1, 1, 1)
    expected = (bgr + 1) * 128 - crop  # the net sees pixel - mean, BGR
    torch.testing.assert_close(x, expected.expand_as(x), atol=1e-3, rtol=0)


def test_tganv2_resize_aligns_corners_like_chainer():
    videos = torch.rand(1, 3, 16, 7, 9) * 2 - 1
    zero_mean = torch.full((3, 16, 128, 171), 128.0)  # makes the shift 0: output = x * 128 in BGR
    x = preprocess_for_c3d(videos, "tganv2", zero_mean)
    bgr = videos.flip(1) * 128
    for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1)):  # align_corners=True keeps the corner pixels
        torch.testing.assert_close(x[..., i, j], bgr[..., i, j])


def test_preprocess_rejects_bad_inputs(tmp_path):
    mean = torch.zeros(3, 16, 128, 171)
    with pytest.raises(ValueError, match=r"pass floats in \[-1, 1\]"):
        preprocess_for_c3d(torch.zeros(1, 3, 16, 64, 64, dtype=torch.uint8), "tganv2", mean)
    with pytest.raises(ValueError, match=r"pass floats in \[-1, 1\]"):
        preprocess_for_c3d(torch.full((1, 3, 16, 64, 64), 255.0), "tgan", mean)
    with pytest.raises(ValueError, match=r"\(\*, 3, 16, \*, \*\)"):
        preprocess_for_c3d(torch.zeros(1, 3, 8, 64, 64), "tganv2", mean)
    with pytest.raises(ValueError, match="unknown C3D preprocessing protocol"):
        preprocess_for_c3d(torch.zeros(1, 3, 16, 64, 64), "fvd", mean)
    with pytest.raises(ValueError, match=r"mean clip must have shape \(3, 16, 128, 171\)"):
        preprocess_for_c3d(torch.zeros(1, 3, 16, 64, 64), "tganv2", torch.zeros(3, 16, 112, 112))


def test_load_mean_clip_formats(tmp_path):
    mean = np.random.default_rng(0).random((3, 16, 128, 171)).astype(np.float32)
    np.save(tmp_path / "a.npy", mean)
    np.save(tmp_path / "b.npy", mean[None])
    np.savez(tmp_path / "mean2.npz", mean=mean)
    for name in ("a.npy", "b.npy", "mean2.npz"):
        loaded = load_mean_clip(tmp_path / name)
        assert loaded.shape == (3, 16, 128, 171)
        np.testing.assert_array_equal(loaded.numpy(), mean)
    np.save(tmp_path / "bad.npy", mean[:, :, :112, :112])
    with pytest.raises(ValueError, match="mean clip must have shape"):
        load_mean_clip(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="mean2.npz"):
        load_mean_clip(tmp_path / "missing.npy")


def test_c3d_weights_without_a_conversion_record_or_changed_after_it_are_refused(tmp_path, monkeypatch):
    """No published digest of the C3D npz is known here: the record `kinema convert c3d` writes is checked."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    monkeypatch.delenv("KINEMA_UNVERIFIED_METRIC_WEIGHTS", raising=False)
    state = {k: torch.zeros(shape) for k, shape in PUBLISHED_STATE.items()}
    bare = save_weights(state, tmp_path / "bare.safetensors", "c3d")
    with pytest.raises(WeightsError, match="carries no record of a `kinema convert` conversion"):
        load_c3d(bare)
    recorded = save_weights(state, tmp_path / "c3d.safetensors", "c3d", source_sha256="ab" * 32)
    load_c3d(recorded)  # a conversion record that matches its tensors
    with safe_open(str(recorded), framework="pt") as f:
        metadata = f.metadata()
    changed = load_file(recorded)
    changed["fc8.bias"][0] = 1.0
    save_file(changed, str(tmp_path / "changed.safetensors"), metadata=metadata)
    with pytest.raises(WeightsError, match="its tensors changed after `kinema convert` wrote them"):
        load_c3d(tmp_path / "changed.safetensors")
