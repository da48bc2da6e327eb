"""Evaluate a checkpoint under named protocols: features of generated and real clips, cached.

Generated clips are produced in batches from seeded noise and turned into features at once, so
2,048 clips at 192x192 never sit in memory. Real-clip features are cached on disk under a key made
of the dataset description, network, frame count, clip count, seed and the SHA-256 of the weights
file, and reused (FVD and KVD with the same network and frames share them).

The held-out real set (:func:`heldout_real_set`: its seed, its cache key) and the metric networks' weights
paths (:func:`weights_path`) are worked out here for every caller: ``kinema evaluate``, the trainer's
``train.eval_every`` and the quality benchmark.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kinema.config import DataConfig
from kinema.data import build_dataset
from kinema.data.batch import Batch
from kinema.metrics.frechet import FeatureStats, frechet_distance_from_stats
from kinema.metrics.protocols import Protocol, get_protocol
from kinema.files import file_sha256
from kinema.video import to_uint8

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # videos (N, 3, T, H, W) in [-1, 1] -> (N, D)


# Added to the run's train.seed for the held-out real clips of synthetic data: synthetic clips are a function
# of the seed, so another seed is a set the training never saw.
HELD_OUT_SEED_OFFSET = 1_000_003

# Where each metric network's weights are looked for when no path is given.
WEIGHTS_ENV = {"i3d": "KINEMA_I3D_WEIGHTS", "c3d": "KINEMA_C3D_WEIGHTS", "c3d_mean": "KINEMA_C3D_MEAN",
               "inception": "KINEMA_INCEPTION_WEIGHTS", "lpips": "KINEMA_LPIPS_WEIGHTS"}


def default_cache_dir() -> Path:
    return Path(os.environ.get("KINEMA_CACHE", Path.home() / ".cache" / "kinema")) / "real_features"


def weights_path(network: str, given: str | None = None) -> str | None:
    """The weights file of ``network`` (a key of :data:`WEIGHTS_ENV`): ``given``, else its environment variable."""
    return given or os.environ.get(WEIGHTS_ENV[network])


def heldout_real_set(data: DataConfig, seed: int, frames: int, height: int,
                     width: int) -> tuple[torch.utils.data.Dataset, dict]:
    """The real clips a model is scored against, and the key their cached features are stored under.

    ``data``: the run's data config, or a folder / ``kinema prepare`` cache given with ``--data``; clips of
    ``frames x height x width``, drawn with the run's ``seed`` -- for synthetic data ``seed +
    HELD_OUT_SEED_OFFSET``, clips the training never saw. The key names everything that changes the clips
    (frame stride included). Returns ``(dataset, key)``.
    """
    real_seed = seed + HELD_OUT_SEED_OFFSET if data.source == "synthetic" else seed
    dataset = build_dataset(data, frames=frames, height=height, width=width, seed=real_seed, train=False)
    key = {"source": data.source, "path": str(Path(data.path).resolve()) if data.path else "",
           "family": data.family, "num_clips": data.num_clips, "frame_stride": data.frame_stride,
           "size": [frames, height, width], "seed": real_seed}
    if data.source == "hdf5":  # one file holds two sets of videos; other sources keep their earlier keys
        key["split"] = data.split
    return dataset, key


def resolve_protocols(metrics) -> list[Protocol]:
    """Protocol names (or protocols) -> protocols; an unknown name fails here, before any work."""
    return [m if isinstance(m, Protocol) else get_protocol(m) for m in metrics]




def quantise(videos: torch.Tensor) -> np.ndarray:
    """``(N, 3, T, H, W)`` in [-1, 1] -> uint8 ``(N, T, H, W, 3)``, as videos written to disk would be."""
    return np.stack([to_uint8(v) for v in videos])


def feature_function(protocol: Protocol, weights: dict[str, str | None], device: torch.device) -> FeatureFn:
    """The protocol's network as ``videos -> features`` (I3D logits, or C3D class probabilities)."""
    if protocol.network == "i3d":
        from kinema.metrics.networks.i3d import i3d_logits, load_i3d

        model = load_i3d(weights.get("i3d"), device=device)
        return lambda videos: i3d_logits(quantise(videos), model, device=device)
    if protocol.network == "inception":
        from kinema.metrics.networks.inception import load_inception

        model = load_inception(weights.get("inception"), device=device)

        def frame_features(videos: torch.Tensor) -> torch.Tensor:  # (n, 3, T, H, W) -> (n * T, 2048)
            frames = quantise(videos)
            return model.frame_features(frames.reshape(-1, *frames.shape[2:]))

        return frame_features
    from kinema.metrics.networks.c3d import load_c3d, load_mean_clip, preprocess_for_c3d

    model = load_c3d(weights.get("c3d")).to(device).eval()
    mean_clip = load_mean_clip(weights.get("c3d_mean"))

    @torch.no_grad()
    def c3d_probs(videos: torch.Tensor) -> torch.Tensor:
        x = preprocess_for_c3d(videos.clamp(-1, 1), protocol.c3d_preprocessing, mean_clip)
        return model(x.to(device)).cpu()

    return c3d_probs


