"""Sampling throughput per family: seconds per video of ``kinema.api.generate`` (the path of ``kinema sample``).

Weights do not change the cost of sampling, so each model is built from its config untrained (the trainer's
seed) -- no checkpoint or training needed. Each case runs once to warm up, then ``--repeats`` times; the
median and the range of seconds per video are reported. Diffusion cost is linear in the number of denoising
steps: the VDM rows at 32/128/256 DDIM steps are measured at ``--vdm-steps`` (default 4) and scaled, and say
so (``measured_steps``). VideoGPT rows compare the KV cache with full recomputation.

    python benchmarks/sampling_speed.py --threads 2 --out benchmarks/results/sampling_speed_cpu.json

Cases (``--cases``, default all): tganv2_tiny, tganv2_192 (paper network, dense generation), tgan_ode_64
(1x and 4x frame rate), vdm_tiny, vdm_64 (paper network), videogpt_tiny (cache on/off).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kinema import api  # noqa: E402
from kinema.registry import build_model, load_config  # noqa: E402
from kinema.sampling import Sampler  # noqa: E402

# name -> (config, [(label, options, videos per call)])
CASES: dict[str, tuple[str, list[tuple[str, dict, int]]]] = {
    "tganv2_tiny": ("tganv2_tiny16", [("dense", {}, 16)]),
    "tganv2_192": ("tganv2_ucf101_192", [("dense", {}, 1)]),
    "tgan_ode_64": ("tgan_ode_ucf101_64", [("1x frame rate", {}, 8), ("4x frame rate", {"fps_multiplier": 4}, 8)]),
    "vdm_tiny": ("vdm_tiny16", [("ddim", {"sampler": "ddim"}, 4)]),
    "vdm_64": ("vdm_ucf101_64", [("ddim", {"sampler": "ddim"}, 1)]),
    "videogpt_tiny": ("videogpt_prior_tiny16", [("kv cache", {}, 4), ("no cache", {"use_cache": False}, 4)]),
}
VDM_STEPS = (32, 128, 256)


def time_case(model, options: dict, num: int, repeats: int) -> list[float]:
    """Seconds per video of ``repeats`` calls (after one warm-up call)."""
    use_cache = options.pop("use_cache", True)
    if not use_cache:  # a Python-level switch of the prior, not a sampling option: call the sampler's path
        run = lambda: Sampler.generate(_NoCacheSampler(), model, num, 0, batch_size=num)  # noqa: E731
    else:
        run = lambda: api.generate(model, num, seed=0, batch_size=num, **options)  # noqa: E731
    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append((time.perf_counter() - start) / num)
    return seconds


class _NoCacheSampler(Sampler):
    def run(self, model, num, seed, batch_size, progress, **options):
        from kinema.sampling import sample_in_batches

        return sample_in_batches(model, num, seed, batch_size, progress,
                                 call=lambda chunk: model.sample(chunk, use_cache=False))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case after a warm-up (default 3)")
    parser.add_argument("--vdm-steps", type=int, default=4, help="DDIM steps actually run for VDM rows (default 4)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--out", help="write the records as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    records = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")
        config_name, variants = CASES[name]
        cfg = load_config(config_name)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model).eval()
        for label, options, num in variants:
            options = dict(options)
            if cfg.model.name == "vdm":
                options["steps"] = args.vdm_steps
            seconds = time_case(model, options, num, args.repeats)
            median = statistics.median(seconds)
            rec = {"case": name, "config": config_name, "variant": label, "videos_per_call": num,
                   "seconds_per_video": median, "min": min(seconds), "max": max(seconds),
                   "video_shape": list(model.video_shape)}
            if options.get("fps_multiplier"):
                rec["video_shape"][1] = (rec["video_shape"][1] - 1) * options["fps_multiplier"] + 1
            if cfg.model.name == "vdm":
                rec["measured_steps"] = args.vdm_steps
                rec["seconds_per_video_at"] = {str(s): median / args.vdm_steps * s for s in VDM_STEPS}
            records.append(rec)
            print(json.dumps(rec), flush=True)
    if args.out:
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                "command": "python benchmarks/sampling_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    return records


if __name__ == "__main__":
    main()
