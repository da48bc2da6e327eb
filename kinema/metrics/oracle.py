"""Oracle measures of motion quality for the synthetic families, computed without a network.

They use what is known about how ``bouncing_shapes`` and ``moving_digits`` are rendered: a few
bright objects on a dark, flat background, each moving at constant velocity and bouncing off the
frame edges. A generated clip is segmented by thresholding, its objects are tracked from frame to
frame, and the tracks are checked against that physics. See docs/oracle.md for the definitions,
tolerances, what each measure catches and misses, and measured values.

Videos are float ``(N, 3, T, H, W)`` in ``[-1, 1]`` (the datasets' and samplers' layout) or uint8
``(N, T, H, W, 3)`` (the layout of written videos and of :func:`kinema.metrics.fvd`), as numpy
arrays or torch tensors. Positions are ``(y, x)`` in pixels (pixel centres), sizes and speeds are
also reported as fractions of ``min(H, W)`` so that resolutions compare.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Objects", "Tracks", "clip_motion", "detect_objects", "label_components", "motion_report",
           "temporal_pixel_std", "to_frames", "track", "wasserstein_1d"]

CONTRAST_MIN = 0.2  # [-1, 1] units: a clip whose brightest pixels are not this far above the background has no objects
LEVEL = 0.5  # foreground: brighter than this fraction of the way from background to peak
MIN_AREA_FRACTION = 0.004  # components smaller than this fraction of the frame are specks, ignored
TOL_FRACTION, TOL_MIN_PX = 0.02, 1.5  # position tolerance: max(1.5 px, 2% of min(H, W))
MAX_SPEED = 0.2  # fraction of min(H, W) per frame; the families move at most 0.1
MAX_OBJECTS = 6  # more simultaneous objects than this is clutter, not a scene of these families
AREA_TOL, COLOUR_TOL = 0.2, 0.2  # relative area change (+ a pixel ring); colour change, [-1, 1] units, any channel


class Objects(NamedTuple):
    """The ``M`` objects found in one frame."""

    centroids: np.ndarray  # (M, 2) float (y, x) pixels, mean of the object's pixel centres
    areas: np.ndarray  # (M,) int pixels
    boxes: np.ndarray  # (M, 4) int (y_min, y_max, x_min, x_max), inclusive pixel indices
    colours: np.ndarray  # (M, 3) float mean colour in [-1, 1]


class Tracks(NamedTuple):
    """``K`` objects followed through ``T`` frames; NaN where an object is not seen on its own."""

    positions: np.ndarray  # (K, T, 2) centroid (y, x)
    observed: np.ndarray  # (K, T) bool: the object is a component of its own in that frame
    areas: np.ndarray  # (K, T)
    boxes: np.ndarray  # (K, T, 4) as in Objects
    colours: np.ndarray  # (K, T, 3)
    explained: np.ndarray  # (T,) bool: every component of the frame is accounted for by the K objects


def to_frames(videos) -> np.ndarray:
    """Float videos ``(N, 3, T, H, W)`` in ``[-1, 1]`` or uint8 ``(N, T, H, W, 3)`` (numpy or torch)
    to float32 ``(N, T, H, W, 3)`` in ``[-1, 1]``. Floats are clipped to ``[-1, 1]``, since
    samplers may overshoot slightly."""
    x = videos.detach().cpu().numpy() if isinstance(videos, torch.Tensor) else np.asarray(videos)
    if x.dtype == np.uint8:
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"uint8 videos must be (N, T, H, W, 3), got shape {tuple(x.shape)}")
        return x.astype(np.float32) / 127.5 - 1.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"videos must be float (N, 3, T, H, W) in [-1, 1] or uint8 (N, T, H, W, 3), got {x.dtype}")
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"float videos must be (N, 3, T, H, W) in [-1, 1], got shape {tuple(x.shape)}"
                         + (" (channels last? uint8 videos are channels last, float ones channels first)"
                            if x.ndim == 5 and x.shape[-1] == 3 else ""))
    if x.size and (np.nanmax(x) > 1.5 or np.nanmin(x) < -1.5):
        raise ValueError(f"float videos must be in [-1, 1], got values in [{np.nanmin(x):.3g}, {np.nanmax(x):.3g}]"
                         " (for 0..255 data pass uint8)")
    return np.clip(np.nan_to_num(x.astype(np.float32).transpose(0, 2, 3, 4, 1), nan=-1.0), -1.0, 1.0)


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of each frame of ``mask (F, H, W)`` bool: ``(F, H, W)`` int64 labels,
    ``-1`` off the mask; a label is the flat index of the component's first pixel (so labels are
    unique across frames). Min-label propagation with pointer jumping: a few dozen numpy passes."""
    f, h, w = mask.shape
    big = f * h * w
    lab = np.where(mask, np.arange(big).reshape(f, h, w), big)
    pad = np.full((f, h + 2, w + 2), big)
    while True:
        pad[:, 1:-1, 1:-1] = lab
        new = lab.copy()
        for dy, dx in itertools.product(range(3), range(3)):
            np.minimum(new, pad[:, dy:dy + h, dx:dx + w], out=new)
        new[~mask] = big
        flat = new.reshape(-1)
        fg = np.flatnonzero(mask)
        for _ in range(4):  # a label is the index of a pixel of the same component: follow its label
            flat[fg] = flat[flat[fg]]
        if np.array_equal(new, lab):
            return np.where(mask, lab, -1)
        lab = new