def generated_batches(model, num: int, frames: int, seed: int, batch_size: int) -> Iterator[torch.Tensor]:
    """``num`` generated videos in batches ``(b, 3, frames, H, W)``, from one seeded noise draw. A model whose
    capabilities declare continuous time renders a protocol longer than its training clips at the time
    points ``0 .. frames - 1`` (frame units: the trained frame rate), as StyleGAN-V's own 128-frame FVD."""
    available = model.video_shape[1]
    conditions = {}
    if available < frames:
        if not model.capabilities.continuous_time:
            raise ValueError(f"the protocol needs {frames} frames per video but the model generates {available}; "
                             "use a protocol with fewer frames")
        conditions["times"] = torch.arange(frames, dtype=torch.float32)
    device = next(model.parameters()).device
    noise = model.sample_noise(num, generator=torch.Generator().manual_seed(seed), device=device)
    with torch.no_grad():
        for chunk in noise.split(batch_size):
            yield model.sample(chunk, **conditions)[:, :, :frames].float().cpu()


def continued_batches(model, dataset, num: int, frames: int, seed: int, batch_size: int,
                      workers: int = 0) -> Iterator[torch.Tensor]:
    """``num`` videos ``(b, 3, frames, H, W)`` of a frame-conditional model, each generated from the first
    ``capabilities.context_frames`` frames of one of the real clips :func:`real_batches` draws with the same seed --
    the clips the generated set is then compared with. VideoGPT's protocol (``scripts/compute_fvd.py``:
    samples conditioned on the test batch, all their frames scored against that batch). One seeded noise
    draw, so a video does not depend on the batch size."""
    from kinema.metrics.prediction import context_frames

    if dataset is None:
        raise ValueError("this model continues given frames: the generated set needs real clips to start from "
                         "(give a dataset, --data)")
    if model.video_shape[1] < frames:
        raise ValueError(f"the protocol needs {frames} frames per video but the model generates "
                         f"{model.video_shape[1]}; use a protocol with fewer frames")
    tc = context_frames(model)
    device = next(model.parameters()).device
    noise = model.sample_noise(num, generator=torch.Generator().manual_seed(seed), device=device)
    start = 0
    with torch.no_grad():
        for clips in real_batches(dataset, num, seed, batch_size, max(frames, tc), workers):
            videos = model.sample(noise[start : start + len(clips)], frames=clips[:, :, :tc].to(device))
            start += len(clips)
            yield videos[:, :, :frames].float().cpu()


