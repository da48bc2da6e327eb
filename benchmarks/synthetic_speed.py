"""Milliseconds to render one 16x64x64 clip of each synthetic family (by hand; was a timed test).

    python benchmarks/synthetic_speed.py [--clips 20] [--repeats 5]

Prints min / median / max over repeats; the machine's load moves these by +-15% or more.
"""

from __future__ import annotations

import argparse
import statistics
import time

from kinema.data import SYNTHETIC_FAMILIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20, help="clips rendered per repeat (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (default 5)")
    args = parser.parse_args()
    for name, cls in sorted(SYNTHETIC_FAMILIES.items()):
        ds = cls(args.clips, 16, 64, 64, seed=0)
        ds[0]  # warm-up (e.g. the digit glyphs load once)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for i in range(args.clips):
                ds[i]
            times.append((time.perf_counter() - start) / args.clips * 1e3)
        print(f"{name:<26} ms/clip min {min(times):.2f}  median {statistics.median(times):.2f}  max {max(times):.2f}")


if __name__ == "__main__":
    main()
