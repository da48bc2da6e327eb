"""kinema.metrics.networks.inception: FID Inception-v3 architecture, preprocessing, weight conversion.

No real weights are needed: pytorch-fid's published file is imitated by a state dict of the same keys.
"""

import collections
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from kinema.metrics.networks.i3d import resize_bilinear_tf1
from kinema.metrics.networks.inception import (
    BLOCKS,
    PUBLISHED_FILE,
    FIDInceptionV3,
    InceptionE,
    _avg_pool_tf,
    convert_inception,
    load_inception,
    preprocess,
)
from kinema.metrics.networks.weights import WeightsError, save_weights


def _randomise(model: FIDInceptionV3, seed: int = 0) -> FIDInceptionV3:
    # PyTorch's default init shrinks activations to ~1e-8 over 94 layers; He init and random BN
    # statistics keep them O(1), so comparisons of outputs below actually compare something.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("conv.weight") or name == "fc.weight":
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif name.endswith(("running_var", "bn.weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:  # bn.bias, running_mean, fc.bias
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def model():
    return _randomise(FIDInceptionV3())


@pytest.fixture(scope="module")
def published_like():
    """The key set of pytorch-fid's ``fid_inception_v3()`` state dict: ours + BatchNorm2d counters."""
    state = collections.OrderedDict()
    for key, value in _randomise(FIDInceptionV3(), seed=1).state_dict().items():
        state[key] = value.clone()
        if key.endswith(".bn.running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0, dtype=torch.long)
    return state


# --- architecture --------------------------------------------------------------------------------

def test_forward_small_batch_random_weights(model):
    x = torch.rand(2, 3, 64, 64)  # resized to 299 inside
    start = time.perf_counter()
    with torch.no_grad():
        feats = model(x)
    assert time.perf_counter() - start < 3.0
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert feats.abs().mean() > 1e-3  # the randomised net is not dead
    with torch.no_grad():
        logits = model(x, layer="logits")
    assert logits.shape == (2, 1008)
    torch.testing.assert_close(logits, model.fc(feats))


def test_block_shapes_at_299(model):
    with torch.no_grad():
        blocks = model.trunk(torch.rand(1, 3, 299, 299) * 2 - 1, return_blocks=True)
    assert tuple(blocks) == BLOCKS
    shapes = {name: tuple(out.shape[1:]) for name, out in blocks.items()}
    assert shapes == {
        "Conv2d_1a_3x3": (32, 149, 149), "Conv2d_2a_3x3": (32, 147, 147), "Conv2d_2b_3x3": (64, 147, 147),
        "maxpool1": (64, 73, 73), "Conv2d_3b_1x1": (80, 73, 73), "Conv2d_4a_3x3": (192, 71, 71),
        "maxpool2": (192, 35, 35), "Mixed_5b": (256, 35, 35), "Mixed_5c": (288, 35, 35),
        "Mixed_5d": (288, 35, 35), "Mixed_6a": (768, 17, 17), "Mixed_6b": (768, 17, 17),
        "Mixed_6c": (768, 17, 17), "Mixed_6d": (768, 17, 17), "Mixed_6e": (768, 17, 17),
        "Mixed_7a": (1280, 8, 8), "Mixed_7b": (2048, 8, 8), "Mixed_7c": (2048, 8, 8),
    }


def test_parameter_count_and_keys(model):
    # torchvision's inception_v3() has 27,161,264 parameters. pytorch-fid builds it with
    # aux_logits=False and num_classes=1008: minus AuxLogits (conv0 768*128 + 2*128, conv1
    # 128*768*25 + 2*768, fc 768*1000 + 1000 = 3,326,696), minus the 1000-way fc (2,049,000), plus
    # the 1008-way fc (2048*1008 + 1008 = 2,065,392) = 23,850,960; the FID patches add none.
    assert sum(p.numel() for p in model.parameters()) == 23_850_960
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc.")) == 21_785_568
    state = model.state_dict()
    # Inception-v3 has 94 convs: stem 5, 3 x InceptionA 7, B 4, 4 x C 10, D 6, 2 x E 9.
    assert sum(k.endswith(".conv.weight") for k in state) == 94 and len(state) == 94 * 5 + 2
    assert not any("num_batches_tracked" in k or "Aux" in k for k in state)
    for key, shape in {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_1a_3x3.bn.running_var": (32,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1), "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_4.conv.weight": (192, 192, 7, 1), "Mixed_7a.branch7x7x3_4.bn.bias": (192,),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1), "fc.weight": (1008, 2048), "fc.bias": (1008,),
    }.items():
        assert tuple(state[key].shape) == shape, key
    assert not model.training


def test_fid_patches():
    # TF's SAME average pool ignores the padding: the corner of a ones map stays 1 (torchvision: 4/9).
    x = torch.ones(1, 1, 4, 4)
    assert torch.all(_avg_pool_tf(x) == 1)
    assert F.avg_pool2d(x, 3, 1, 1)[0, 0, 0, 0] == pytest.approx(4 / 9)
    # Mixed_7c feeds a 3x3 *max* pool to its pool branch; Mixed_7b the padding-free average.
    net = FIDInceptionV3()
    assert (net.Mixed_7b.pool, net.Mixed_7c.pool) == ("avg", "max")
    block, seen = InceptionE(16, pool="max"), {}
    block.branch_pool.register_forward_hook(lambda m, inp, out: seen.setdefault("in", inp[0]))
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        block(x)
    torch.testing.assert_close(seen["in"], F.max_pool2d(x, 3, 1, 1))
    with pytest.raises(ValueError, match="pool"):
        InceptionE(16, pool="min")


# --- preprocessing and input checks -------------------------------------------------------------

def test_preprocess_torch_is_pytorch_fid():
    x = torch.rand(2, 3, 40, 50)
    expected = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(preprocess(x), expected)
    at_size = torch.rand(1, 3, 299, 299)
    torch.testing.assert_close(preprocess(at_size), 2 * at_size - 1)


def test_preprocess_tf1_is_the_graph():
    u = torch.randint(0, 256, (1, 3, 20, 30)).float()
    out = preprocess(u / 255, resize="tf1")
    expected = (resize_bilinear_tf1(u.permute(0, 2, 3, 1), (299, 299)).permute(0, 3, 1, 2) - 128) / 128
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # TF1's asymmetric map keeps the top-left pixel; the graph's (u - 128) / 128 maps 255 to 127/128.
    torch.testing.assert_close(out[..., 0, 0], (u[..., 0, 0] - 128) / 128, rtol=0, atol=1e-5)
    extremes = preprocess(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 80, 2), resize="tf1")
    assert extremes.min() == -1 and extremes.max() == pytest.approx(127 / 128)
    with pytest.raises(ValueError, match="resize"):
        preprocess(u / 255, resize="pil")


@pytest.mark.parametrize("x, match", [
    (torch.rand(1, 3, 32, 32) * 2 - 1, r"\[0, 1\].*\(x \+ 1\) / 2"),    # kinema's [-1, 1]
    (torch.rand(1, 3, 32, 32) * 255, r"\[0, 1\]"),                       # 0..255 floats
    (torch.full((1, 3, 32, 32), float("nan")), r"\[0, 1\]"),
    (torch.rand(1, 1, 32, 32), r"\(B, 3, H, W\)"),                       # grey
    (torch.rand(1, 4, 32, 32), r"\(B, 3, H, W\)"),                       # RGBA
    (torch.rand(1, 32, 32, 3), "channels-last"),
    (torch.rand(3, 32, 32), r"\(B, 3, H, W\)"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "frame_features"),
])
def test_forward_rejects_bad_input(model, x, match):
    with pytest.raises(ValueError, match=match):
        model(x)


def test_trunk_rejects_tiny_input(model):
    with pytest.raises(ValueError, match="75"):
        model.trunk(torch.zeros(1, 3, 74, 299))
    with pytest.raises(ValueError, match="layer"):
        model.features(torch.zeros(1, 3, 75, 75), layer="mixed")


def test_frame_features(model):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 24, 32, 3), dtype=np.uint8)
    feats = model.frame_features(frames, batch_size=2)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    with torch.no_grad():
        direct = model(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(feats, direct, rtol=1e-4, atol=1e-5)
    tf1 = model.frame_features(torch.from_numpy(frames), batch_size=3, resize="tf1")
    assert tf1.shape == (3, 2048) and not torch.allclose(tf1, feats)
    assert model.frame_features(frames[:1], layer="logits").shape == (1, 1008)
    with pytest.raises(TypeError, match="uint8"):
        model.frame_features(frames.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        model.frame_features(frames[None])
    with pytest.raises(ValueError, match="no frames"):
        model.frame_features(frames[:0])


# --- weights -------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_counters", [True, False])
def test_convert_round_trip(tmp_path, published_like, with_counters, unverified_metric_weights):
    state = published_like if with_counters else collections.OrderedDict(
        (k, v) for k, v in published_like.items() if not k.endswith("num_batches_tracked"))
    assert len(state) == (94 * 6 + 2 if with_counters else 94 * 5 + 2)
    src = tmp_path / "fid_inception.pth"
    torch.save(state, src)
    out = convert_inception(src, tmp_path / "sub" / "inception.safetensors")
    assert out == tmp_path / "sub" / "inception.safetensors"
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["kinema_network"] == "inception"
    start = time.perf_counter()
    loaded = load_inception(out)
    assert time.perf_counter() - start < 2.0
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    reference = FIDInceptionV3()
    reference.load_state_dict({k: v for k, v in state.items() if "num_batches_tracked" not in k})
    x = torch.rand(1, 3, 75, 90)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, layer="logits"), reference(x, layer="logits"), rtol=0, atol=0)


