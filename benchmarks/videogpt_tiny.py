"""VideoGPT tiny configs: VQ-VAE reconstruction PSNR on held-out synthetic clips, and prior sampling speed
with and without the key/value cache.

PSNR (pixels in [0, 1], i.e. ``10 log10(4 / mse)`` for kinema's [-1, 1]) of ``--vqvae``'s reconstructions of
``--num`` bouncing-shapes clips drawn with a seed the training never used, against the "predict the mean"
baseline (the per-pixel mean clip of ``--num`` training clips -- the best constant predictor).
Sampling: ``--num-samples`` videos from ``--prior`` (decoding included), KV-cached vs full recomputation
at every position, median of ``--repeats`` runs; also checks that both give the same codes.

    python benchmarks/videogpt_tiny.py --vqvae runs/vq --prior runs/prior --out benchmarks/results/videogpt_tiny_cpu.json
    python benchmarks/videogpt_tiny.py --random-prior 4 8 8 --hidden 192 --layers 4 --num-samples 1 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from kinema.data import build_dataset
from kinema.registry import load_model


def psnr(mse: float) -> float:
    return 10 * math.log10(4.0 / mse)  # peak-to-peak 2 in [-1, 1] == 1 in [0, 1]


@torch.no_grad()
def reconstruction(vqvae_path: str, num: int, held_out_seed: int) -> dict:
    model, config, ckpt = load_model(vqvae_path, device="cpu")
    _, t, h, w = model.video_shape
    held = build_dataset(config.data, frames=t, height=h, width=w, seed=held_out_seed, train=False)
    train = build_dataset(config.data, frames=t, height=h, width=w, seed=config.train.seed, train=True)
    x = torch.stack([held[i] for i in range(num)])
    mean_clip = torch.stack([train[i] for i in range(num)]).mean(0, keepdim=True)
    recon = torch.cat([model.decode(model.encode(chunk)).clamp(-1, 1) for chunk in x.split(16)])
    mse = (recon - x).pow(2).mean().item()
    mse_mean = (mean_clip - x).pow(2).mean().item()
    return {"checkpoint": str(ckpt), "clips": num, "held_out_seed": held_out_seed,
            "psnr_db": round(psnr(mse), 2), "mse": mse,
            "mean_baseline_psnr_db": round(psnr(mse_mean), 2), "mean_baseline_mse": mse_mean}


@torch.no_grad()
def sampling(prior_path: str, num: int, repeats: int) -> dict:
    model, _, ckpt = load_model(prior_path, device="cpu")
    noise = model.sample_noise(num, generator=torch.Generator().manual_seed(0))
    result = {"checkpoint": str(ckpt), "videos": num, "tokens_per_video": math.prod(model.latent_shape)}
    codes = {}
    for use_cache in (True, False):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            codes[use_cache] = model.sample_codes(noise, use_cache=use_cache)
            model.vqvae.decode(codes[use_cache])
            times.append(time.perf_counter() - start)
        result["kv_cache" if use_cache else "no_cache"] = {"seconds": round(statistics.median(times), 3),
                                                           "runs": [round(s, 3) for s in times]}
    result["same_codes"] = bool(torch.equal(codes[True], codes[False]))
    result["speedup"] = round(result["no_cache"]["seconds"] / result["kv_cache"]["seconds"], 2)
    return result


@torch.no_grad()
def random_prior_sampling(grid: list[int], hidden: int, layers: int, num: int, repeats: int) -> dict:
    """The same measurement on an untrained prior of any size (random output weights, so the draws are
    not degenerate) over a ``grid = (t, h, w)`` of codes; the VQ-VAE is a narrow placeholder."""
    from kinema.models.videogpt import VideoGPTPrior, VideoGPTPriorConfig

    t, h, w = grid
    vq = {"name": "videogpt_vqvae", "frames": 2 * t, "resolution": 4 * h, "downsample": [2, 4, 4], "hidden": 16,
          "res_layers": 1, "codebook_size": 512, "embedding_dim": 32}
    if h != w:
        raise SystemExit("--grid: h and w must be equal")
    cfg = VideoGPTPriorConfig(vqvae_config=json.dumps(vq), frames=2 * t, resolution=4 * h, downsample=[2, 4, 4],
                              codebook_size=512, hidden=hidden, heads=4, layers=layers, dropout=0.0, attn_dropout=0.0)
    cfg.validate()
    torch.manual_seed(0)
    model = VideoGPTPrior(cfg).eval()
    torch.nn.init.normal_(model.transformer.fc_out.weight, std=0.05)
    noise = model.sample_noise(num, generator=torch.Generator().manual_seed(0))
    result = {"grid": grid, "tokens_per_video": t * h * w, "hidden": hidden, "layers": layers, "videos": num,
              "transformer_parameters": sum(p.numel() for p in model.transformer.parameters())}
    codes = {}
    for use_cache in (True, False):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            codes[use_cache] = model.sample_codes(noise, use_cache=use_cache)
            times.append(time.perf_counter() - start)
        result["kv_cache" if use_cache else "no_cache"] = {"seconds": round(statistics.median(times), 3),
                                                           "runs": [round(x, 3) for x in times]}
    result["same_codes"] = bool(torch.equal(codes[True], codes[False]))
    result["speedup"] = round(result["no_cache"]["seconds"] / result["kv_cache"]["seconds"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqvae", help="VQ-VAE run or checkpoint (configs/videogpt_vqvae_tiny.toml)")
    parser.add_argument("--prior", help="prior run or checkpoint (configs/videogpt_prior_tiny.toml)")
    parser.add_argument("--num", type=int, default=256, help="held-out clips for the PSNR")
    parser.add_argument("--held-out-seed", type=int, default=12345)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--random-prior", nargs=3, type=int, metavar=("T", "H", "W"),
                        help="also time an untrained prior over a T x H x W code grid (codes only, no decoding)")
    parser.add_argument("--hidden", type=int, default=192, help="--random-prior width")
    parser.add_argument("--layers", type=int, default=4, help="--random-prior depth")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads()}
    if args.vqvae:
        results["reconstruction"] = reconstruction(args.vqvae, args.num, args.held_out_seed)
    if args.prior:
        results["sampling"] = sampling(args.prior, args.num_samples, args.repeats)
    if args.random_prior:
        results["random_prior_sampling"] = random_prior_sampling(args.random_prior, args.hidden, args.layers,
                                                                 args.num_samples, args.repeats)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
