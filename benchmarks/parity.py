"""Output parity against the authors' own code: same weights in, same outputs out.

    python benchmarks/parity.py --family videogpt --official /path/to/VideoGPT-checkout [--config paper]

For each family a module ``benchmarks/parity_<family>.py`` builds the official model from an unmodified
checkout of the authors' repository (imported from there, never copied into kinema), initialises it with
a seed, saves its weights in the authors' format, converts them with ``kinema convert``, feeds both the
same inputs (every random draw pinned or passed in) and prints, per output, the max absolute and the max
relative difference. ``--fixture DIR`` also writes the small-config files the CI test compares against
(tests/fixtures/parity/<family>/). Each family module defines::

    CONFIGS: dict[str, dict]                 # "tiny", "paper", ...
    def run(official: Path, config: str, work: Path, fixture: Path | None, seed: int) -> list[Row]

where a Row is ``(output name, max |a-b|, max |a-b| / max |b|, shape)``; a name in parentheses marks a
reference row (e.g. the official code's own float32 rounding) that the verdict does not count.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

FAMILIES = ("videogpt", "stylegan_v", "tganv2", "tgan_ode", "dvg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True, choices=FAMILIES)
    parser.add_argument("--official", required=True, type=Path, help="checkout of the authors' repository")
    parser.add_argument("--config", default="tiny", help="which size (the family module's CONFIGS; default tiny)")
    parser.add_argument("--official-python", help="the Python that runs the official code (its own venv with its old "
                        "pins, e.g. Chainer or gpytorch 0.3); default: this one. Family modules read it from "
                        "$PARITY_OFFICIAL_PYTHON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the intermediate files here (default: a temp folder)")
    parser.add_argument("--fixture", type=Path, help="write the CI fixture (authors'-format weights, inputs, outputs) here")
    parser.add_argument("--json", type=Path, help="append the rows as one JSON line here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ["PARITY_OFFICIAL_PYTHON"] = args.official_python or os.environ.get("PARITY_OFFICIAL_PYTHON", sys.executable)
    module = importlib.import_module(f"parity_{args.family}")
    if args.config not in module.CONFIGS:
        parser.error(f"--config {args.config!r}: {args.family} has {', '.join(module.CONFIGS)}")
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = module.run(args.official.resolve(), args.config, work, args.fixture, args.seed)
    print(f"{args.family} ({args.config}), official checkout {args.official}:")
    print(f"  {'output':<40} {'max |diff|':>12} {'relative':>12}  shape")
    worst = 0.0
    for name, abs_diff, rel_diff, shape in rows:
        if not name.startswith("("):  # "(...)" rows are references for scale (e.g. the official code's own rounding)
            worst = max(worst, rel_diff)
        print(f"  {name:<40} {abs_diff:>12.3e} {rel_diff:>12.3e}  {tuple(shape)}")
    print(f"  worst relative difference {worst:.3e} ({'within' if worst <= 1e-5 else 'OUTSIDE'} the 1e-5 target); "
          f"{time.time() - start:.0f} s")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"family": args.family, "config": args.config, "official": str(args.official),
                                "rows": [list(r[:3]) + [list(r[3])] for r in rows], "worst_relative": worst}) + "\n")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