def real_batches(dataset, num: int, seed: int, batch_size: int, frames: int, workers: int = 0) -> Iterator[torch.Tensor]:
    """``num`` real clips drawn without replacement, in a seeded order, in batches; decoded in
    ``workers`` DataLoader processes (0: in this process)."""
    if len(dataset) < num:
        raise ValueError(f"too few real clips: the protocol needs {num}, the dataset has {len(dataset)}; "
                         "use more data, or lower --num (the result is then not comparable with the protocol)")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num].tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, order), batch_size=batch_size,
                                         num_workers=workers, shuffle=False, collate_fn=Batch.collate)
    for batch in loader:
        clips = batch.clips
        if clips.shape[2] < frames:
            raise ValueError(f"real clips have {clips.shape[2]} frames, the protocol needs {frames}")
        yield clips[:, :, :frames]


def extract(batches: Iterator[torch.Tensor], features: FeatureFn, num: int, desc: str) -> np.ndarray:
    out = []
    with tqdm(total=num, desc=desc, unit="clip", leave=False) as bar:
        for batch in batches:
            f = features(batch).double().cpu().numpy()
            if not np.isfinite(f).all():
                raise ValueError(f"{desc}: the network produced NaN/inf features; check its weights and input range")
            out.append(f)
            bar.update(len(batch))
    return np.concatenate(out)


def cached_real_features(key: dict, compute: Callable[[], np.ndarray], cache_dir: Path | None) -> np.ndarray:
    """Load real features for ``key`` from the cache, or compute and store them (atomically)."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{key['network']}-{key['frames']}f-{digest}.npy"
    if path.is_file():
        return np.load(path)
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, features)
    os.replace(tmp, path)
    (path.with_suffix(".json")).write_text(json.dumps(key, indent=1, sort_keys=True))
    return features


def score(protocol: Protocol, fake: np.ndarray, real: np.ndarray | None) -> dict:
    """The protocol's statistic from feature arrays ``(N, D)``."""
    if protocol.statistic in ("fvd", "fid"):
        a, b = FeatureStats(), FeatureStats()
        a.update(real)
        b.update(fake)
        return {"value": frechet_distance_from_stats(a, b), "std": None}
    if protocol.statistic == "kvd":
        from kinema.metrics.kernel import kernel_distance

        return kernel_distance(real, fake, mode="all_pairs")
    from kinema.metrics.inception_score import repeated_inception_score

    sets = np.array_split(fake, protocol.repeats)
    mean, std = repeated_inception_score([torch.from_numpy(s) for s in sets])
    return {"value": mean, "std": std}


def oracle_score(model, dataset, count: int, seed: int, batch_size: int, workers: int = 0,
                 fake_dataset=None) -> dict:
    """The oracle motion measures (:func:`kinema.metrics.oracle.motion_report`) of ``count`` generated
    (or ``fake_dataset``) vs ``count`` real clips at the model's frame count; ``value``: the physically
    consistent fraction."""
    from kinema.metrics.oracle import motion_report

    if dataset is None:
        raise ValueError("the motion protocol compares with real clips: give a dataset (--data)")
    if fake_dataset is not None:
        frames = fake_dataset.frames
        fake = torch.cat(list(real_batches(fake_dataset, count, seed, batch_size, frames, workers)))
    else:
        frames = model.video_shape[1]
        fake = torch.cat(list(generated_batches(model, count, frames, seed, batch_size)))
    real = torch.cat(list(real_batches(dataset, count, seed, batch_size, frames, workers)))
    report = motion_report(fake.clamp(-1, 1), reference=real)
    return {"value": report["physically_consistent"], "std": None, "num": count, "protocol_num": count,
            "frames": frames, **report}


