"""DVG on held-out action-switch clips: does it predict the context's motion, and do its futures branch?

For a trained DVG checkpoint (e.g. ``configs/dvg_tiny.toml``, data ``action_switch_digits``), on ``--clips``
held-out clips whose context ends in motion (the run's data family at the trainer's held-out seed; on a
still context copying the last frame is exact) with ``--future`` predicted frames:

1. **prediction**: PSNR / SSIM per predicted frame, and the PSNR of the mean MSE over clips (robust to the
   exact copies -- PSNR capped at 100 dB -- that copying the last frame gives when a digit stops or comes
   back to the same place), of the LSTM rollout (``trigger = "never"``, one future:
   it is deterministic) against copying the last context frame, reported as the means over frames
   ``1..--early`` and ``--early+1..--future``;
2. **best of N**: best-of-``--futures`` PSNR / SSIM with the GP trigger (``gp_variance``) and with the fixed
   schedule (``every_k``);
3. **diversity**: :func:`kinema.metrics.prediction.diversity_score` with ``--futures`` futures per clip of
   ``--diversity-future`` frames for each trigger (``never`` is the LSTM alone), and how often the GP
   trigger fired.

    OMP_NUM_THREADS=1 python benchmarks/dvg_prediction.py --checkpoint runs/dvg_tiny \\
        --out benchmarks/results/dvg_prediction_cpu.json

On data without motion modes (``bouncing_shapes``, ``configs/dvg_cpu16.toml``) every held-out clip is used and
diversity is the RMS pixel difference between two sampled futures (0 for a deterministic predictor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kinema.metrics.prediction import best_of_n_metrics, diversity_score  # noqa: E402
from kinema.registry import load_model  # noqa: E402
from kinema.metrics.evaluate import heldout_real_set  # noqa: E402


def predictor(model, future: int, trigger: str, fired: list | None = None):
    def predict(noise, context):
        video, info = model.sample(noise, frames=context, n_future=future, trigger=trigger, return_info=True)
        if fired is not None:
            fired.append(info["triggered"].any(1).float())
        return video
    return predict


class MovingContext(torch.utils.data.Dataset):
    """The clips of ``dataset`` whose context ends in motion (ground-truth mode of its last step is not
    ``still``): on a still context copying the last frame is exact (PSNR capped at 100 dB), which would
    swamp the mean; the question here is whether the model continues a motion."""

    def __init__(self, dataset, context: int):
        self.dataset = dataset
        self.indices = [i for i in range(len(dataset)) if dataset.ground_truth(i)["modes"][0, context - 2] != 0]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset[self.indices[i]]

    def ground_truth(self, i: int) -> dict:
        return self.dataset.ground_truth(self.indices[i])


def figure(model, data, path: str, future: int, rows: int = 4, frames: int = 15, scale: int = 2) -> dict:
    """A strip image: a held-out clip (top), the LSTM rollout, then ``rows`` futures with the GP trigger, for
    the first clip (of 32) on which the trigger fires in some future -- or clip 0 when it fires on none (then
    the futures are the rollout; the returned ``first_trigger_frame`` says so); the context frames are framed
    green."""
    from PIL import Image

    from kinema.video import to_uint8

    c = model.config
    chosen = None
    for i in range(min(32, len(data))):
        clip = data[i]
        noise = model.sample_noise(rows, generator=torch.Generator().manual_seed(i))
        video, info = model.sample(noise, frames=clip[None, :, : c.n_past], n_future=future, return_info=True)
        candidate = (i, clip, video, info["triggered"])
        chosen = chosen or candidate  # clip 0 stays if the trigger fires nowhere
        if info["triggered"].any():
            chosen = candidate
            break
    i, clip, video, fired = chosen
    lstm = model.sample(model.sample_noise(1), frames=clip[None, :, : c.n_past], n_future=future, trigger="never")
    frames = min(frames, clip.shape[1], video.shape[2])  # a clip of context + future frames may be shorter
    strips = [to_uint8(v[:, :frames]) for v in (clip, lstm[0], *video)]  # each (T, H, W, 3)
    r = c.resolution
    canvas = np.zeros((len(strips) * (r + 2), frames * (r + 2), 3), np.uint8)
    for row, strip in enumerate(strips):
        for t in range(frames):
            y, x = row * (r + 2), t * (r + 2)
            if t < c.n_past:
                canvas[y: y + r + 2, x: x + r + 2] = (0, 160, 0)
            canvas[y + 1: y + 1 + r, x + 1: x + 1 + r] = strip[t]
    image = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return {"clip": i, "first_trigger_frame": [int(f.nonzero()[0]) + 1 if f.any() else None for f in fired]}


@torch.no_grad()
def pixel_diversity(model, data, clips: int, futures: int, context: int, predict, seed: int) -> float:
    """Mean over clips of the RMS difference between two of ``futures`` sampled futures (predicted frames only,
    on [0, 1]), averaged over pairs: 0 for a deterministic predictor. For data without motion modes."""
    values = []
    for i in range(min(clips, len(data))):
        clip = data[i][None, :, :context]
        noise = model.sample_noise(futures, generator=torch.Generator().manual_seed(seed * 100_003 + i))
        video = predict(noise, clip.expand(futures, *clip.shape[1:]))[:, :, context:]
        frames = (video.clamp(-1, 1) + 1) / 2
        flat = frames.reshape(futures, -1)
        pairs = [(a, b) for a in range(futures) for b in range(a + 1, futures)]
        values.append(np.mean([float((flat[a] - flat[b]).pow(2).mean().sqrt()) for a, b in pairs]))
    return float(np.mean(values))


def spans(curve: list[float], early: int) -> dict:
    out = {f"frames_1_{min(early, len(curve))}": float(np.mean(curve[:early]))}
    if len(curve) > early:
        out[f"frames_{early + 1}_{len(curve)}"] = float(np.mean(curve[early:]))
    return out


def held_out_clips(config, future: int, train_seed: int):
    """The clips held out from a run trained with ``train_seed`` (those ``kinema evaluate`` scores against:
    :func:`kinema.metrics.evaluate.heldout_real_set`), ``n_past + future`` frames at the model's resolution."""
    c = config.model
    return heldout_real_set(config.data, train_seed, c.n_past + future, c.resolution, c.resolution)[0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="DVG run directory or checkpoint")
    parser.add_argument("--clips", type=int, default=64, help="held-out clips (default 64)")
    parser.add_argument("--future", type=int, default=20, help="frames predicted after the context (default 20)")
    parser.add_argument("--early", type=int, default=5, help="the first frames reported apart (default 5)")
    parser.add_argument("--futures", type=int, default=10, help="sampled futures per clip (default 10)")
    parser.add_argument("--diversity-future", type=int, default=None,
                        help="frames predicted for the diversity score (default --future)")
    parser.add_argument("--figure", help="also write a strip image (real clip, LSTM rollout, futures) here")
    parser.add_argument("--held-out-seed", type=int, default=None,
                        help="score the held-out clips of this training seed (default: the checkpoint's "
                             "train.seed), so runs trained with different seeds are scored on the same clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled futures (default 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, config, ckpt = load_model(args.checkpoint, device=torch.device("cpu"))
    model.eval()
    c = config.model
    train_seed = config.train.seed if args.held_out_seed is None else args.held_out_seed
    data = held_out_clips(config, args.future, train_seed)
    has_modes = "modes" in (data.ground_truth(0) if hasattr(data, "ground_truth") else {})
    if has_modes:  # action-switch data: only contexts that end in motion (see MovingContext)
        data = MovingContext(data, c.n_past)
    result: dict = {"checkpoint": str(ckpt), "family": config.data.family, "clips": args.clips,
                    "held_out_of_train_seed": train_seed,
                    "context": c.n_past, "future": args.future, "futures": args.futures}
    lstm = best_of_n_metrics(model, data, args.clips, 1, seed=args.seed, predict=predictor(model, args.future, "never"))
    result["lstm_psnr"], result["lstm_ssim"] = lstm["psnr"], lstm["ssim"]
    result["copy_last_psnr"], result["copy_last_ssim"] = lstm["copy_last_psnr"], lstm["copy_last_ssim"]
    psnr_of = lambda mse: [10 * float(np.log10(1 / m)) for m in mse]  # noqa: E731
    result["summary"] = {"lstm_psnr_of_mean_mse": spans(psnr_of(lstm["mse"]), args.early),
                         "copy_last_psnr_of_mean_mse": spans(psnr_of(lstm["copy_last_mse"]), args.early),
                         "lstm_psnr": spans(lstm["psnr"], args.early),
                         "copy_last_psnr": spans(lstm["copy_last_psnr"], args.early),
                         "lstm_ssim": spans(lstm["ssim"], args.early),
                         "copy_last_ssim": spans(lstm["copy_last_ssim"], args.early)}
    for trigger in ("gp_variance", "every_k"):
        best = best_of_n_metrics(model, data, args.clips, args.futures, seed=args.seed,
                                 predict=predictor(model, args.future, trigger))
        result[f"best_of_{args.futures}_{trigger}"] = {"psnr": best["psnr"], "ssim": best["ssim"]}
        result["summary"][f"best_of_{args.futures}_{trigger}_psnr"] = spans(best["psnr"], args.early)
        result["summary"][f"best_of_{args.futures}_{trigger}_psnr_of_mean_mse"] = spans(psnr_of(best["mse"]), args.early)
        result["summary"][f"best_of_{args.futures}_{trigger}_ssim"] = spans(best["ssim"], args.early)
    horizon = args.diversity_future or args.future
    result["diversity_future"] = horizon
    for trigger in ("never", "gp_variance", "every_k"):
        fired: list = []
        predict = predictor(model, horizon, trigger, fired)
        if has_modes:
            div = diversity_score(model, data, args.clips, args.futures, seed=args.seed, predict=predict)
            summary = {k: div[k] for k in ("value", "distinct_modes", "pairwise_disagreement", "real_changed",
                                           "estimator_accuracy")}
        else:  # no motion modes to compare (e.g. bouncing_shapes): how far apart the futures are, in pixels
            summary = {"pairwise_rms": pixel_diversity(model, data, args.clips, args.futures, c.n_past, predict,
                                                       args.seed)}
        result["summary"][f"diversity_{trigger}"] = summary
        result["summary"][f"diversity_{trigger}"]["futures_with_a_gp_draw"] = float(torch.cat(fired).mean())
    if args.out:  # the figures first: a failing strip image must not lose them
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.figure:
        result["figure"] = figure(model, data, args.figure, args.future)
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result["summary"], indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