def detect_objects(clip: np.ndarray, min_area: float | None = None, contrast: float = CONTRAST_MIN) -> list[Objects]:
    """Objects in each frame of one clip ``(T, H, W, 3)`` float in ``[-1, 1]`` (``to_frames(videos)[i]``).

    Brightness is the maximum over channels (so saturated colours count as bright). Per clip,
    ``bg`` = median brightness (objects cover well under half the frame), ``peak`` = its 99.9th
    percentile, ``noise`` = 1.4826 * median absolute deviation. Pixels brighter than
    ``max(bg + LEVEL * (peak - bg), bg + 4 * noise)`` are foreground (a half-maximum threshold, set
    once per clip so that an object that fades is seen to vanish); none are when
    ``peak - bg < contrast``. 8-connected components smaller than ``min_area`` pixels (default
    ``max(3, 0.4%`` of the frame``)``) are ignored as specks. Returns one :class:`Objects` per frame.
    """
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"detect_objects takes one clip (T, H, W, 3) in [-1, 1], e.g. to_frames(videos)[i]; "
                         f"got shape {tuple(clip.shape)}")
    t, h, w, _ = clip.shape
    min_area = max(3.0, MIN_AREA_FRACTION * h * w) if min_area is None else min_area
    bright = clip.max(axis=-1)
    bg, peak = float(np.median(bright)), float(np.quantile(bright, 0.999))
    noise = 1.4826 * float(np.median(np.abs(bright - bg)))
    mask = bright > max(bg + LEVEL * (peak - bg), bg + 4 * noise)
    if peak - bg < contrast:
        mask[:] = False
    idx = np.flatnonzero(mask)
    roots, comp = np.unique(label_components(mask).reshape(-1)[idx], return_inverse=True)
    n = len(roots)
    area = np.bincount(comp, minlength=n)
    y, x = np.divmod(idx % (h * w), w)

    def mean(values):  # per component
        return np.bincount(comp, values, n) / np.maximum(area, 1)

    rgb = clip.reshape(-1, 3)[idx]
    colour = np.stack([mean(rgb[:, c]) for c in range(3)], 1)
    box = np.tile(np.array([h, -1, w, -1]), (n, 1))
    for col, values, ufunc in ((0, y, np.minimum), (1, y, np.maximum), (2, x, np.minimum), (3, x, np.maximum)):
        ufunc.at(box[:, col], comp, values)
    frame, keep = roots // (h * w), area >= min_area
    centroids = np.stack([mean(y), mean(x)], 1)
    return [Objects(centroids[s], area[s], box[s], colour[s]) for s in (keep & (frame == i) for i in range(t))]


@lru_cache(maxsize=None)
def _permutations(k: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(k))), dtype=np.int64).reshape(-1, k)