def prediction_score(protocol: Protocol, model, dataset, count: int, seed: int, batch_size: int,
                     fake_dataset=None, lpips_weights: str | None = None) -> dict:
    """Best-of-N SSIM/PSNR (and LPIPS with ``lpips_weights``) or the motion-mode diversity of a prediction
    model on ``count`` real clips."""
    from kinema.metrics.prediction import best_of_n_metrics, diversity_score

    if fake_dataset is not None or model is None:
        raise ValueError(f"{protocol.name} samples futures of real clips' contexts: give a checkpoint of a prediction "
                         "model, not --fake")
    if dataset is None:
        raise ValueError(f"{protocol.name} predicts futures of real clips: give a dataset (--data)")
    if protocol.statistic == "best_of_n":
        lpips = None
        if lpips_weights:
            from kinema.metrics.lpips import LPIPS

            lpips = LPIPS.from_file(lpips_weights).to(next(model.parameters()).device)  # frames move to it
        result = best_of_n_metrics(model, dataset, count, protocol.futures, seed=seed, batch_size=batch_size,
                                   lpips=lpips)
    else:
        result = diversity_score(model, dataset, count, protocol.futures, seed=seed, batch_size=batch_size)
    return {**result, "protocol_num": protocol.num_samples, "frames": int(dataset[0].shape[1])}


def continues_frames(model) -> bool:
    """A model that samples only from given frames and says how many (``capabilities.context_frames``): the
    feature-network protocols score its continuations of the real clips."""
    caps = model.capabilities
    return not caps.unconditional and "frames" in caps.conditions and caps.context_frames > 0


def check_model_suits(model, metrics) -> None:
    """Refuse, before any work, a protocol that samples ``model`` in a way it cannot: the generative
    protocols draw videos from noise alone, the prediction protocols continue real clips' frames.
    ``metrics``: protocols (or their names)."""
    if model is None:
        return
    caps = model.capabilities
    protocols = resolve_protocols(metrics)
    predictions = [p.name for p in protocols if p.statistic in ("best_of_n", "diversity")]
    unconditional = [p for p in protocols if p.name not in predictions]
    if continues_frames(model):  # FVD & co. of its continuations of the real clips (continued_batches)
        unconditional = [p for p in unconditional if p.statistic == "oracle"]
    unconditional = [p.name for p in unconditional]
    if unconditional and not caps.unconditional:
        raise ValueError(f"{', '.join(unconditional)} sample{'s' if len(unconditional) == 1 else ''} the model from "
                         f"noise alone, but this {type(model).__name__} needs a condition "
                         f"({', '.join(sorted(caps.conditions))}); score it with a prediction protocol "
                         "(bestof100_ssim_psnr, modes_diversity10) instead")
    if predictions and ("frames" not in caps.conditions or caps.context_frames < 1):
        why = "does not take frames to condition on" if "frames" not in caps.conditions else \
            "is not a prediction model (capabilities.context_frames = 0: it takes frames only as a prefix)"
        raise ValueError(f"{', '.join(predictions)} continue real clips' frames, but this {type(model).__name__} {why}; "
                         "score it with fvd2048_16f or motion256 instead")


