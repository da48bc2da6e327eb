"""Video-prediction metrics: best-of-N SSIM / PSNR per frame, and a motion-mode diversity score.

For any model whose ``capabilities.conditions`` contains ``"frames"`` and that declares how many frames it
conditions on (``capabilities.context_frames``): each test clip's first ``context_frames`` frames are given to
``model.sample(noise, frames=context)`` for N noise draws (N sampled futures), and the predicted frames are
compared with the clip's real ones.

- **Best of N** (SVG's protocol, which DVG follows: ``generate_frames.py:139-189`` of shgaurav1/DVG at
  e882473 computes SSIM and PSNR of 100 samples per test clip and picks the best): per clip, the future
  with the highest mean over frames of the metric (``select="clip"``, as ``np.argsort(np.mean(ssim[i],
  1))``, generate_frames.py:188-189) or the best future per frame (``select="frame"``); then the mean over
  clips, one value per predicted frame. SSIM and PSNR pick their best future separately.
- **SSIM** is scikit-image's ``structural_similarity`` with its defaults (7x7 uniform window, K1 0.01,
  K2 0.03, sample covariance, the mean over the window positions that fit inside the image), written in
  torch and tested against scikit-image (tests/metrics/test_dvg_metrics.py). Frames are in [0, 1] and
  ``data_range`` is 1. (The official ``compare_ssim`` on float32 frames took the dtype's range, 2, which
  gives higher values; pass ``ssim_data_range=2`` to reproduce that convention.)
- **PSNR** ``10 log10(1 / MSE)`` on [0, 1] frames (``compare_psnr`` of a non-negative float image uses
  data range 1). Both metrics are computed per channel and averaged over channels, as the official
  ``utils.eval_seq`` (utils.py:220-234). An exact copy (MSE 0) scores ``PSNR_CAP`` dB rather than inf.
- **LPIPS** (AlexNet v0.1, :mod:`kinema.metrics.lpips`) only from a weights file the user gives
  (``kinema evaluate --lpips FILE``); best of N = the lowest mean over frames.
- **Diversity**: on synthetic clips whose ground truth has per-frame motion modes
  (:class:`kinema.data.action_switch.ActionSwitchDigits`), the fraction of K sampled futures that leave
  the context's (ground-truth) mode, each future's modes estimated from its object's centre of mass
  (:func:`motion_modes`). See :func:`diversity_score`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 100.0  # dB for an exact copy
MODE_NAMES = ("still", "left", "right", "up", "down")  # as kinema.data.action_switch.MODES

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (noise (K, ...), context (K, C, Tc, H, W)) -> video


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Clips in [-1, 1] -> float64 in [0, 1]."""
    return ((x.double() + 1) / 2).clamp(0, 1)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"prediction metrics compare clips (N, C, T, H, W) of one shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")