def _box_distance(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(K, M)`` distance from each point ``(K, 2)`` to each box ``(M, 4)``; 0 inside."""
    dy = np.maximum(0, np.maximum(boxes[None, :, 0] - points[:, None, 0], points[:, None, 0] - boxes[None, :, 1]))
    dx = np.maximum(0, np.maximum(boxes[None, :, 2] - points[:, None, 1], points[:, None, 1] - boxes[None, :, 3]))
    return np.hypot(dy, dx)


def _reflect(p: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move positions ``p`` by ``v`` (same shapes) with elastic reflections at ``lo`` and ``hi``
    (any number of them): the new positions and velocities. A zero-width range pins to ``lo``."""
    span = np.maximum(hi - lo, 1e-9)
    n = np.floor((p + v - lo) / span)
    rest = p + v - lo - n * span
    even = n % 2 == 0
    frozen = hi - lo <= 1e-9
    return np.where(frozen, lo, np.where(even, lo + rest, hi - rest)), np.where(frozen, 0.0, np.where(even, v, -v))


def _extents(centroid: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``(..., 4)`` distance from centroid ``(..., 2)`` to the outer edge of each side of ``box (..., 4)``."""
    return np.stack([centroid[..., 0] - box[..., 0], box[..., 1] - centroid[..., 0],
                     centroid[..., 1] - box[..., 2], box[..., 3] - centroid[..., 1]], -1) + 0.5


def _update_velocity(p, v, new, lo, hi, tol):
    """Velocity ``(K, 2)`` after a step from ``p`` to ``new``: the old one, reflected, where that
    predicted a bounce that happened (a bounce step's displacement is not the velocity), else the step."""
    pred, reflected = _reflect(p, v, lo, hi)
    return np.where((np.abs(new - pred) <= tol) & (reflected != v), reflected, new - p)


def track(objects: list[Objects], height: int, width: int, max_objects: int = MAX_OBJECTS) -> Tracks:
    """Follow the objects of one clip (``detect_objects``'s output) through its ``T`` frames.

    ``K`` = the largest number of objects in any frame (0, and every frame unexplained, when no
    frame has one or one has more than ``max_objects``). Within each run of consecutive frames
    with ``K`` objects, objects are matched one-to-one at least total distance to their predicted
    positions (exhaustive over permutations). Predictions are the last velocity with reflection
    where the object's measured extent meets the frame edge. Runs separated by frames with fewer
    objects (overlaps) are linked by the permutation that best agrees with both runs' motion
    extrapolated across the gap. A frame with fewer than ``K`` objects is *explained* when, each
    object joining the component nearest its extrapolated position, every component gets one and
    a shared component lies within ``tol`` + the object's largest extent of each of its objects
    and has an area between 0.7x the largest and 1.3x the sum of their areas. Objects in a shared
    component are unobserved in that frame.
    """
    t, size = len(objects), min(height, width)
    tol = max(TOL_MIN_PX, TOL_FRACTION * size)
    counts = np.array([len(o.areas) for o in objects])
    k = int(counts.max()) if t else 0
    pos, area = np.full((k, t, 2), np.nan), np.full((k, t), np.nan)
    box, colour = np.full((k, t, 4), np.nan), np.full((k, t, 3), np.nan)
    observed, explained = np.zeros((k, t), bool), np.zeros(t, bool)
    if k == 0 or k > max_objects:
        return Tracks(pos, observed, area, box, colour, explained)
    limit, perms = np.array([height - 1.0, width - 1.0]), _permutations(k)

    def at(i, a):  # centroids (k, 2) and walls lo, hi (k, 2) of frame i's objects in order a
        c = objects[i].centroids[a]
        e = _extents(c, objects[i].boxes[a])
        return c, e[:, [0, 2]], limit - e[:, [1, 3]]

    def best(cost):  # the permutation of least total cost
        return perms[np.argmin(cost[np.arange(k), perms].sum(1))]

    def coast(i0, order, v, known, frames):
        """Carry the objects of frame ``i0`` (in ``order``, velocity ``v``, ``known (k,)`` where it was
        measured) through ``frames``, which have fewer than ``k`` objects: per frame (explained,
        object index of each track or -1); the final positions, velocities, walls and ``known``."""
        p, lo, hi = at(i0, order)
        ext, last_area, out = _extents(p, objects[i0].boxes[order]), objects[i0].areas[order].astype(float), []
        seen_p, seen_i, known = p.copy(), np.full(k, i0), known.copy()
        for i in frames:
            o, m = objects[i], counts[i]
            pred, pred_v = _reflect(p, v, lo, hi)
            if m == 0:
                out.append((False, np.full(k, -1)))
                p, v = pred, pred_v
                continue
            dist = _box_distance(pred, o.boxes)
            assign = np.argmin(dist + 1e-3 * np.linalg.norm(pred[:, None] - o.centroids[None], axis=-1), 1)
            shares = np.bincount(assign, minlength=m)
            ok = bool(np.all(shares > 0))
            for j in np.flatnonzero(shares > 1):
                group = assign == j
                ok &= bool(np.all(dist[group, j] <= tol + ext[group].max(1)))
                ok &= 0.7 * last_area[group].max() <= o.areas[j] <= 1.3 * last_area[group].sum()
            solo = shares[assign] == 1
            new = np.where(solo[:, None], o.centroids[assign], pred)
            # After consecutive sightings the reflection-aware update; after a gap, the mean step since.
            steps = np.abs(i - seen_i)[:, None]
            step_v = np.where(steps == 1, _update_velocity(p, v, new, lo, hi, tol), (new - seen_p) / steps)
            v = np.where(solo[:, None], step_v, pred_v)
            p, known = new, known | solo
            seen_p[solo], seen_i[solo] = new[solo], i
            ext[solo] = _extents(new[solo], o.boxes[assign[solo]])
            last_area[solo] = o.areas[assign[solo]]
            lo, hi = ext[:, [0, 2]], limit - ext[:, [1, 3]]
            out.append((ok, np.where(solo, assign, -1)))
        return out, p, v, lo, hi, known

    full = np.flatnonzero(counts == k)
    runs = []  # [frames, per-frame order, velocity at the start (backwards in time), at the end, end one measured]
    for frames in np.split(full, np.flatnonzero(np.diff(full) > 1) + 1):
        order, v = [np.arange(k)], np.zeros((k, 2))
        for i, j in zip(frames[:-1], frames[1:]):
            p, lo, hi = at(i, order[-1])
            a = best(np.linalg.norm(_reflect(p, v, lo, hi)[0][:, None] - objects[j].centroids[None], axis=-1))
            v = _update_velocity(p, v, objects[j].centroids[a], lo, hi, tol)
            order.append(a)
        back = np.zeros((k, 2))
        for i, j in zip(frames[:0:-1], frames[-2::-1]):
            p, lo, hi = at(i, order[i - frames[0]])
            back = _update_velocity(p, back, at(j, order[j - frames[0]])[0], lo, hi, tol)
        runs.append([frames, order, back, v, np.full(k, len(frames) > 1)])

    gaps = {}  # frame -> (explained, object index of each track or -1)
    first, last = runs[0], runs[-1]
    before, after = range(first[0][0] - 1, -1, -1), range(last[0][-1] + 1, t)
    gaps.update(zip(before, coast(first[0][0], first[1][0], first[2], np.full(k, len(first[0]) > 1), before)[0]))
    for a, b in zip(runs[:-1], runs[1:]):
        between = range(a[0][-1] + 1, b[0][0])
        fwd, p, v, lo, hi, known = coast(a[0][-1], a[1][-1], a[3], a[4], between)
        # Link: track i of run a is object link[i] of run b. Each run's motion is carried across the
        # gap where it was measured (a's, by the last sightings); where neither was, plain distance.
        pa, (pb, lo_b, hi_b) = at(a[0][-1], a[1][-1])[0], at(b[0][0], b[1][0])
        fwd_cost = np.linalg.norm(_reflect(p, v, lo, hi)[0][:, None] - pb[None], axis=-1)
        bwd_cost = np.linalg.norm(pa[:, None] - _reflect(pb, b[2] * (b[0][0] - a[0][-1]), lo_b, hi_b)[0][None], axis=-1)
        static = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
        cost = np.where(known[:, None], fwd_cost, 0.0) + (bwd_cost if len(b[0]) > 1 else
                                                           np.where(known[:, None], 0.0, static))
        link = best(cost)
        b[1], b[2], b[3] = [o[link] for o in b[1]], b[2][link], b[3][link]
        if len(b[0]) == 1:  # no velocity of its own: keep the one carried across the gap
            b[3], b[4] = np.where(known[:, None], _reflect(p, v, lo, hi)[1], 0.0), known
        bwd = coast(b[0][0], b[1][0], b[2], np.full(k, len(b[0]) > 1), between[::-1])[0][::-1]
        for i, f, r in zip(between, fwd, bwd):  # the nearer run's reading, unless only the other explains
            near, far = (f, r) if i - a[0][-1] <= b[0][0] - i else (r, f)
            gaps[i] = near if near[0] or not far[0] else far
    gaps.update(zip(after, coast(last[0][-1], last[1][-1], last[3], last[4], after)[0]))

    for frames, order, *_ in runs:
        gaps.update((i, (True, a)) for i, a in zip(frames, order))
    for i, (ok, assign) in gaps.items():
        o, solo = objects[i], np.flatnonzero(assign >= 0)
        explained[i] = ok
        pos[solo, i], area[solo, i], box[solo, i], colour[solo, i] = (
            o.centroids[assign[solo]], o.areas[assign[solo]], o.boxes[assign[solo]], o.colours[assign[solo]])
        observed[solo, i] = True
    return Tracks(pos, observed, area, box, colour, explained)


def _axis_consistent(frames: np.ndarray, p: np.ndarray, lo: float, hi: float, tol: float) -> bool:
    """Whether positions ``p (n,)`` seen at ``frames (n,)`` along one axis are a constant speed with
    reflections at ``lo`` and ``hi``. The speed is the median step of consecutive frames; the
    direction is tracked as a set of possibilities, both directions being possible at a wall."""
    if len(p) < 2:
        return True
    gaps, steps = np.diff(frames), np.diff(p)
    unit = gaps == 1
    speed = float(np.median(np.abs(steps[unit] if unit.any() else steps / gaps)))
    signs = {1.0, -1.0}
    for i, g in enumerate(gaps):
        allowed = tol * (1 + 0.5 * (g - 1))  # a speed error adds up over a gap
        after = set()
        for s in signs:
            q, s2 = map(float, _reflect(p[i], s * speed * g, lo, hi))
            s2 = float(np.sign(s2)) if s2 else s  # a still object keeps its (irrelevant) direction
            if abs(q - p[i + 1]) <= allowed:
                after.add(s2)
                if min(p[i + 1] - lo, hi - p[i + 1]) <= tol:  # at a wall it may have turned already
                    after.add(-s2)
        if not after:
            return False
        signs = after
    return True


def clip_motion(tracks: Tracks, height: int, width: int, max_speed: float = MAX_SPEED) -> dict:
    """Per-clip verdicts from :func:`track`'s output. Returns ``count_preserved``, ``no_teleport``,
    ``physically_consistent``, ``area_stable``, ``colour_stable`` (bools, all False when no object
    is found), ``objects`` (K) and ``speeds`` (float array: displacement per frame / ``min(H, W)``
    of each object between consecutive frames where it is seen on its own)."""
    size = min(height, width)
    tol = max(TOL_MIN_PX, TOL_FRACTION * size)
    k = len(tracks.positions)
    out = {"objects": k, "speeds": np.zeros(0), "count_preserved": k > 0 and bool(tracks.explained.all())}
    teleport, consistent, area_ok, colour_ok, speeds = False, True, True, True, []
    limit = (height - 1.0, width - 1.0)
    for tr in range(k):
        f = np.flatnonzero(tracks.observed[tr])
        p = tracks.positions[tr, f]
        if len(f) >= 2:
            d = np.linalg.norm(np.diff(p, axis=0), axis=1) / np.diff(f)
            teleport |= bool(np.any(d > max_speed * size))
            speeds.append(d[np.diff(f) == 1] / size)
            a = tracks.areas[tr, f]
            # Plus one ring of pixels (2 sqrt(a) + 1): a small square gains a row and a column at some offsets.
            slack = AREA_TOL * np.median(a) + 2 * np.sqrt(np.median(a)) + 1
            area_ok &= bool(np.all(np.abs(a - np.median(a)) <= slack))
            c = tracks.colours[tr, f]
            colour_ok &= bool(np.all(np.abs(c - np.median(c, axis=0)) <= COLOUR_TOL))
        # Walls for the centroid: where the object's measured extent (median over its sightings) meets the edge.
        ext = np.median(_extents(p, tracks.boxes[tr, f]), axis=0)
        for axis in range(2):
            lo, hi = ext[2 * axis], limit[axis] - ext[2 * axis + 1]
            consistent &= _axis_consistent(f, p[:, axis], lo, max(hi, lo), tol)
    found = k > 0
    out.update(no_teleport=found and not teleport, area_stable=found and area_ok, colour_stable=found and colour_ok,
               physically_consistent=out["count_preserved"] and found and not teleport and consistent)
    if speeds:
        out["speeds"] = np.concatenate(speeds)
    return out


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """Wasserstein-1 distance between the empirical distributions of samples ``u`` and ``v``: the
    area between their CDFs (what ``scipy.stats.wasserstein_distance`` computes)."""
    u, v = np.sort(np.asarray(u, np.float64).ravel()), np.sort(np.asarray(v, np.float64).ravel())
    if not len(u) or not len(v):
        raise ValueError(f"wasserstein_1d needs samples on both sides, got {len(u)} and {len(v)}")
    grid = np.sort(np.concatenate([u, v]))
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / len(u)
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cdf_u - cdf_v) * np.diff(grid)))