def test_convert_refuses_missing_unexpected_and_misshapen_keys(tmp_path, published_like):
    cases = {
        "missing": ({k: v for k, v in published_like.items() if k != "Mixed_6c.branch7x7_2.bn.running_mean"},
                    r"missing keys \(e\.g\. Mixed_6c\.branch7x7_2\.bn\.running_mean\)"),
        "unexpected": ({**published_like, "AuxLogits.fc.bias": torch.zeros(1000)},
                       r"unexpected keys \(e\.g\. AuxLogits\.fc\.bias\).*torchvision"),
        "shape": ({**published_like, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)},
                  r"fc\.\w+: file \(1000.*network \(1008"),
        "nan": ({**published_like, "fc.bias": torch.full((1008,), float("nan"))}, "non-finite.*fc.bias"),
    }
    for name, (state, match) in cases.items():
        src = tmp_path / f"{name}.pth"
        torch.save(state, src)
        with pytest.raises(WeightsError, match=match):
            convert_inception(src, tmp_path / f"{name}.safetensors")
        assert not (tmp_path / f"{name}.safetensors").exists()


class _Payload:  # a pickled object that a weights_only load must refuse to build
    pass


def test_convert_refuses_bad_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*pytorch-fid"):
        convert_inception(tmp_path / "nope.pth", tmp_path / "out.safetensors")
    src = tmp_path / "object.pth"
    torch.save({"fc.weight": _Payload()}, src)
    with pytest.raises(WeightsError, match="cannot read"):
        convert_inception(src, tmp_path / "out.safetensors")
    src = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], src)
    with pytest.raises(WeightsError, match="not a state dict"):
        convert_inception(src, tmp_path / "out.safetensors")
    # A file under the published name must have the sha256 prefix in that name.
    src = tmp_path / PUBLISHED_FILE
    torch.save({"fc.bias": torch.zeros(1008)}, src)
    with pytest.raises(WeightsError, match="sha256.*6726825d"):
        convert_inception(src, tmp_path / "out.safetensors")


def test_load_refuses_other_networks_and_missing_files(tmp_path):
    other = save_weights({"fc.bias": torch.zeros(1008)}, tmp_path / "c3d.safetensors", "c3d")
    with pytest.raises(WeightsError, match="holds c3d weights"):
        load_inception(other)
    with pytest.raises(WeightsError, match="does not exist"):
        load_inception(tmp_path / "absent.safetensors")
    partial = save_weights({"fc.bias": torch.zeros(1008)}, tmp_path / "partial.safetensors", "inception")
    with pytest.raises(WeightsError, match="missing keys"):
        load_inception(Path(partial))
