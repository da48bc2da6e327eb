"""Kernel MMD (KVD / KID) and Inception Score maths, against closed forms and brute force."""

import numpy as np
import pytest
import torch

from kinema.metrics import kernel
from kinema.metrics.inception_score import inception_score, repeated_inception_score
from kinema.metrics.kernel import (
    kernel_distance,
    kid_subsets,
    mmd2_unbiased,
    polynomial_kernel,
)


def brute_mmd2(x, y):
    """The unbiased estimator written out pair by pair."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


# --- kernel -------------------------------------------------------------------------------------

def test_polynomial_kernel_closed_form():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 1.0], [2.0, 0.0]])
    # (x.y / 2 + 1)^3: x.y = [[1, 2], [1, 0]]
    expected = np.array([[1.5**3, 2.0**3], [1.5**3, 1.0]])
    np.testing.assert_allclose(polynomial_kernel(x, y), expected)
    assert polynomial_kernel(x, y).dtype == np.float64
    np.testing.assert_allclose(polynomial_kernel(x, y, degree=1, gamma=1.0, coef0=0.0), x @ y.T)


def test_mmd2_tiny_example_by_hand():
    # D = 1, k(a, b) = (ab + 1)^3; Kxx off-diagonal 1, Kyy 343, Kxy mean (1 + 1 + 27 + 64) / 4
    assert mmd2_unbiased([[0.0], [1.0]], [[2.0], [3.0]]) == pytest.approx(1 + 343 - 2 * 23.25)


def test_mmd2_matches_brute_force_unequal_sizes_and_blocks(monkeypatch):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((5, 3)) + 0.3
    expected = brute_mmd2(x, y)
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(kernel, "_BLOCK", 2)  # row blocks of 2: diagonal bookkeeping across blocks
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)
    assert mmd2_unbiased(torch.tensor(x, dtype=torch.float64), torch.tensor(y)) == pytest.approx(expected, rel=1e-12)


def test_mmd2_near_zero_for_one_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    same = mmd2_unbiased(x, y)
    assert abs(same) < 0.02
    shifted = [mmd2_unbiased(x, y + s) for s in (0.25, 0.5, 1.0)]
    assert shifted[0] > 5 * abs(same) and shifted[0] < shifted[1] < shifted[2]


def test_kid_subsets_seeded_and_full_subset_equals_all_pairs():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((60, 8)), rng.standard_normal((50, 8)) + 0.5
    a = kid_subsets(x, y, num_subsets=20, subset_size=20, seed=3)
    assert a == kid_subsets(x, y, num_subsets=20, subset_size=20, seed=3)
    assert a != kid_subsets(x, y, num_subsets=20, subset_size=20, seed=4)
    assert a[1] > 0
    # subset_size above both sizes -> min(n) = 50 rows each; with equal sizes the subset is a
    # permutation of all rows, so one subset equals the all-pairs estimate
    mean, std = kid_subsets(x[:50], y, num_subsets=1, subset_size=1000)
    assert mean == pytest.approx(mmd2_unbiased(x[:50], y), rel=1e-10) and std == 0.0


def test_kernel_distance_entry():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    out = kernel_distance(x, y)
    assert out == {"value": mmd2_unbiased(x, y), "std": None}
    out = kernel_distance(x, y, mode="subsets", num_subsets=5, subset_size=10, seed=1)
    assert (out["value"], out["std"]) == kid_subsets(x, y, num_subsets=5, subset_size=10, seed=1)
    with pytest.raises(ValueError, match="unknown kernel-distance mode"):
        kernel_distance(x, y, mode="blocks")
    with pytest.raises(TypeError, match="num_subsets"):
        kernel_distance(x, y, mode="all_pairs", num_subsets=5)


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((5, 3)), np.zeros((5, 4)), "feature dimensions differ"),
    (np.zeros((1, 3)), np.zeros((5, 3)), "at least 2"),
    (np.zeros(5), np.zeros((5, 1)), r"shape \(N, D\)"),
    (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
])
def test_kernel_errors(x, y, match):
    with pytest.raises(ValueError, match=match):
        mmd2_unbiased(x, y)
    with pytest.raises(ValueError, match=match):
        kernel_distance(x, y, mode="subsets")


# --- Inception Score ----------------------------------------------------------------------------

def test_is_equals_num_classes_for_confident_uniform_predictions():
    probs = np.eye(10)[np.arange(200) % 10]  # one-hot, each class equally often
    assert inception_score(probs) == pytest.approx((10.0, 0.0), rel=1e-9, abs=1e-12)
    mean, std = inception_score(probs, splits=4)  # 50 rows per split, still 5 of each class
    assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_is_is_one_for_constant_predictions():
    row = torch.softmax(torch.randn(101, dtype=torch.float64), 0)
    assert inception_score(row.expand(64, 101)) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_is_matches_entropy_identity():
    # mean_i KL(p_i || p) = H(p) - mean_i H(p_i): an independent formula
    p = np.random.default_rng(4).dirichlet(np.full(12, 0.3), size=300)
    entropy = lambda q: -(q * np.log(q)).sum(-1)
    expected = np.exp(entropy(p.mean(0)) - entropy(p).mean())
    assert inception_score(p)[0] == pytest.approx(expected, rel=1e-9)
    halves = [inception_score(p[:150])[0], inception_score(p[150:])[0]]
    assert inception_score(p, splits=2) == pytest.approx((np.mean(halves), np.std(halves)), rel=1e-12)


def test_repeated_is_mean_and_population_std():
    rng = np.random.default_rng(5)
    reps = [rng.dirichlet(np.full(6, 0.5), size=40) for _ in range(4)]
    scores = [inception_score(p)[0] for p in reps]
    assert repeated_inception_score(reps) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-12)
    with pytest.raises(ValueError, match="list of"):
        repeated_inception_score(reps[0])
    with pytest.raises(ValueError, match="different class counts"):
        repeated_inception_score([reps[0], np.full((3, 4), 0.25)])


@pytest.mark.parametrize("probs, splits, match", [
    (np.random.default_rng(0).standard_normal((8, 5)), 1, "not logits"),
    (np.full((8, 5), 0.5), 1, "not logits"),
    (np.full(5, 0.2), 1, r"shape \(N, C\)"),
    (np.full((2, 3, 4), 0.25), 1, r"shape \(N, C\)"),
    (np.full((3, 4), 0.25), 4, "splits"),
    (np.full((3, 4), 0.25), 0, "positive integer"),
    (np.full((3, 4), np.nan), 1, "NaN"),
])
def test_is_errors(probs, splits, match):
    with pytest.raises(ValueError, match=match):
        inception_score(probs, splits=splits)