def temporal_pixel_std(videos, batch: int = 64) -> np.ndarray:
    """``(T,)``: for each frame, the standard deviation across the ``N >= 2`` samples of each pixel
    and channel (population std, ``[-1, 1]`` units), averaged over pixels and channels. Real
    clips keep it about constant; a generator whose samples converge as time goes on does not."""
    n = len(videos)
    if n < 2:
        raise ValueError(f"the pixel std across samples needs at least 2 videos, got {n}")
    total = squares = 0.0
    for lo in range(0, n, batch):  # running sums: a float copy of a large set need not fit in memory
        frames = to_frames(videos[lo:lo + batch]).astype(np.float64)
        total, squares = total + frames.sum(0), squares + np.square(frames).sum(0)
    return np.sqrt(np.maximum(squares / n - (total / n) ** 2, 0.0)).mean(axis=(1, 2, 3))


def _verdicts(videos, max_speed: float, batch: int = 64) -> list[dict]:
    out = []
    for lo in range(0, len(videos), batch):
        for clip in to_frames(videos[lo:lo + batch]):
            objects = detect_objects(clip)
            h, w = clip.shape[1:3]
            out.append(clip_motion(track(objects, h, w), h, w, max_speed)
                       | {"detected": np.mean([len(o.areas) > 0 for o in objects])})
    return out


