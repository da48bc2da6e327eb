"""Where a VDM's denoiser errs, noise level by noise level: kinema's against video-diffusion-pytorch's.

For held-out ``bouncing_shapes`` clips (``quality.HELD_OUT_SEED``, 16 x 16 x 16 as in the equal-compute table) noised
at each of the 32 sampler levels with one fixed noise draw, it reports per level the denoiser's noise-prediction
error (eps MSE), its estimate x-hat clipped to [-1, 1] as every sampler step clips it (mean, to compare with the
clips' mean; MSE against the clips). kinema: a checkpoint (``--checkpoint``), at ``t = i / 32`` of its schedule.
The reference (``--reference-steps N``): ``GaussianDiffusion(Unet3D)`` trained N steps at ``--seed`` exactly as
``equal_compute.py`` trains it (same batches, same build), at its own 32 discrete levels.

This is the measurement behind docs/quality.md's VDM reading (eps prediction, per-frame against per-video
GroupNorm statistics):

    OMP_NUM_THREADS=1 python benchmarks/vdm_levels.py --checkpoint RUN/checkpoints/step_0000600 \
        --reference-steps 600 --seed 0 --out levels.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import equal_compute as ec  # noqa: E402

LEVELS = 32


def level_row(side: str, level: int, logsnr: float, x: torch.Tensor, eps: torch.Tensor, eps_hat: torch.Tensor,
              x_hat: torch.Tensor) -> dict:
    clipped = x_hat.clamp(-1, 1)
    return {"side": side, "level": level, "logsnr": logsnr, "eps_mse": float((eps_hat - eps).pow(2).mean()),
            "x_hat_clipped_mean": float(clipped.mean()), "x_hat_clipped_mse": float((clipped - x).pow(2).mean()),
            "clips_mean": float(x.mean())}


@torch.no_grad()
def kinema_levels(checkpoint: str, x: torch.Tensor, eps: torch.Tensor) -> list[dict]:
    from kinema import api, diffusion

    model, _ = api.load(checkpoint)
    model.eval()
    rows = []
    for i in range(LEVELS, 0, -1):
        t = torch.full((x.shape[0],), i / LEVELS)
        logsnr = model.logsnr(t)
        alpha, sigma = diffusion.alpha_sigma(logsnr)
        z = diffusion.broadcast(alpha, x) * x + diffusion.broadcast(sigma, x) * eps
        x_hat = model.x0(z, t)  # what every sampler step computes before its clip
        rows.append(level_row("kinema", i, float(logsnr[0]), x, eps, diffusion.eps_from_x0(x_hat, z, alpha, sigma),
                              x_hat))
    return rows


def reference_levels(steps: int, seed: int, x: torch.Tensor, eps: torch.Tensor) -> list[dict]:
    model, _ = ec.trained_reference_vdm(ec.Batches("vdm", seed), steps, seed)  # as equal_compute.py trains it
    rows = []
    with torch.no_grad():
        for i in range(model.num_timesteps - 1, -1, -1):
            t = torch.full((x.shape[0],), i, dtype=torch.long)
            abar = model.alphas_cumprod[i].float()
            z = abar.sqrt() * x + (1 - abar).sqrt() * eps
            eps_hat = model.denoise_fn(z, t)
            rows.append(level_row("reference", i + 1, float(torch.log(abar / (1 - abar))), x, eps, eps_hat,
                                  model.predict_start_from_noise(z, t, eps_hat)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", default=[], help="a kinema VDM checkpoint (repeatable)")
    ap.add_argument("--reference-steps", type=int, default=0,
                    help="also train video-diffusion-pytorch this many steps (equal_compute.py's trainer) and measure it")
    ap.add_argument("--seed", type=int, default=0, help="the reference's training seed (default 0)")
    ap.add_argument("--clips", type=int, default=32, help="held-out clips (default 32)")
    ap.add_argument("--noise-seed", type=int, default=123, help="seed of the one noise draw (default 123)")
    ap.add_argument("--out", help="JSON lines, one row per side, checkpoint and level")
    args = ap.parse_args(argv)
    if not args.checkpoint and not args.reference_steps:
        ap.error("give --checkpoint and/or --reference-steps")
    torch.set_num_threads(1)
    x = ec.held_out(16, args.clips, "bouncing_shapes", None)[0].float()  # (N, 3, 16, 16, 16) in [-1, 1]
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(args.noise_seed))
    rows = [dict(row, checkpoint=c) for c in args.checkpoint for row in kinema_levels(c, x, eps)]
    if args.reference_steps:
        rows += [dict(row, steps=args.reference_steps, seed=args.seed)
                 for row in reference_levels(args.reference_steps, args.seed, x, eps)]
    for row in rows:
        print(json.dumps(row))
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
