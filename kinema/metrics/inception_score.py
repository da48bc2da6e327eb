"""Inception Score from class probabilities, in float64 (TGANv2 protocol).

``IS = exp(mean_i KL(p(y|x_i) || p(y)))`` with ``p(y)`` the mean prediction of the split. This
follows the official TGANv2 code (``tgan2/evaluations/inception_score.py``) term for term: ``eps``
is added to every probability first, the marginal is the mean of those shifted rows, and the
KL is ``sum_c (p + eps) (log(p + eps) - log(mean(p + eps)))``.

TGANv2 protocol (``scripts/compute_inception_score.py``): 2,048 samples, ``splits=1``, repeated 10
times on fresh samples by the caller; report the mean and ``np.std`` (``ddof=0``) of the 10 scores
-> :func:`repeated_inception_score`. The TGAN-v1 / TGAN-ODE code instead weighs by ``p`` (not
``p + eps``) with ``eps=1e-7``; with softmax outputs the two differ by far less than the
reported precision.
"""

from __future__ import annotations

import numpy as np
import torch

_SUM_TOL = 1e-3  # rows of a float32 softmax sum to 1 well within this


def _as_probs(probs) -> np.ndarray:
    """``(N, C)`` numpy or torch -> float64 numpy, validated as probabilities."""
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().double().numpy()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, C) with C >= 2 classes, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or inf: the classifier output is broken (check the input range)")
    if (p < 0).any():
        raise ValueError(f"probs contain negative values (min {p.min():.4g}): pass softmax probabilities, not logits")
    sums = p.sum(1)
    worst = int(np.abs(sums - 1).argmax())
    if abs(sums[worst] - 1) > _SUM_TOL:
        raise ValueError(f"probs rows must sum to 1 (row {worst} sums to {sums[worst]:.6g}): "
                         "pass softmax probabilities, not logits")
    return p


def _score(p: np.ndarray, eps: float) -> float:
    part = p + eps  # as the TGANv2 code: keeps log() finite for exact zeros
    marginal = part.mean(0, keepdims=True)
    kl = (part * (np.log(part) - np.log(marginal))).sum(1).mean()
    return float(np.exp(kl))


def inception_score(probs, splits: int = 1, eps: float = 1e-20) -> tuple[float, float]:
    """Inception Score of softmax predictions ``probs (N, C)`` -> ``(mean, std)`` over ``splits``.

    Split ``i`` holds rows ``[i N // splits, (i + 1) N // splits)`` (contiguous, as the reference);
    ``std`` is ``np.std`` (``ddof=0``) of the split scores, 0.0 for one split.
    """
    p = _as_probs(probs)
    if not isinstance(splits, (int, np.integer)) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    n = len(p)
    if n < splits:
        raise ValueError(f"{n} samples cannot fill {splits} splits; pass at least one sample per split "
                         "(the TGANv2 protocol uses 2,048 samples and splits=1)")
    scores = np.array([_score(p[i * n // splits:(i + 1) * n // splits], eps) for i in range(splits)])
    return float(scores.mean()), float(scores.std())


def repeated_inception_score(probs_list, eps: float = 1e-20) -> tuple[float, float]:
    """Mean and std (``ddof=0``) of single-split scores over repetitions.

    ``probs_list``: a sequence of ``(N, C)`` softmax predictions, one per repetition, each on a
    fresh set of samples (TGANv2: 10 x 2,048). Every repetition must have the same ``C``.
    """
    if isinstance(probs_list, (np.ndarray, torch.Tensor)) and probs_list.ndim == 2:
        raise ValueError("repeated_inception_score takes a list of (N, C) arrays, one per repetition; "
                         "for one set of predictions call inception_score")
    arrays = [_as_probs(p) for p in probs_list]
    if not arrays:
        raise ValueError("repeated_inception_score got no repetitions; pass a list of (N, C) softmax arrays")
    classes = {p.shape[1] for p in arrays}
    if len(classes) > 1:
        raise ValueError(f"repetitions have different class counts {sorted(classes)}; "
                         "all must come from the same classifier")
    scores = np.array([inception_score(p, splits=1, eps=eps)[0] for p in arrays])
    return float(scores.mean()), float(scores.std())
