"""TGANv2 memory and speed per training mode and resolution ("train sparsely" measured).

For each mode and resolution, one fresh subprocess builds TGANv2 (the paper's widths times
``--width-scale``; the level count follows the resolution: 24 -> 1 level, 48 -> 2, 96 -> 3, 192 -> 4),
runs a warm-up training step, then measures:

- ``g_peak_bytes``: the generator's forward + backward (all levels rendered, as in training);
- ``d_peak_bytes``: the discriminators on real and fake level videos with the R1 penalty, backward;
- ``peak_bytes``: one full training step of the GAN objective (G step, then D step, optimiser steps);
- ``step_seconds``: median time of ``--steps`` full training steps.

Peaks are memory allocated above what is held at the start of the measurement (weights, Adam
state). On CUDA they come from ``torch.cuda.max_memory_allocated``. On CPU (``--cpu-memory``) they
are either the tensor bytes of the PyTorch profiler's allocation events, summed in time order
(default: the same quantity as the CUDA figure), or the peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) minus the resident set before the pass, with glibc's mmap threshold fixed
so freed tensors return to the OS and ``malloc_trim`` before each pass. Modes: ``dense`` (every level sees all frames),
``sparse-frames`` (stride-2 frame sub-sampling, the paper's UCF-101 setting), ``sparse-frames-batch``
(frames and batch sub-sampled, x[::2] per level).

    python benchmarks/tganv2_memory.py --out results.json
    python benchmarks/report_memory.py results.json --markdown docs/benchmarks.md --plot docs/images/tganv2_memory.png
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

MODES = {
    "dense": {"sparse": False, "batch_subsample": 1},
    "sparse-frames": {"sparse": True, "batch_subsample": 1},
    "sparse-frames-batch": {"sparse": True, "batch_subsample": 2},
}
PAPER_GEN_CHANNELS = [1024, 512, 256, 128, 64, 32, 32]
PAPER_DIS_CHANNELS = [64, 128, 256, 512, 1024]


def model_settings(mode: str, resolution: int, frames: int, width_scale: float) -> dict:
    """The TGANv2 [model] table for one benchmark point (base 3x3, levels from 24 px upwards)."""
    levels = math.log2(resolution / 24) + 1
    if levels != int(levels) or levels < 1 or levels > 4:
        raise ValueError(f"resolution {resolution} is not one of 24, 48, 96, 192 (24 * 2^k, k <= 3)")
    levels = int(levels)
    scale = lambda cs: [max(1, round(c * width_scale)) for c in cs]  # noqa: E731
    return {
        "name": "tganv2", "frames": frames, "base_size": 3, "resolution": resolution, "levels": levels,
        "gen_channels": scale(PAPER_GEN_CHANNELS[: 3 + levels]), "dis_channels": scale(PAPER_DIS_CHANNELS),
        **MODES[mode],
    }


# --------------------------------------------------------------------------- child process


class Meter:
    """Peak memory of a code region above its starting point.

    CUDA: ``max_memory_allocated``. CPU, ``allocator`` (default): the PyTorch profiler's allocation
    events, summed in time order -- tensor memory, comparable to the CUDA figure. CPU, ``rss``: peak
    resident set (``VmHWM``, reset via ``/proc/self/clear_refs``) minus the resident set at the start;
    it also counts allocator caches, thread stacks and library workspaces.
    """

    def __init__(self, device, cpu_memory: str = "allocator"):
        import torch

        self.torch, self.device, self.cpu_memory = torch, device, cpu_memory
        self.libc = ctypes.CDLL("libc.so.6") if device.type == "cpu" else None

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{field} missing from /proc/self/status")

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)
            self.start = self.torch.cuda.memory_allocated(self.device)
        elif self.cpu_memory == "rss":
            self.libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (peak RSS) to the current RSS
            self.start = self._status("VmRSS")
        else:
            from torch.profiler import ProfilerActivity, profile

            self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.profiler.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
            self.peak = self.torch.cuda.max_memory_allocated(self.device) - self.start
        elif self.cpu_memory == "rss":
            self.peak = self._status("VmHWM") - self.start
        else:
            self.profiler.__exit__(*exc)
            events = [e for e in self.profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
            live = peak = 0
            for event in sorted(events, key=lambda e: e.start_ns()):
                if str(event.device_type()).endswith("CPU"):
                    live += event.nbytes()
                    peak = max(peak, live)
            self.peak = peak
        return False


def measure(args) -> dict:
    import torch

    from kinema.config import build_dataclass
    from kinema.models.tganv2 import TGANv2, TGANv2Config
    from kinema.objectives.gan import GANConfig as ObjectiveConfig, GANObjective
    from kinema.data import Batch
    from kinema.objectives.base import StepContext
    from kinema.objectives.gan import real_gradient_penalty
    from kinema.training.loop_utils import resolve_device

    torch.manual_seed(0)
    device = resolve_device(args.device)
    settings = model_settings(args.mode, args.resolution, args.frames, args.width_scale)
    model = TGANv2(build_dataclass(TGANv2Config, settings, "model")).to(device)
    objective = GANObjective(model, ObjectiveConfig())
    optimizers = {n: torch.optim.Adam(p, lr=1e-4, betas=(0.0, 0.9)) for n, p in objective.parameter_groups().items()}
    noise = torch.Generator().manual_seed(0)
    real = torch.rand(args.batch, 3, args.frames, args.resolution, args.resolution, device=device) * 2 - 1
    meter = Meter(device, args.cpu_memory)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    dtype = torch.float16 if args.precision == "fp16" else torch.bfloat16
    autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=args.precision != "fp32")  # noqa: E731
    scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer does
    with autocast():
        objective.train_step([Batch(real)], StepContext.for_batch(optimizers, noise, args.batch, scaler))  # warm-up: allocates Adam state, autotunes kernels
    optimizers["generator"].zero_grad(set_to_none=True)
    optimizers["discriminator"].zero_grad(set_to_none=True)

    with meter, autocast():  # generator: training forward (every level rendered) and backward
        fakes = model.generate_levels(model.sample_noise(args.batch, generator=noise), generator=noise)
        sum(f.float().mean() for f in fakes).backward()
        del fakes
    g_peak = meter.peak
    model.zero_grad(set_to_none=True)

    with torch.no_grad(), autocast():
        fakes = [f.detach() for f in model.generate_levels(model.sample_noise(args.batch, generator=noise), noise)]
    with meter, autocast():  # discriminators: real (with R1 penalty) and fake level videos, backward
        reals = [r.requires_grad_() for r in model.real_levels(real, noise)]
        real_scores = torch.cat(model.discriminate(reals))
        loss = torch.cat(model.discriminate(fakes)).mean() - real_scores.mean()
        loss = loss + 0.5 * real_gradient_penalty(real_scores, reals, "sum")
        loss.backward()
        del reals, real_scores, loss
    d_peak = meter.peak
    del fakes
    model.zero_grad(set_to_none=True)

    with meter, autocast():  # one full training step, as the trainer runs it
        objective.train_step([Batch(real)], StepContext.for_batch(optimizers, noise, args.batch, scaler))
    peak = meter.peak

    times = []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        with autocast():
            objective.train_step([Batch(real)], StepContext.for_batch(optimizers, noise, args.batch, scaler))
        sync()
        times.append(time.perf_counter() - start)
    cfg = model.config
    return {
        "mode": args.mode, "resolution": args.resolution, "frames": args.frames, "batch": args.batch,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "g_peak_bytes": g_peak, "d_peak_bytes": d_peak, "peak_bytes": peak,
        "step_seconds": statistics.median(times), "width_scale": args.width_scale,
        "levels": cfg.levels, "level_frames": cfg.level_frames, "oom": False,
        "threads": torch.get_num_threads(), "precision": args.precision,
        "memory_source": "cuda_max_memory_allocated" if device.type == "cuda" else f"cpu_{args.cpu_memory}",
    }


def child_main(args) -> int:
    try:
        record = measure(args)
    except Exception as exc:  # noqa: BLE001 - an OOM must be recorded, not crash the sweep
        text = str(exc)
        if "out of memory" not in text.lower() and not isinstance(exc, MemoryError):
            raise
        record = {"mode": args.mode, "resolution": args.resolution, "frames": args.frames, "batch": args.batch,
                  "device": args.device, "g_peak_bytes": None, "d_peak_bytes": None, "peak_bytes": None,
                  "step_seconds": None, "width_scale": args.width_scale, "oom": True, "error": text[:200]}
    print("RESULT " + json.dumps(record), flush=True)
    return 0


# --------------------------------------------------------------------------- sweep


def run_point(args, mode: str, resolution: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--modes", mode, "--resolutions", str(resolution),
           "--batch", str(args.batch), "--frames", str(args.frames), "--width-scale", str(args.width_scale),
           "--device", args.device, "--steps", str(args.steps), "--cpu-memory", args.cpu_memory,
           "--precision", args.precision]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        killed = proc.returncode in (-9, 137)  # the kernel's OOM killer
        if not killed:
            raise RuntimeError(f"benchmark point {mode} @ {resolution} failed:\n{proc.stderr[-3000:]}")
        return {"mode": mode, "resolution": resolution, "frames": args.frames, "batch": args.batch,
                "device": args.device, "g_peak_bytes": None, "d_peak_bytes": None, "peak_bytes": None,
                "step_seconds": None, "width_scale": args.width_scale, "oom": True, "error": "killed (OOM)"}
    return json.loads(lines[-1][len("RESULT "):])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES),
                        help="training modes to measure (default: all three)")
    parser.add_argument("--resolutions", nargs="+", type=int, default=[24, 48, 96, 192],
                        help="output resolutions, each 24 * 2^k; the level count follows (default 24 48 96 192)")
    parser.add_argument("--batch", type=int, default=8, help="batch size per step (default 8)")
    parser.add_argument("--frames", type=int, default=16, help="frames per video (default 16, the paper's)")
    parser.add_argument("--width-scale", type=float, default=0.125,
                        help="multiply every channel width by this, identically for all modes "
                             "(default 0.125 for CPU; 1.0 is the paper's network)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="fp32, or autocast as train.precision = 'bf16' / 'fp16' does (default fp32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per point, after warm-up (default 3)")
    parser.add_argument("--cpu-memory", choices=["allocator", "rss"], default="allocator",
                        help="CPU memory measure: allocator = tensor bytes from the PyTorch profiler's allocation "
                             "events (comparable to CUDA's max_memory_allocated); rss = peak resident set "
                             "(includes allocator caches and library workspaces) (default allocator)")
    parser.add_argument("--out", default="results.json", help="JSON file for the records (default results.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        args.mode, args.resolution = args.modes[0], args.resolutions[0]
        return child_main(args)
    for resolution in args.resolutions:
        try:
            model_settings("dense", resolution, args.frames, args.width_scale)  # fail fast on a bad point
        except ValueError as exc:
            raise SystemExit(f"tganv2_memory.py: error: {exc}") from None
    records = []
    total = len(args.modes) * len(args.resolutions)
    for resolution in args.resolutions:
        for mode in args.modes:
            start = time.perf_counter()
            record = run_point(args, mode, resolution)
            records.append(record)
            mib = "OOM" if record["oom"] else f"{record['peak_bytes'] / 2**20:8.1f} MiB"
            step = "" if record["oom"] else f", step {record['step_seconds']:.3f} s"
            print(f"[{len(records)}/{total}] {mode:>20} @ {resolution:3d}: peak {mib}{step} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            with open(args.out, "w") as f:  # rewritten after every point: a crash keeps what was measured
                json.dump(records, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