def _check_counts(model, protocols: list[Protocol], num: int | None, dataset, fake_dataset) -> None:
    """Before any clip is generated: enough real (and fake) clips for every protocol, and room in memory
    for the noise of all generated clips (drawn at once, so a video does not depend on the batch size)."""
    from kinema.system import available_memory

    most = 0
    for protocol in protocols:
        name = protocol.name
        count = num or protocol.num_samples
        real = count if protocol.statistic == "oracle" else protocol.clips_for(count)
        fake = protocol.clips_for(count * protocol.repeats) if protocol.statistic == "is" else real
        for clips, what, needed, holder in ((dataset, "real", real, "dataset"),
                                            (fake_dataset, "generated", fake, "generated set")):
            if clips is not None and (protocol.needs_real or what == "generated") and len(clips) < needed:
                raise ValueError(f"too few {what} clips: the protocol needs {needed}, the {holder} has {len(clips)} "
                                 f"({name}); use more data, or lower --num (the result is then not comparable with "
                                 "the protocol)")
        most = max(most, fake)
    if model is not None and fake_dataset is None:
        free = available_memory()
        try:
            noise = model.sample_noise(1, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
        except Exception:  # a model that cannot sample says so when evaluation asks it to
            return
        need = most * noise.numel() * noise.element_size()
        if free is not None and need > 0.8 * free:
            raise ValueError(f"--num {num}: the noise of {most:,} generated clips alone is {need / 2**30:,.1f} GiB, more "
                             f"than the {free / 2**30:.1f} GiB of memory available; lower --num")


def evaluate_model(
    model,
    metrics: list,
    weights: dict[str, str | None],
    dataset=None,
    dataset_key: dict | None = None,
    num: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    workers: int = 0,
    fake_dataset=None,
) -> dict[str, dict]:
    """Score ``model`` (eval mode) under each protocol in ``metrics`` (protocols or their names); returns
    ``{name: result}``.

    ``fake_dataset``: score these clips (a dataset of generated videos) instead of sampling ``model``.

    ``num`` overrides the protocol's clip count (the result then carries ``"num"`` so nobody mistakes
    it for the protocol's). Real features come from ``dataset`` and are cached under ``dataset_key``.
    """
    if not metrics:
        raise ValueError("no metric named: give one or more protocol names (kinema.metrics.protocols.PROTOCOLS)")
    if num is not None and num < 1:  # 0 must not fall back to the protocol's count
        raise ValueError(f"--num must be > 0 (or omitted for the protocol's count), got {num}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be > 0, got {batch_size}")
    protocols = resolve_protocols(metrics)
    check_model_suits(model, protocols)
    _check_counts(model, protocols, num, dataset, fake_dataset)
    device = torch.device(device)
    results: dict[str, dict] = {}
    networks: dict[tuple, FeatureFn] = {}
    memo: dict[tuple, np.ndarray] = {}  # fvd2048_16f and kvd2048_16f share both feature sets
    for protocol in protocols:
        name = protocol.name
        count = num or protocol.num_samples
        if protocol.statistic == "oracle":
            results[name] = oracle_score(model, dataset, count, seed, batch_size, workers, fake_dataset)
            continue
        if protocol.statistic in ("best_of_n", "diversity"):
            results[name] = prediction_score(protocol, model, dataset, count, seed, batch_size, fake_dataset,
                                             weights.get("lpips"))
            continue
        total = protocol.clips_for(count * protocol.repeats if protocol.statistic == "is" else count)
        if protocol.statistic == "is" and count < 2:
            raise ValueError(f"{name} needs at least 2 clips per repetition, got {count}")
        net_key = (protocol.network, protocol.c3d_preprocessing)
        if net_key not in networks:
            networks[net_key] = feature_function(protocol, weights, device)
        features = networks[net_key]
        fake_key = ("fake", *net_key, protocol.frames, total)
        if fake_key not in memo:
            if fake_dataset is not None:
                batches = real_batches(fake_dataset, total, seed, batch_size, protocol.frames, workers)
            elif continues_frames(model):
                batches = continued_batches(model, dataset, total, protocol.frames, seed, batch_size, workers)
            else:
                batches = generated_batches(model, total, protocol.frames, seed, batch_size)
            memo[fake_key] = extract(batches, features, total, f"{name}: generated")
        fake = memo[fake_key][: count if protocol.statistic == "fid" else None]
        real = None
        if protocol.needs_real:
            if dataset is None:
                raise ValueError(f"{name} compares with real clips: give a dataset (--data)")
            clips = protocol.clips_for(count)
            real_key = ("real", *net_key, protocol.frames, clips)
            if real_key not in memo:
                network_weights = weights.get(protocol.network)
                key = {"network": protocol.network, "frames": protocol.frames, "num": clips, "seed": seed,
                       "data": dataset_key or repr(dataset),
                       "weights_sha256": file_sha256(network_weights) if network_weights else None}
                compute = functools.partial(  # runs only on a cache miss
                    extract, real_batches(dataset, clips, seed, batch_size, protocol.frames, workers), features,
                    clips, f"{name}: real")
                memo[real_key] = cached_real_features(key, compute, cache_dir)
            real = memo[real_key][: count if protocol.statistic == "fid" else None]
        result = score(protocol, fake, real)
        result.update({"num": count, "protocol_num": protocol.num_samples, "frames": protocol.frames})
        results[name] = result
    return results
