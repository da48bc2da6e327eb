"""kinema.data.digits: moving handwritten digits (deterministic and stochastic) and their ground truth."""

import importlib.util
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import kinema.data.digits as digits
from kinema.data import SYNTHETIC_FAMILIES, BouncingShapes, MovingDigits, MovingDigitsStochastic, build_dataset

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="moving_digits needs scikit-learn: pip install scikit-learn")


@needs_sklearn
def test_glyphs_are_sklearn_digits():
    images, labels = digits.load_digit_glyphs()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32 and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 1 and set(labels.tolist()) == set(range(10))
    assert digits.load_digit_glyphs()[0] is images  # cached for the process


@needs_sklearn
@pytest.mark.parametrize("cls", [MovingDigits, MovingDigitsStochastic])
def test_determinism_per_seed_and_index(cls):
    a, b = cls(6, 8, 32, 32, seed=3), cls(6, 8, 32, 32, seed=3)
    for i in reversed(range(6)):  # access order must not matter
        assert torch.equal(a[i], b[i])
        assert np.array_equal(a.ground_truth(i)["positions"], b.ground_truth(i)["positions"])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], cls(6, 8, 32, 32, seed=4)[0])
    # The two families with the same seed are independent streams.
    other = MovingDigitsStochastic if cls is MovingDigits else MovingDigits
    assert not torch.equal(a[0], other(6, 8, 32, 32, seed=3)[0])


@needs_sklearn
def test_clip_format():
    ds = MovingDigits(4, 8, 32, 40, seed=0)
    x = ds[0]
    assert x.shape == (3, 8, 32, 40) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # greyscale on three channels
    gt = ds.ground_truth(0)
    assert np.allclose(x.min().item(), gt["background"][0], atol=1e-6)  # dark background ...
    assert x.max().item() > 0.5  # ... light digits


@needs_sklearn
def test_ground_truth_matches_rendering():
    """The gt position is the digit's intensity-weighted centroid, in every frame; its extents are the
    half-intensity outline; it never leaves its walls."""
    t, h, w = 10, 48, 48
    ds = MovingDigits(12, t, h, w, seed=0, num_digits=1)
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    for i in range(len(ds)):
        gt, video = ds.ground_truth(i), ds[i].numpy()[0]  # (T, H, W)
        ink = video - gt["background"][0]
        mass = ink.sum(axis=(1, 2))
        centroid = np.stack([(ink * ys).sum(axis=(1, 2)) / mass, (ink * xs).sum(axis=(1, 2)) / mass], 1)
        np.testing.assert_allclose(centroid, gt["positions"][0], atol=0.1)
        up, down, left, right = gt["extents"][0]
        level = gt["background"][0] + 0.5 * (gt["colours"][0, 0] - gt["background"][0])
        for f in (0, t - 1):
            rows, cols = np.nonzero(video[f] >= level)
            y, x = gt["positions"][0, f]
            # Rendered at sub-pixel offsets, the thresholded outline is within a pixel of the glyph's.
            assert abs((y - rows.min() + 0.5) - up) <= 1.0 and abs((rows.max() - y + 0.5) - down) <= 1.0
            assert abs((x - cols.min() + 0.5) - left) <= 1.0 and abs((cols.max() - x + 0.5) - right) <= 1.0
        pos = gt["positions"][0]
        assert np.all(pos[:, 0] >= up - 1e-9) and np.all(pos[:, 0] <= h - 1 - down + 1e-9)
        assert np.all(pos[:, 1] >= left - 1e-9) and np.all(pos[:, 1] <= w - 1 - right + 1e-9)
        assert 0 <= gt["digits"][0] <= 9 and gt["glyphs"].shape == (1, gt["sizes"][0], gt["sizes"][0])
        assert gt["digits"][0] == digits.load_digit_glyphs()[1][gt["digit_indices"][0]]


@needs_sklearn
@pytest.mark.parametrize("cls", [BouncingShapes, MovingDigits])
def test_constant_velocity_with_bounces(cls):
    """Both deterministic families expose the same motion keys with the same meaning: away from walls
    ``positions[t+1] == positions[t] + velocities[t]``; a bounce flips one component, keeps the speed."""
    ds = cls(16, 24, 32, 32, seed=0)
    bounced = 0
    for i in range(len(ds)):
        gt = ds.ground_truth(i)
        pos, vel = gt["positions"], gt["velocities"]
        assert pos.shape == vel.shape == (len(pos), 24, 2)
        same = np.isclose(vel[:, 1:], vel[:, :-1])
        step = pos[:, 1:] - pos[:, :-1]
        assert np.allclose(step[same], vel[:, :-1][same])
        assert np.allclose(vel[:, 1:][~same], -vel[:, :-1][~same])
        bounced += (~same).sum()
        if cls is MovingDigits:
            assert not gt["direction_changes"].any() and 1 <= len(pos) <= 2
    assert bounced > 0


@needs_sklearn
def test_stochastic_variant_changes_direction():
    t = 16
    ds = MovingDigitsStochastic(40, t, 32, 32, seed=0, change_probability=0.2)
    changes = steps = redrawn = 0
    for i in range(len(ds)):
        gt = ds.ground_truth(i)
        vel, chg = gt["velocities"], gt["direction_changes"]
        assert chg.shape == vel.shape[:2] and not chg[:, 0].any()
        speed = np.linalg.norm(vel, axis=-1)
        np.testing.assert_allclose(speed, speed[:, :1].repeat(t, 1))  # the speed is kept
        # Where nothing was redrawn, the velocity is the previous one or a wall flip of it.
        prev, cur = vel[:, :-1], vel[:, 1:]
        kept = np.all(np.isclose(np.abs(cur), np.abs(prev)), axis=-1)
        assert np.all(kept | chg[:, 1:])
        redrawn += (~kept & chg[:, 1:]).sum()
        changes, steps = changes + chg[:, 1:].sum(), steps + chg[:, 1:].size
    assert 0.12 < changes / steps < 0.28  # about change_probability
    assert redrawn > 0.9 * changes  # a new direction differs from the old one (almost surely)
    assert not any(MovingDigits(40, t, 32, 32, seed=0).ground_truth(i)["direction_changes"].any() for i in range(5))


@needs_sklearn
def test_registered_and_built_by_config():
    for family, cls in (("moving_digits", MovingDigits), ("moving_digits_stochastic", MovingDigitsStochastic)):
        assert SYNTHETIC_FAMILIES[family] is cls
        cfg = SimpleNamespace(source="synthetic", family=family, num_clips=5)
        ds = build_dataset(cfg, frames=6, height=24, width=24, seed=2)
        assert type(ds) is cls and len(ds) == 5 and ds[4].shape == (3, 6, 24, 24)
        assert torch.equal(ds[1], cls(5, 6, 24, 24, seed=2)[1])


@needs_sklearn
@pytest.mark.parametrize("kwargs, match", [
    ({"digit_size": 0.9}, "digit_size"), ({"digit_size": 0}, "digit_size"), ({"num_digits": 0}, "num_digits"),
    ({"speed": (0.1, 0.05)}, "speed"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MovingDigits(2, 4, 32, 32, **kwargs)
    with pytest.raises(ValueError, match="change_probability"):
        MovingDigitsStochastic(2, 4, 32, 32, change_probability=1.5)


def test_missing_sklearn_names_the_fix(monkeypatch):
    monkeypatch.setattr(digits, "_GLYPHS", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        MovingDigits(2, 4, 32, 32)