def motion_report(videos, reference=None, max_speed: float = MAX_SPEED) -> dict[str, float]:
    """Oracle motion quality of ``videos`` (float ``(N, 3, T, H, W)`` in ``[-1, 1]`` or uint8
    ``(N, T, H, W, 3)``, ``N >= 2``); ``reference``: real clips of the same family, for ``speed_distance``.

    Keys (fractions of clips unless said): ``count_preserved``, ``no_teleport`` (no object moves
    more than ``max_speed * min(H, W)`` pixels per frame), ``physically_consistent`` (both, and
    every object's path is constant-speed motion with wall bounces), ``area_stable``,
    ``colour_stable``, ``detection_rate`` (fraction of frames with an object), ``objects`` (mean
    count K), ``speed_mean`` (per frame, fraction of ``min(H, W)``), ``speed_distance`` (with a
    reference: Wasserstein-1 between the speeds of the two sets; a set with no measured speed counts
    as all-still), ``temporal_pixel_std`` (mean over frames of :func:`temporal_pixel_std`),
    ``temporal_pixel_std_first`` / ``_last``, and ``temporal_pixel_std_ratio`` = last / first
    (1 when both are 0, NaN when only the first is, e.g. samples that share a given first frame).
    ``clips`` is N.
    """
    per_frame = temporal_pixel_std(videos)  # first: it checks the layout and N >= 2 before the slow part
    verdicts = _verdicts(videos, max_speed)
    report = {"clips": float(len(videos))}
    for key in ("count_preserved", "no_teleport", "physically_consistent", "area_stable", "colour_stable",
                "detected", "objects"):
        report["detection_rate" if key == "detected" else key] = float(np.mean([v[key] for v in verdicts]))
    speeds = np.concatenate([v["speeds"] for v in verdicts])
    report["speed_mean"] = float(speeds.mean()) if len(speeds) else 0.0
    if reference is not None:
        ref = np.concatenate([v["speeds"] for v in _verdicts(reference, max_speed)])
        if not len(ref):
            raise ValueError("no object could be followed in any reference clip, so there is no speed to compare to: "
                             "the reference must be real clips of a family with bright objects on a dark background")
        report["speed_distance"] = wasserstein_1d(speeds if len(speeds) else np.zeros(1), ref)
    first, last = float(per_frame[0]), float(per_frame[-1])
    report.update(temporal_pixel_std=float(per_frame.mean()), temporal_pixel_std_first=first,
                  temporal_pixel_std_last=last,
                  temporal_pixel_std_ratio=last / first if first > 0 else (1.0 if last == 0 else float("nan")))
    return report
