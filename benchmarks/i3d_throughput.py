"""I3D feature extraction throughput: clips per second, and the share of time outside the network.

For each batch size, times ``--repeats`` batches of uint8 clips ``(B, T, H, W, 3)`` through the FVD
pipeline: preprocessing (TF1 bilinear resize to 224x224, scaling) and the I3D forward, separately.
Random weights have the real architecture, so the timing is the real network's (``--weights`` to use
converted ones). Prints a markdown table; ``--out`` writes JSON records.

    python benchmarks/i3d_throughput.py --device cpu --batch-sizes 1 4 --frames 16 --size 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from kinema.metrics.networks.i3d import InceptionI3d, load_i3d, preprocess_for_i3d
from kinema.training.loop_utils import resolve_device


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="clips per batch (default 1 4)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--size", type=int, default=64, help="input frame side before the resize to 224 (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per batch size, after one warm-up (default 3)")
    parser.add_argument("--weights", help="converted I3D weights (default: random weights, same architecture)")
    parser.add_argument("--out", help="JSON file for the records")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    model = load_i3d(args.weights, device=device) if args.weights else InceptionI3d().to(device).eval()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    records = []
    for batch in args.batch_sizes:
        clips = torch.randint(0, 256, (batch, args.frames, args.size, args.size, 3), dtype=torch.uint8)
        prep, net = [], []
        with torch.no_grad():
            for i in range(args.repeats + 1):
                sync()
                t0 = time.perf_counter()
                x = preprocess_for_i3d(clips.to(device))
                sync()
                t1 = time.perf_counter()
                model(x)
                sync()
                t2 = time.perf_counter()
                if i:  # the first batch is warm-up
                    prep.append(t1 - t0)
                    net.append(t2 - t1)
        p, n = statistics.median(prep), statistics.median(net)
        records.append({"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                        "batch": batch, "frames": args.frames, "size": args.size,
                        "clips_per_second": batch / (p + n), "preprocess_seconds": p, "network_seconds": n,
                        "outside_network_share": p / (p + n), "threads": torch.get_num_threads()})
    print("| device | batch | frames | input | clips/s | preprocess s | network s | share outside network |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in records:
        print(f"| {r['device']} | {r['batch']} | {r['frames']} | {r['size']}² | {r['clips_per_second']:.2f} | "
              f"{r['preprocess_seconds']:.3f} | {r['network_seconds']:.3f} | {r['outside_network_share']:.1%} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
