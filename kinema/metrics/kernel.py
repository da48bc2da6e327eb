"""Polynomial-kernel MMD² (KVD / KID) in float64.

Two estimators, named, because published numbers use one or the other:

- ``"all_pairs"``: the unbiased MMD² over all samples (KVD as reported by video papers, e.g. the
  FVD paper's KVD): ``sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
  - 2 sum_{i,j} k(x_i, y_j) / (m n)``. No standard deviation.
- ``"subsets"``: the KID form (Bińkowski et al. 2018): the same unbiased estimator on
  ``num_subsets`` random subsets of ``min(m, n, subset_size)`` samples from each set, drawn
  without replacement per subset; mean and standard deviation (``ddof=0``) over subsets. The draws
  follow torch-fidelity's order (``np.random.RandomState(seed)``, one ``choice`` for x then one for
  y per subset), so the same seed picks the same subsets. TF-GAN's
  ``kernel_classifier_distance`` instead splits the sets into disjoint blocks; that is neither.

Kernel: ``k(x, y) = (gamma x.y + coef0)^degree`` with ``gamma = 1/D`` by default, i.e.
``(x.y / D + 1)^3``. The unbiased estimate can be slightly negative when the sets agree.
"""

from __future__ import annotations

import numpy as np
import torch

_BLOCK = 2048  # rows of the kernel matrix held at once: 2048 x N float64 keeps memory bounded


def _as_features(name: str, x, min_rows: int = 2) -> np.ndarray:
    """``(N, D)`` numpy or torch -> float64 numpy, validated (the MMD needs ``N >= 2``, a kernel ``N >= 1``)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be features of shape (N, D), got shape {x.shape}; "
                         "flatten per-sample features first")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} feature vector(s), at least {min_rows} needed "
                         "(the unbiased MMD² excludes i == j, so it needs 2 per set)")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf: the features are broken (check the network input range)")
    return x


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_features("x", x), _as_features("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: x has D={x.shape[1]}, y has D={y.shape[1]}; "
                         "both sets must come from the same network layer")
    return x, y


def polynomial_kernel(x, y, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """Kernel matrix ``(gamma x_i.y_j + coef0)^degree`` of ``x (N, D)`` and ``y (M, D)`` -> ``(N, M)`` float64.

    ``gamma=None`` means ``1 / D``.
    """
    x, y = _as_features("x", x, min_rows=1), _as_features("y", y, min_rows=1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: x has D={x.shape[1]}, y has D={y.shape[1]}")
    gamma = 1.0 / x.shape[1] if gamma is None else float(gamma)
    return (x @ y.T * gamma + coef0) ** degree


def _kernel_sum(a: np.ndarray, b: np.ndarray, kernel_kw: dict, same: bool) -> float:
    """Sum of ``k(a_i, b_j)`` over all pairs, minus the diagonal when ``a is b`` (``same``)."""
    total = 0.0
    for start in range(0, len(a), _BLOCK):
        block = polynomial_kernel(a[start:start + _BLOCK], b, **kernel_kw)
        total += block.sum()
        if same:  # drop k(a_i, a_i): the unbiased estimator averages over i != j only
            rows = np.arange(block.shape[0])
            total -= block[rows, start + rows].sum()
    return float(total)


def _mmd2(x: np.ndarray, y: np.ndarray, kernel_kw: dict) -> float:
    m, n = len(x), len(y)
    kxx = _kernel_sum(x, x, kernel_kw, same=True) / (m * (m - 1))
    kyy = _kernel_sum(y, y, kernel_kw, same=True) / (n * (n - 1))
    kxy = _kernel_sum(x, y, kernel_kw, same=False) / (m * n)
    return kxx + kyy - 2 * kxy


def mmd2_unbiased(x, y, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> float:
    """Unbiased MMD² of ``x (M, D)`` and ``y (N, D)`` over all pairs (diagonals excluded), float64.

    ``M`` and ``N`` may differ; both must be at least 2.
    """
    x, y = _check_pair(x, y)
    return _mmd2(x, y, {"degree": degree, "gamma": gamma, "coef0": coef0})


def kid_subsets(x, y, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> tuple[float, float]:
    """KID-style MMD²: mean and std (``ddof=0``) over ``num_subsets`` random subsets.

    ``x (M, D)``, ``y (N, D)``; each subset takes ``min(M, N, subset_size)`` rows from each set,
    without replacement within the subset. Same ``seed``, same subsets, same numbers.
    """
    x, y = _check_pair(x, y)
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be at least 2 for the unbiased estimator, got {subset_size}")
    size = min(len(x), len(y), subset_size)
    rng = np.random.RandomState(seed)
    kernel_kw = {"degree": degree, "gamma": gamma, "coef0": coef0}
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        xs = x[rng.choice(len(x), size, replace=False)]
        ys = y[rng.choice(len(y), size, replace=False)]
        values[i] = _mmd2(xs, ys, kernel_kw)
    return float(values.mean()), float(values.std())


_MODES = ("all_pairs", "subsets")


def kernel_distance(x, y, mode: str = "all_pairs", **kw) -> dict:
    """One entry for KVD / KID: ``{"value": float, "std": float | None}``.

    ``mode="all_pairs"`` -> :func:`mmd2_unbiased` (``std`` is None); keywords ``degree, gamma, coef0``.
    ``mode="subsets"`` -> :func:`kid_subsets`; keywords also ``num_subsets, subset_size, seed``.
    """
    kernel_keys = {"degree", "gamma", "coef0"}
    if mode == "all_pairs":
        allowed = kernel_keys
    elif mode == "subsets":
        allowed = kernel_keys | {"num_subsets", "subset_size", "seed"}
    else:
        raise ValueError(f"unknown kernel-distance mode {mode!r}; use one of {_MODES}")
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise TypeError(f"kernel_distance(mode={mode!r}) got unknown keyword(s) {unknown}; "
                        f"allowed: {sorted(allowed)}")
    if mode == "all_pairs":
        return {"value": mmd2_unbiased(x, y, **kw), "std": None}
    mean, std = kid_subsets(x, y, **kw)
    return {"value": mean, "std": std}
