"""Video Diffusion Model, tiny config: what docs/models/vdm.md reports, measured on a trained run.

1. loss: the v-prediction MSE on fixed draws (32 training clips, t on a fixed grid, fixed noise) of the
   initial weights (same seed as the trainer's) against the run's final raw and EMA weights;
2. sampling cost: seconds per video for 8 / 32 / 128 DDIM steps (min of ``--repeats`` runs, batches of 4);
3. conditioning: on held-out clips (dataset seed 1), super-resolution 8x8 -> 16x16 and temporal
   extension 4 -> 8 frames, reconstruction guidance at several w_r against the replacement method.
   ``--paper-forward`` also times one forward pass of configs/vdm_ucf101_64.toml (1.1B parameters).

    python -m kinema train --config configs/vdm_tiny.toml --out /tmp/vdm_run
    python benchmarks/vdm_tiny.py --run /tmp/vdm_run --out benchmarks/results/vdm_tiny_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from kinema import api, diffusion
from kinema.data import Draws, build_dataset
from kinema.registry import build_model, load_config


def clips(cfg, seed: int, n: int) -> torch.Tensor:
    t, h, w = cfg.model.frames, cfg.model.resolution, cfg.model.resolution
    draws = Draws(build_dataset(cfg.data, frames=t, height=h, width=w, seed=seed))
    return torch.stack([draws[i] for i in range(n)])


@torch.no_grad()
def fixed_loss(model, x: torch.Tensor) -> float:
    t = (torch.arange(len(x)) + 0.5) / len(x)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(123))
    logsnr = model.logsnr(t)
    alpha, sigma = diffusion.alpha_sigma(logsnr)
    z = diffusion.broadcast(alpha, x) * x + diffusion.broadcast(sigma, x) * eps
    target = diffusion.training_target(x, eps, alpha, sigma, model.config.parameterization)
    return (model.denoiser(z, logsnr) - target).pow(2).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory trained from configs/vdm_tiny.toml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-forward", action="store_true")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, cfg = api.load(args.run, ema=True)
    raw, _ = api.load(args.run, ema=False)
    torch.manual_seed(cfg.train.seed)
    init = build_model(cfg.model).eval()
    results: dict = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}

    train_clips = clips(cfg, cfg.train.seed, 32)
    results["loss"] = {"initial": fixed_loss(init, train_clips), "final": fixed_loss(raw, train_clips),
                       "final_ema": fixed_loss(model, train_clips)}
    print("fixed-draw loss", results["loss"])

    results["seconds_per_video"] = {}
    for steps in (8, 32, 128):
        walls = []
        for _ in range(args.repeats):
            noise = model.sample_noise(4, torch.Generator().manual_seed(0))
            start = time.perf_counter()
            model.sample(noise, sampler="ddim", steps=steps)
            walls.append((time.perf_counter() - start) / 4)
        results["seconds_per_video"][steps] = min(walls)
        print(f"{steps} DDIM steps: {min(walls):.3f} s per video")

    x = clips(cfg, 1, 8)  # held out: the training data uses seed 0
    low = diffusion.downsample(x, 2)
    noise = model.sample_noise(8, torch.Generator().manual_seed(0))

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    results["super_resolution"], results["extension"] = {}, {}
    for method, w in (("reconstruction", 0.0), ("replacement", 0.0), ("reconstruction", 2.0), ("reconstruction", 8.0)):
        out = model.super_resolve(low, noise, method=method, weight=w, steps=32, generator=gen())
        key = "unconditional" if (method, w) == ("reconstruction", 0.0) else f"{method} w_r={w:g}"
        results["super_resolution"][key] = {"mse_low": (diffusion.downsample(out, 2) - low).pow(2).mean().item(),
                                            "mse_truth": (out - x).pow(2).mean().item()}
        print("SR", key, results["super_resolution"][key])
    context = x[:, :, : cfg.model.frames // 2]
    for method, w in (("replacement", 0.0), ("reconstruction", 2.0), ("reconstruction", 8.0)):
        trace: list[float] = []
        out = model.extend(context, noise, method=method, weight=w, steps=32, generator=gen(), trace=trace)
        key = f"{method} w_r={w:g}"
        t_a = context.shape[2]
        results["extension"][key] = {"mse_new_frames_truth": (out[:, :, t_a:] - x[:, :, t_a:]).pow(2).mean().item(),
                                     "mean_reconstruction_error": sum(trace) / len(trace)}
        print("extend", key, results["extension"][key])

    if args.paper_forward:
        paper = build_model(load_config("configs/vdm_ucf101_64.toml").model).eval()
        z = paper.sample_noise(1, torch.Generator().manual_seed(0))
        with torch.no_grad():
            times = []
            for _ in range(2):
                start = time.perf_counter()
                paper.denoiser(z, torch.zeros(1))
                times.append(time.perf_counter() - start)
        results["paper_forward_seconds"] = min(times)
        print(f"paper config: one forward of one 16x64x64 video {min(times):.1f} s")

    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
