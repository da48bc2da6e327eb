"""Time for each temporal generator to produce 16 latent frames (CPU by default).

Vector codes as in TGAN / TGAN-ODE (z of 100 dims) and map codes as in TGANv2 / TGANv2-ODE
(C x 3 x 3, C = 1024 at paper width). Median of ``--repeats`` forward passes after one warm-up.

    python benchmarks/temporal_speed.py --batch 16 --map-channels 1024
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kinema.nn.temporal import TemporalConfig, build_temporal

VECTOR_KINDS = [("conv1d", {}), ("gru", {}), ("lstm", {}), ("ode", {}), ("ode", {"layers": 3}),
                ("ode", {"order": 2}), ("ode", {"order": 3}), ("sde", {})]
MAP_KINDS = [("convlstm", {}), ("ode", {"activation": "leaky_relu"}), ("ode", {"order": 2, "activation": "leaky_relu"}),
             ("sde", {"activation": "leaky_relu"})]


def time_it(module, z, repeats: int) -> float:
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            module(z)
            if i:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="codes per forward pass (default 16)")
    parser.add_argument("--frames", type=int, default=16, help="latent frames to produce (default 16)")
    parser.add_argument("--dim", type=int, default=100, help="vector code size (default 100, TGAN-ODE)")
    parser.add_argument("--map-channels", type=int, default=1024, help="map code channels (default 1024, TGANv2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes after one warm-up (default 5)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"| code | temporal generator | parameters | ms per batch of {args.batch} ({args.frames} frames) |")
    print("|---|---|---:|---:|")
    for kind, extra in VECTOR_KINDS:
        module = build_temporal(TemporalConfig(kind=kind, **extra), dim=args.dim, frames=args.frames).eval()
        ms = 1000 * time_it(module, torch.rand(args.batch, args.dim) * 2 - 1, args.repeats)
        label = kind + "".join(f" {k}={v}" for k, v in extra.items())
        print(f"| vector {args.dim} | {label} | {sum(p.numel() for p in module.parameters()):,} | {ms:.1f} |")
    c = args.map_channels
    for kind, extra in MAP_KINDS:
        module = build_temporal(TemporalConfig(kind=kind, **extra), dim=c, frames=args.frames, map_channels=c).eval()
        ms = 1000 * time_it(module, torch.randn(args.batch, c, 3, 3), args.repeats)
        label = kind + "".join(f" {k}={v}" for k, v in extra.items() if k != "activation")
        print(f"| map {c}x3x3 | {label} | {sum(p.numel() for p in module.parameters()):,} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
