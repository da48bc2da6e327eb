"""Step time of stylegan_v_tiny vs tganv2_tiny at equal resolution, clip length and batch (32x32, 8 frames,
batch 8), back to back in one process: rounds alternate the two models, each round times ``--steps``
objective steps (``objective.train_step`` on a batch already in memory: the two models' G and D updates
with their R1 schedules -- StyleGAN-V lazy every 16 steps, TGANv2 every step -- no data loading, EMA or
logging). The first round warms up and is not counted. Prints JSON: seconds per step per round, medians,
and the per-round ratio StyleGAN-V / TGANv2 (median, min, max).

    OMP_NUM_THREADS=1 python benchmarks/stylegan_v_step_time.py --rounds 5 --steps 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from kinema.data import Batch, Draws
from kinema.objectives.base import StepContext
from kinema.registry import load_config
from kinema.training import Trainer

CONFIGS = ("stylegan_v_tiny", "tganv2_tiny")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16, help="steps per round (16: one lazy R1 step of StyleGAN-V)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {}
    for name in CONFIGS:
        cfg = load_config(name, train=dict(batch_size=args.batch_size, threads=args.threads))
        trainer = Trainer(cfg, tempfile.mkdtemp(), device="cpu", progress=False)
        draws = Draws(trainer.dataset)
        clips = Batch.collate([draws[i] for i in range(args.batch_size)]).clips
        clips = clips.float() / 127.5 - 1 if clips.dtype == torch.uint8 else clips
        runs[name] = (trainer, Batch(clips))
    shapes = {tuple(t.model.video_shape) for t, _ in runs.values()}
    assert len(shapes) == 1, f"the configs differ in clip shape: {shapes}"
    times: dict[str, list[float]] = {name: [] for name in runs}
    steps = {name: 0 for name in runs}
    for round_ in range(args.rounds + 1):
        for name, (trainer, batch) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                ctx = StepContext.for_batch(trainer.optimizers, trainer.noise_generator, args.batch_size, step=steps[name])
                trainer.objective.train_step([batch], ctx)
                steps[name] += 1
            if round_ > 0:
                times[name].append((time.perf_counter() - start) / args.steps)
    ratios = [a / b for a, b in zip(*times.values())]
    report = {name: {"parameters": sum(p.numel() for p in runs[name][0].model.parameters()),
                     "seconds_per_step": times[name], "median": statistics.median(times[name])} for name in runs}
    report["clip_shape"] = list(shapes.pop())
    report["ratio_stylegan_v_over_tganv2"] = {"per_round": ratios, "median": statistics.median(ratios),
                                              "min": min(ratios), "max": max(ratios)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