def psnr_per_frame(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per clip and frame ``(N, T)`` of frames ``(N, C, T, H, W)`` in [0, 1]: per channel, then
    the mean over channels. MSE 0 gives :data:`PSNR_CAP`."""
    _check_pair(pred, target)
    mse = (pred.double() - target.double()).pow(2).mean(dim=(-2, -1))  # (N, C, T)
    psnr = 10 * torch.log10(data_range**2 / mse.clamp_min(1e-300))
    return psnr.clamp(max=PSNR_CAP).mean(1)


def ssim_per_frame(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, win_size: int = 7,
                   k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per clip and frame ``(N, T)`` of frames ``(N, C, T, H, W)``, per channel then averaged.

    scikit-image's ``structural_similarity(a, b, data_range=data_range)`` defaults: local means, variances
    and covariance over a ``win_size`` x ``win_size`` uniform window with the sample (``n - 1``)
    normalisation, ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``, averaged over the window positions inside the
    frame (scikit-image filters the whole frame, then crops ``(win_size - 1) // 2`` pixels per side)."""
    _check_pair(pred, target)
    n, c, t, h, w = pred.shape
    if min(h, w) < win_size:
        raise ValueError(f"SSIM's {win_size}x{win_size} window does not fit a {h}x{w} frame")
    x = pred.double().permute(0, 2, 1, 3, 4).reshape(n * t * c, 1, h, w)
    y = target.double().permute(0, 2, 1, 3, 4).reshape(n * t * c, 1, h, w)
    pool = lambda z: F.avg_pool2d(z, win_size, stride=1)  # noqa: E731  (the valid window positions)
    ux, uy = pool(x), pool(y)
    norm = win_size**2 / (win_size**2 - 1)
    vx, vy = norm * (pool(x * x) - ux * ux), norm * (pool(y * y) - uy * uy)
    vxy = norm * (pool(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).view(n, t, c).mean(2)


def best_of_n(scores: torch.Tensor, select: str = "clip") -> torch.Tensor:
    """``scores (clips, N, T)`` (higher is better) -> the best of the N futures ``(clips, T)``: the future
    with the best mean over frames (``"clip"``) or the best future per frame (``"frame"``)."""
    if scores.dim() != 3:
        raise ValueError(f"best_of_n expects scores (clips, futures, frames), got {tuple(scores.shape)}")
    if select == "frame":
        return scores.max(1).values
    if select == "clip":
        best = scores.mean(2).argmax(1)
        return scores[torch.arange(len(scores)), best]
    raise ValueError(f"select must be 'clip' (the best future on average, as the official evaluation) or 'frame', "
                     f"got {select!r}")


def context_frames(model) -> int:
    """How many frames a prediction model conditions on (its declared ``capabilities.context_frames``; the
    same field :func:`kinema.metrics.evaluate.check_model_suits` checks before any work)."""
    caps = model.capabilities
    if "frames" not in caps.conditions:
        raise ValueError(f"{type(model).__name__} does not condition on frames (its capabilities.conditions are "
                         f"{sorted(caps.conditions) or 'none'}): prediction metrics need a prediction model")
    n = caps.context_frames
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{type(model).__name__} takes frames but does not say how many it predicts from "
                         f"(capabilities.context_frames = {n!r}): it is not a prediction model (e.g. an unconditional "
                         "VideoGPT prior or NÜWA, cond_frames = 0), so prediction metrics cannot split context and "
                         "future")
    return n


def _default_predict(model) -> Predict:
    return lambda noise, context: model.sample(noise, frames=context)


def sampled_futures(model, clip: torch.Tensor, futures: int, seed: int, batch_size: int,
                    predict: Predict | None = None) -> torch.Tensor:
    """``futures`` predictions ``(K, C, T', H, W)`` in [-1, 1] of one clip ``(C, T, H, W)`` (its first
    ``context_frames`` frames are the context; the output starts with them)."""
    predict = predict or _default_predict(model)
    tc = context_frames(model)
    device = next(model.parameters()).device
    noise = model.sample_noise(futures, generator=torch.Generator().manual_seed(seed), device=device)
    context = clip[None, :, :tc].to(device)
    with torch.no_grad():
        return torch.cat([predict(chunk, context.expand(len(chunk), -1, -1, -1, -1)).float().cpu()
                          for chunk in noise.split(batch_size)])


def lpips_per_frame(net, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS ``(N, T)`` of clips ``(N, C, T, H, W)`` in [0, 1] with a :class:`kinema.metrics.lpips.LPIPS`
    (greyscale repeated to 3 channels)."""
    _check_pair(pred, target)
    n, c, t, h, w = pred.shape
    if c not in (1, 3):
        raise ValueError(f"LPIPS compares RGB or greyscale frames, got {c} channels")
    device = next(net.parameters()).device
    frames = lambda x: ((x.float() * 2 - 1).permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # noqa: E731
                        .expand(-1, 3, -1, -1).to(device))
    with torch.no_grad():
        return net(frames(pred), frames(target)).double().cpu().view(n, t)


def best_of_n_metrics(model, dataset, num_clips: int, futures: int, seed: int = 0, batch_size: int = 16,
                      select: str = "clip", predict: Predict | None = None, ssim_data_range: float = 1.0,
                      lpips=None) -> dict:
    """Best-of-``futures`` SSIM and PSNR per predicted frame, averaged over the first ``num_clips`` clips of
    ``dataset`` in a seeded order; also the copy-the-last-context-frame baseline and the mean over futures.

    Returns ``{"value": mean best SSIM over frames, "ssim": [per frame], "psnr": [per frame], "ssim_mean",
    "psnr_mean", "mse" (per frame, of the best future by MSE, on [0, 1] frames), "mean_future_ssim" /
    "mean_future_psnr" (the average future, per frame), "copy_last_ssim", "copy_last_psnr", "copy_last_mse"
    (per frame), "context_frames", "predicted_frames", "futures", "select", "num"}`` and, given an
    :class:`~kinema.metrics.lpips.LPIPS` as ``lpips``, ``"lpips"`` (best of N, lowest) and ``"copy_last_lpips"``
    per frame. On synthetic data a
    future can equal the last context frame exactly (an object that stands still or comes back), whose PSNR
    is :data:`PSNR_CAP`; ``10 log10(1 / mse)`` (PSNR of the mean MSE) is then the robust summary."""
    if futures < 1 or num_clips < 1:
        raise ValueError(f"best-of-N needs at least 1 clip and 1 future, got {num_clips} and {futures}")
    if len(dataset) < num_clips:
        raise ValueError(f"too few real clips: {num_clips} wanted, the dataset has {len(dataset)}; use more data or "
                         "a lower --num")
    tc = context_frames(model)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_clips].tolist()
    ssim, psnr, mse, copy_ssim, copy_psnr, copy_mse, dist, copy_dist = [], [], [], [], [], [], [], []
    for k, index in enumerate(order):
        clip = dataset[index].float()
        if clip.shape[1] <= tc:
            raise ValueError(f"real clips have {clip.shape[1]} frames; a model with {tc} context frames needs more")
        video = sampled_futures(model, clip, futures, seed * 1_000_003 + k, batch_size, predict)
        if video.shape[0] != futures or video.shape[1:2] != clip.shape[0:1] or video.shape[3:] != clip.shape[2:]:
            raise ValueError(f"the model's predictions {tuple(video.shape[1:])} do not match the real clips "
                             f"{tuple(clip.shape)} (channels, frames, height, width)")
        t = min(video.shape[2], clip.shape[1])
        if t <= tc:
            raise ValueError(f"the model predicted no frame after its {tc} context frames")
        real = _unit(clip[None, :, tc:t]).expand(futures, -1, -1, -1, -1)
        fake = _unit(video[:, :, tc:t])
        ssim.append(ssim_per_frame(fake, real, ssim_data_range))
        psnr.append(psnr_per_frame(fake, real))
        mse.append((fake - real).pow(2).mean((1, 3, 4)))
        last = _unit(clip[None, :, tc - 1: tc]).expand(-1, -1, t - tc, -1, -1)
        copy_ssim.append(ssim_per_frame(last, real[:1], ssim_data_range)[0])
        copy_psnr.append(psnr_per_frame(last, real[:1])[0])
        copy_mse.append((last - real[:1]).pow(2).mean((1, 3, 4))[0])
        if lpips is not None:
            dist.append(lpips_per_frame(lpips, fake, real))
            copy_dist.append(lpips_per_frame(lpips, last, real[:1])[0])
    ssim_all, psnr_all = torch.stack(ssim), torch.stack(psnr)  # (clips, N, T)
    best_ssim, best_psnr = best_of_n(ssim_all, select).mean(0), best_of_n(psnr_all, select).mean(0)
    best_mse = -best_of_n(-torch.stack(mse), select).mean(0)
    lists = lambda x: [round(float(v), 6) for v in x]  # noqa: E731
    extra = {}
    if lpips is not None:  # lower is better: the future with the lowest mean LPIPS
        extra = {"lpips": lists(-best_of_n(-torch.stack(dist), select).mean(0)),
                 "copy_last_lpips": lists(torch.stack(copy_dist).mean(0))}
    return {**extra, "value": float(best_ssim.mean()), "std": None, "ssim": lists(best_ssim), "psnr": lists(best_psnr),
            "mse": [float(v) for v in best_mse], "copy_last_mse": [float(v) for v in torch.stack(copy_mse).mean(0)],
            "ssim_mean": float(best_ssim.mean()), "psnr_mean": float(best_psnr.mean()),
            "mean_future_ssim": lists(ssim_all.mean((0, 1))), "mean_future_psnr": lists(psnr_all.mean((0, 1))),
            "copy_last_ssim": lists(torch.stack(copy_ssim).mean(0)),
            "copy_last_psnr": lists(torch.stack(copy_psnr).mean(0)),
            "context_frames": tc, "predicted_frames": int(ssim_all.shape[2]), "futures": futures, "select": select,
            "num": num_clips}


# ---------------------------------------------------------------------------------------------- diversity


def centres_of_mass(clips: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, H, W)`` in [-1, 1] -> ``(N, T, 2)`` ``(y, x)`` of the brightness above each frame's median
    (the background of a bright object on a dark background; a blank frame gives the frame centre)."""
    grey = clips.double().mean(1)  # (N, T, H, W)
    n, t, h, w = grey.shape
    weight = (grey - grey.flatten(2).median(-1).values[..., None, None]).clamp_min(0)
    mass = weight.sum((-2, -1))
    ys = torch.arange(h, dtype=torch.float64)
    xs = torch.arange(w, dtype=torch.float64)
    y = (weight.sum(-1) * ys).sum(-1) / mass.clamp_min(1e-12)
    x = (weight.sum(-2) * xs).sum(-1) / mass.clamp_min(1e-12)
    blank = mass <= 1e-12
    y, x = torch.where(blank, (h - 1) / 2, y), torch.where(blank, (w - 1) / 2, x)
    return torch.stack([y, x], -1)


def motion_modes(clips: torch.Tensor, still_below: float = 0.025) -> torch.Tensor:
    """The motion mode of each step ``(N, T - 1)`` (indices into :data:`MODE_NAMES`: still, left, right, up,
    down) from the centre-of-mass displacement between frames ``t`` and ``t + 1``: ``still`` when it moves
    less than ``still_below * min(H, W)`` pixels, else the sign of its larger component."""
    com = centres_of_mass(clips)
    d = com[:, 1:] - com[:, :-1]  # (N, T-1, 2) (dy, dx)
    dy, dx = d[..., 0], d[..., 1]
    horizontal = dx.abs() >= dy.abs()
    mode = torch.where(horizontal, torch.where(dx < 0, 1, 2), torch.where(dy < 0, 3, 4))
    still = d.norm(dim=-1) < still_below * min(clips.shape[-2:])
    return torch.where(still, 0, mode)


def left_mode(modes: torch.Tensor, mode: int, min_run: int) -> torch.Tensor:
    """Per row of ``modes (K, S)``: does it hold a mode other than ``mode`` for ``min_run`` consecutive steps?"""
    other = (modes != mode).long()
    run = torch.zeros(len(modes), dtype=torch.long)
    best = torch.zeros(len(modes), dtype=torch.long)
    for s in range(modes.shape[1]):
        run = (run + 1) * other[:, s]
        best = torch.maximum(best, run)
    return best >= min_run


def holds_mode(modes: torch.Tensor, mode: int, min_run: int) -> bool:
    """Does any row of ``modes (K, S)`` hold ``mode`` for ``min_run`` consecutive steps?"""
    same = (modes == mode).long()
    run = torch.zeros(len(modes), dtype=torch.long)
    for s in range(modes.shape[1]):
        run = (run + 1) * same[:, s]
        if bool((run >= min_run).any()):
            return True
    return False


def diversity_score(model, dataset, num_clips: int, futures: int, seed: int = 0, batch_size: int = 16,
                    min_run: int = 2, still_below: float = 0.025, predict: Predict | None = None) -> dict:
    """How many of K sampled futures of a clip change motion mode, with the ground-truth modes of a synthetic
    dataset with one object per clip (``dataset.ground_truth(i)["modes"] (1, T)``,
    :class:`~kinema.data.action_switch.ActionSwitchDigits`).

    The context's mode is the ground-truth mode of its last step (frame ``Tc - 2`` to ``Tc - 1``). Each
    predicted future's modes are estimated (:func:`motion_modes`) for its steps from the last context frame
    on; it *changes mode* when it holds another mode for ``min_run`` consecutive steps (one noisy step of a
    blurred prediction is not a change). Returns ``{"value": the fraction of futures that change mode
    (mean over clips), "distinct_modes": modes held for min_run steps in any of the K futures (mean over
    clips), "pairwise_disagreement": the fraction of steps at which two futures of a clip are in different
    modes (mean over pairs and clips; 0 for a deterministic model), "real_changed": the fraction of the real futures that change mode (ground truth),
    "estimator_accuracy": the estimated modes of the real futures vs their ground truth, ...}``."""
    tc = context_frames(model)
    if len(dataset) < num_clips:
        raise ValueError(f"too few real clips: {num_clips} wanted, the dataset has {len(dataset)}")
    if not hasattr(dataset, "ground_truth"):
        raise ValueError("the diversity score needs per-frame ground-truth motion modes: use synthetic data with "
                         "modes (data.family = \"action_switch_digits\")")
    if tc < 2:
        raise ValueError("the diversity score reads the context's mode from its last step: it needs >= 2 context "
                         "frames")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_clips].tolist()
    changed, distinct, pairwise, real_changed, hits, steps = [], [], [], [], 0, 0
    for k, index in enumerate(order):
        gt = dataset.ground_truth(index)
        if "modes" not in gt:
            raise ValueError(f"{type(dataset).__name__} has no ground-truth motion modes: use data.family = "
                             "\"action_switch_digits\"")
        if gt["modes"].shape[0] != 1:
            raise ValueError(f"the diversity score tracks one object per clip; clip {index} has {gt['modes'].shape[0]} "
                             "(ActionSwitchDigits(num_digits=1))")
        gt_modes = torch.as_tensor(gt["modes"][0])
        clip = dataset[index].float()
        video = sampled_futures(model, clip, futures, seed * 1_000_003 + k, batch_size, predict)
        t = min(video.shape[2], clip.shape[1])
        if t < tc + min_run:
            raise ValueError(f"{t - tc} predicted frame(s) cannot show a mode held for {min_run} steps")
        context_mode = int(gt_modes[tc - 2])
        est = motion_modes(video[:, :, tc - 1: t], still_below)  # (K, t - tc)
        changed.append(left_mode(est, context_mode, min_run).double().mean())
        distinct.append(len({m for m in range(len(MODE_NAMES)) if holds_mode(est, m, min_run)}))
        if futures > 1:  # mean over pairs of futures of the fraction of steps whose modes differ
            differ = (est[:, None] != est[None]).double().mean(-1)
            pairwise.append(float(differ.sum() / (futures * (futures - 1))))
        real_changed.append(float(left_mode(gt_modes[None, tc - 1: t - 1], context_mode, min_run)[0]))
        real_est = motion_modes(clip[None, :, tc - 1: t], still_below)[0]
        hits += int((real_est == gt_modes[tc - 1: t - 1]).sum())
        steps += t - tc
    return {"value": float(torch.stack(changed).mean()), "std": None, "distinct_modes": float(np.mean(distinct)),
            "pairwise_disagreement": float(np.mean(pairwise)) if pairwise else 0.0,
            "real_changed": float(np.mean(real_changed)), "estimator_accuracy": hits / steps, "futures": futures,
            "min_run": min_run, "context_frames": tc, "num": num_clips}
