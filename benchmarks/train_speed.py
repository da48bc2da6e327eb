"""Time one training step of any config three ways, side by side in one process.

1. ``bare``: the objective's step alone -- ``objective.train_step`` on a batch already on the device,
   the same model and optimisers the trainer built.
2. ``cli``: the trainer's step as ``kinema train`` runs it -- the real ``Trainer.fit`` loop, measured
   from the start of one objective step to the start of the next (data, schedules, EMA, logging,
   checks included). Samples and checkpoints (every ``train.sample_every`` / ``checkpoint_every``
   steps, and after the last step) are switched off: they are not per-step work.
3. the gap ``cli - bare`` per step, broken down into data (next batch + device copy), LR schedules,
   logging, and the rest of the loop (stop/lock checks, EMA, shape checks, progress bar).

The two alternate every round (a bare step is run between two trainer steps and excluded from their
timing), so drift of the machine cancels in the per-round ratio cli / bare. It also counts the FLOPs of
one step (``torch.utils.flop_counter.FlopCounterMode``: forward, backward and double backward) and
reports achieved FLOP/s against this machine's measured fp32 matmul peak at the same thread count.

Before/after across two source trees: ``--ab TREE_A TREE_B`` starts one server process per tree
(``PYTHONPATH=TREE``, both from this script) and alternates their steps, one at a time.

Against the other public PyTorch TGANv2 (the TGAN-ODE authors' port, github.com/Zasder3/
Latent-Neural-Differential-Equations-for-Video-Generation, ``models/tganv2_gen.py`` and
``models/tganv2_dis.py``): ``--port DIR`` (DIR holds the port's ``models/`` folder) starts a kinema server
and a port server and alternates a ``kinema train`` step with one iteration of the port's training loop
(its ``tganv2 UCF101.py`` loop body, retyped here without ``.cuda()``: a D step with the R1 penalty on the
real levels and a no-grad fake, then a G step with a second generator forward) at the identical
architecture: ``Generator_CLSTM(tempc=512, upchannels=[256,128,64], subchannels=[32,16,16],
subsample=2)``, ``DisMultiResNet(channels=[32,64,128,256,512])`` -- G 22,605,420 / D 29,030,660
parameters, the kinema default config's counts. The port's real batch is a fixed tensor (no data
loading is timed for it; kinema's CLI step includes its data).

    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --threads 1 --out benchmarks/results/train_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HALF_WIDTH = ["model.gen_channels=[512,256,128,64,32,16,16]", "model.dis_channels=[32,64,128,256,512]"]
DEFAULT_CONFIG = "tganv2_ucf101_192"
DEFAULT_SETS = HALF_WIDTH + ["data.source=synthetic", "data.workers=0"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an n x n matmul on ``device`` at the current thread count."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def ratio_stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def peak_rss() -> int:
    """Peak resident set of this process so far, bytes: ``VmHWM`` of ``/proc/self/status`` (Linux).

    Not ``ru_maxrss``: Linux carries it over ``fork`` + ``execve``, so a server process started by a large
    driver would report the driver's peak at the time of the fork whenever its own is lower. ``VmHWM`` belongs
    to the process's own address space. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def ask(proc: subprocess.Popen, cmd: str) -> dict:
    """One command to a server process (a line on its stdin), its JSON answer (a line on its stdout)."""
    proc.stdin.write(cmd + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def quit_servers(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.stdin.write("quit\n")
        p.stdin.flush()
        p.wait(timeout=60)


def kinema_server(args, tree: Path | str | None = None, extra_sets: list[str] = ()) -> subprocess.Popen:
    """A ``--serve`` process (a Trainer waiting for ``bare`` / ``go`` / ``rss``) of ``args.config`` + ``args.set``
    run from source tree ``tree`` (default: the one holding this script); its first line is read here."""
    here = Path(__file__).resolve()
    cmd = [sys.executable, str(here), "--serve", "--config", args.config, "--batch", str(args.batch),
           "--device", args.device, "--precision", args.precision, "--threads", str(args.threads or 0)]
    for s in [*args.set, *extra_sets]:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve() if tree else here.parent.parent))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    print("kinema", proc.stdout.readline().strip(), file=sys.stderr)
    return proc


def alternate_with_kinema(kin: subprocess.Popen, name: str, other_step, rounds: int) -> list[dict]:
    """``rounds`` rounds of one bare step + one ``kinema train`` step of the server ``kin`` and one call of
    ``other_step()`` (seconds, recorded as ``name``), the order swapped every round. Waits first for the
    kinema loop to reach step 1.

    A trainer step's period (start of its objective step to the start of the next) is known only when the
    loop reaches the next step: the answer to "go" in round r is the period of round r - 1's step."""
    json.loads(kin.stdout.readline())  # the kinema loop has reached step 1
    got_rounds = [{} for _ in range(rounds)]
    for r, got in enumerate(got_rounds):
        for who in (("kinema", name) if r % 2 == 0 else (name, "kinema")):
            if who == "kinema":
                got["kinema_bare"] = ask(kin, "bare")["bare"]
                cli = ask(kin, "go")["cli"]
                if r:
                    got_rounds[r - 1]["kinema_cli"] = cli
            else:
                got[name] = other_step()
        print(f"round {r}: " + ", ".join(f"{k} {v:.3f}" for k, v in got.items() if v is not None), file=sys.stderr)
    got_rounds[-1]["kinema_cli"] = ask(kin, "go")["cli"]
    return got_rounds


class StepTimer:
    """Wraps a Trainer so its loop's per-step periods and their parts are recorded, and runs
    ``between()`` (untimed) before every objective step."""

    def __init__(self, trainer, between) -> None:
        self.trainer, self.between = trainer, between
        self.entries: list[float] = []  # wrapper entry: end of the previous loop iteration's work
        self.starts: list[float] = []  # start of the objective step (after between())
        self.step_s: list[float] = []
        self.parts: dict[str, list[float]] = {"data": [], "schedules": [], "logging": []}
        self._acc = {k: 0.0 for k in self.parts}
        objective = trainer.objective
        inner = objective.train_step

        def train_step(batches, ctx):
            self.entries.append(time.perf_counter())
            for k in self.parts:  # the parts accumulated since the previous step's start
                if self.starts:
                    self.parts[k].append(self._acc[k])
                self._acc[k] = 0.0
            self.between()
            sync(trainer.device)
            self.starts.append(time.perf_counter())
            out = inner(batches, ctx)
            sync(trainer.device)
            self.step_s.append(time.perf_counter() - self.starts[-1])
            return out

        objective.train_step = train_step
        batches = trainer._batches

        def timed_batches():
            it = batches()
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                self._acc["data"] += time.perf_counter() - t
                yield item

        trainer._batches = timed_batches
        to_device = trainer._to_device

        def timed_to_device(x):
            t = time.perf_counter()
            out = to_device(x)
            sync(trainer.device)
            self._acc["data"] += time.perf_counter() - t
            return out

        trainer._to_device = timed_to_device
        for sched in trainer.schedulers.values():
            step = sched.step

            def timed_step(*a, _step=step, **k):
                t = time.perf_counter()
                _step(*a, **k)
                self._acc["schedules"] += time.perf_counter() - t

            sched.step = timed_step
        log = trainer.loggers.train

        def timed_log(step, metrics):
            t = time.perf_counter()
            log(step, metrics)
            self._acc["logging"] += time.perf_counter() - t

        trainer.loggers.train = timed_log
        # not per-step work (step 0, every sample_every / checkpoint_every, the end)
        trainer.write_samples = lambda: []
        trainer.save = lambda: None

    def periods(self) -> list[float]:
        """Loop period of step i: start of its objective step to the end of the loop's work for it."""
        return [self.entries[i + 1] - self.starts[i] for i in range(len(self.starts) - 1)]


def build_trainer(args, out: str):
    from kinema.registry import load_config
    from kinema.training.trainer import Trainer

    sets = list(args.set) + [f"train.batch_size={args.batch}", f'train.precision="{args.precision}"',
                             f"train.steps={args.steps_total}", "train.sample_every=1000000",
                             "train.checkpoint_every=1000000"]
    config = load_config(args.config, sets)
    trainer = Trainer(config, out, device=args.device, progress=False)
    if args.threads:
        torch.set_num_threads(args.threads)  # the Trainer may have set its own share
    return trainer


def bare_step_fn(trainer):
    """One objective step on a fixed batch already on the device (what the objective costs alone)."""
    from kinema.data.batch import Batch
    from kinema.objectives.base import StepContext
    from kinema.training import distributed

    batch = next(iter(trainer._batches())).to(trainer.device)  # called before StepTimer wraps them
    batch: Batch = batch.with_clips(trainer._to_device(batch.clips))
    train = trainer.config.train
    rows = distributed.rank_rows(train.batch_size, trainer.process, train.accumulate)
    gen = torch.Generator().manual_seed(123)
    train_step = trainer.objective.train_step  # the objective's own (StepTimer wraps it later)

    def step() -> float:
        ctx = StepContext(trainer.optimizers, gen, rows, trainer.scaler, step=trainer.step, grad_clip=train.grad_clip)
        sync(trainer.device)
        t = time.perf_counter()
        with trainer._autocast():
            train_step(batch.split(train.accumulate), ctx)
        sync(trainer.device)
        return time.perf_counter() - t

    return step, batch, ctx_factory(trainer, rows, gen), train_step


def ctx_factory(trainer, rows, gen):
    from kinema.objectives.base import StepContext

    return lambda: StepContext(trainer.optimizers, gen, rows, trainer.scaler, step=trainer.step,
                               grad_clip=trainer.config.train.grad_clip)


def count_flops(trainer, batch, make_ctx, train_step) -> int:
    """FLOPs of one step by PyTorch's FLOP counter formulas (``torch.utils.flop_counter.flop_registry``,
    what ``FlopCounterMode`` sums). ``FlopCounterMode`` itself installs module hooks that
    ``torch.autograd.grad`` rejects (the GAN objective's input gradients), so a plain dispatch mode
    applies the same registry: matmuls and convolutions, forward, backward and double backward."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            packet = func._overloadpacket
            if packet in flop_registry:
                Counter.total += flop_registry[packet](*args, **kwargs, out_val=out)
            return out

    train = trainer.config.train
    with Counter(), trainer._autocast():
        train_step(batch.split(train.accumulate), make_ctx())
    return int(Counter.total)


def run_local(args) -> dict:
    """Alternate bare and trainer steps in this process."""
    with tempfile.TemporaryDirectory() as out:
        args.steps_total = args.warmup + args.rounds + 1
        trainer = build_trainer(args, out)
        bare, batch, make_ctx, train_step = bare_step_fn(trainer)
        bare_s: list[float] = []
        n = {"calls": 0}

        def between():
            n["calls"] += 1
            if n["calls"] > args.warmup:  # after warm-up: one bare step before every trainer step
                bare_s.append(bare())

        timer = StepTimer(trainer, between)
        for _ in range(args.warmup):
            bare()
        t0 = time.perf_counter()
        try:
            trainer.fit()
        except IndexError:  # fit() returns the last checkpoint; saving is switched off here
            pass
        fit_s = time.perf_counter() - t0
        periods = timer.periods()[args.warmup:]
        # trainer step i (i >= warmup) runs right after bare step i - warmup
        bare_s = bare_s[: len(periods)]
        ratios = [p / b for p, b in zip(periods, bare_s)]
        parts = {k: statistics.median(v[args.warmup:][: len(periods)]) for k, v in timer.parts.items()}
        inner = statistics.median(timer.step_s[args.warmup:][: len(periods)])
        flops = count_flops(trainer, batch, make_ctx, train_step) if not args.no_flops else None
        peak = matmul_peak(trainer.device)
        cfg = trainer.config
        params = trainer.model.parameter_counts()
        bare_med = statistics.median(bare_s)
        cli_med = statistics.median(periods)
        record = {
            "config": args.config, "set": args.set, "batch": args.batch, "device": str(trainer.device),
            "precision": args.precision, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "parameters": params, "rounds": len(periods), "warmup": args.warmup,
            "data_workers": cfg.data.workers, "log_every": cfg.train.log_every,
            "bare_step_s": bare_s, "cli_step_s": periods, "cli_over_bare": ratio_stats(ratios),
            "bare_step_median_s": bare_med, "cli_step_median_s": cli_med,
            "gap_breakdown_median_s": {
                **parts, "objective step inside the loop": inner,
                "rest of the loop (checks, EMA, progress)": cli_med - inner - sum(parts.values()),
            },
            "flops_per_step": flops, "matmul_peak_flops": peak,
            "achieved_flops": flops / bare_med if flops else None,
            "fraction_of_peak": flops / bare_med / peak if flops else None,
            "wall_s_fit": fit_s,
        }
        return record


# --------------------------------------------------------------------------- the other PyTorch TGANv2

PORT_G = dict(tempc=512, upchannels=[256, 128, 64], subchannels=[32, 16, 16], subsample=2)
PORT_D = dict(channels=[32, 64, 128, 256, 512])


def build_port_tganv2(port: str | Path, batch: int, device: torch.device, real: torch.Tensor | None = None,
                      gen_kwargs: dict | None = None, dis_kwargs: dict | None = None, seed: int = 0):
    """The TGAN-ODE authors' TGANv2 port (``PORT_G`` / ``PORT_D``, imported from ``port``'s ``models/``) and one
    iteration of its training loop: returns ``(gen, dis, step, parameter counts)``; ``step()`` runs it and returns
    its seconds. The loop body of the port's ``tganv2 UCF101.py`` (lambda 0.5, softplus loss, Adam 1e-4 (0, 0.9),
    linear LR decay), on ``device`` instead of ``.cuda()``, batch ``batch``, 16 frames, 192 px; ``real``: its
    real batch (N, T, C, H, W) in [-1, 1] (default uniform noise, as fixed data); ``step(x)`` trains on ``x``
    (same layout) instead. ``gen_kwargs`` / ``dis_kwargs``: other constructor arguments than ``PORT_G`` /
    ``PORT_D`` (z is drawn with ``gen_kwargs["z_dim"]`` entries, the script's 256 by default); ``seed``: the
    manual seed the networks are built under."""
    import numpy as np
    import torch.nn.functional as F

    if str(Path(port).resolve()) not in sys.path:
        sys.path.insert(0, str(Path(port).resolve()))
    from models.tganv2_dis import DisMultiResNet
    from models.tganv2_gen import Generator_CLSTM

    torch.manual_seed(seed)
    np.random.seed(seed)
    gen_kwargs, dis_kwargs = gen_kwargs or PORT_G, dis_kwargs or PORT_D
    z_dim = gen_kwargs.get("z_dim", 256)
    gen, dis = Generator_CLSTM(**gen_kwargs).to(device), DisMultiResNet(**dis_kwargs).to(device)
    counts = [sum(p.numel() for p in m.parameters()) for m in (gen, dis)]
    dis_opt = torch.optim.Adam(dis.parameters(), lr=1e-4, betas=(0.0, 0.9))  # the port writes (0, 0.9), which torch 2.13 rejects
    gen_opt = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.0, 0.9))  # the port writes (0, 0.9), which torch 2.13 rejects
    dis_sched = torch.optim.lr_scheduler.LambdaLR(dis_opt, lambda e: 1 - e / 100000)
    gen_sched = torch.optim.lr_scheduler.LambdaLR(gen_opt, lambda e: 1 - e / 100000)
    if real is None:
        real = torch.rand(batch, 16, 3, 192, 192) * 2 - 1  # (N, T, C, H, W), as its loader
    real_batch = real.to(device)

    def subsample_real(h, frames=2):
        return h[:, np.random.randint(min(frames, h.shape[1]))::frames]

    def full_subsample_real(h, frames=2):
        out = []
        for i in range(4):
            out.append(subsample_real(out[i - 1], frames=frames) if i else h)
        for i in range(4):
            for _ in range(3 - i):
                out[i] = F.avg_pool3d(out[i], kernel_size=(1, 2, 2))
        return out

    def step(x: torch.Tensor | None = None) -> float:
        sync(device)
        t = time.perf_counter()
        dis_opt.zero_grad()
        real = full_subsample_real(real_batch if x is None else x.to(device))
        for r in real:
            r.requires_grad = True
        pr = dis(real)
        grads = torch.autograd.grad(outputs=pr, inputs=real, grad_outputs=torch.ones_like(pr),
                                    create_graph=True, retain_graph=True)
        dis_loss = sum(torch.sum(torch.square(g)) for g in grads) * 0.5
        with torch.no_grad():
            fake = gen(torch.rand((batch, z_dim), device=device) * 2 - 1)
        pf = dis(fake)
        dis_loss = dis_loss + torch.mean(F.softplus(-pr)) + torch.mean(F.softplus(pf))
        dis_loss.backward()
        dis_opt.step()
        dis_sched.step()
        gen_opt.zero_grad()
        fake = gen(torch.rand((batch, z_dim), device=device) * 2 - 1)
        gen_loss = torch.mean(F.softplus(-dis(fake)))
        gen_loss.backward()
        gen_opt.step()
        gen_sched.step()
        sync(device)
        return time.perf_counter() - t

    return gen, dis, step, counts


def serve_port(args) -> None:
    """Server for --port: one iteration of the port's training loop per ``step`` command (prints its time)."""
    _, _, step, counts = build_port_tganv2(args.port, args.batch, torch.device(args.device))
    print(json.dumps({"port": args.port, "parameters": counts}), flush=True)
    while True:
        line = sys.stdin.readline().strip()
        if line != "step":
            return
        print(json.dumps({"port": step()}), flush=True)


def run_port(args) -> dict:
    """Alternate a kinema server (this tree) and a port server, one step at a time, order swapped each round."""
    here = Path(__file__).resolve()
    common = ["--batch", str(args.batch), "--device", args.device, "--threads", str(args.threads or 0)]
    kin = kinema_server(args)
    port_cmd = [sys.executable, str(here), "--serve-port", "--port", args.port, *common]
    port = subprocess.Popen(port_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port_info = json.loads(port.stdout.readline())
    print("port", port_info, file=sys.stderr)
    rounds = alternate_with_kinema(kin, "port", lambda: ask(port, "step")["port"], args.warmup + args.rounds)
    res = {k: [got[k] for got in rounds[args.warmup:]] for k in ("kinema_bare", "kinema_cli", "port")}
    quit_servers(kin, port)
    record = {"config": args.config, "set": args.set, "batch": args.batch, "device": args.device,
              "precision": args.precision, "threads": args.threads, "port": args.port,
              "port_parameters": port_info["parameters"], "rounds": args.rounds,
              **{f"{k}_s": v for k, v in res.items()}}
    for k in ("kinema_cli", "kinema_bare"):
        record[f"{k}_over_port"] = ratio_stats([a / b for a, b in zip(res[k], res["port"])])
        record[f"{k}_median_s"] = statistics.median(res[k])
    record["port_median_s"] = statistics.median(res["port"])
    return record


# --------------------------------------------------------------------------- before/after across trees


def serve(args) -> None:
    """Server for --ab, --port and benchmarks/reference.py: a Trainer whose loop waits for a command before each step.

    Commands on stdin: ``bare`` (one bare step, prints its time), ``go`` (lets the loop run one
    trainer step; prints the period of the previous one once it is known, else ``nan``) and ``rss``
    (prints this process's peak resident set so far, bytes)."""
    import kinema

    print(json.dumps({"kinema": kinema.__file__}), flush=True)
    with tempfile.TemporaryDirectory() as out:
        args.steps_total = 100000
        trainer = build_trainer(args, out)
        bare = bare_step_fn(trainer)[0]

        def between():
            periods = timer.periods()
            print(json.dumps({"cli": periods[-1] if periods else None}), flush=True)
            while True:
                line = sys.stdin.readline().strip()
                if line == "bare":
                    print(json.dumps({"bare": bare()}), flush=True)
                elif line == "rss":
                    print(json.dumps({"rss": peak_rss()}), flush=True)
                elif line == "go":
                    return
                else:
                    raise SystemExit(0)

        timer = StepTimer(trainer, between)
        trainer.fit()


def run_ab(args) -> dict:
    procs = {name: kinema_server(args, tree, args.set_b if name == "B" else [])
             for name, tree in (("A", args.ab[0]), ("B", args.ab[1]))}

    for name in procs:  # first `between`: the loop has reached step 1
        json.loads(procs[name].stdout.readline())
    res = {n: {"bare": [], "cli": []} for n in procs}
    for r in range(args.warmup + args.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        for name in order:
            b = ask(procs[name], "bare")["bare"]
            cli = ask(procs[name], "go")  # runs a trainer step; answers when the loop reaches the next one
            if r >= args.warmup:
                res[name]["bare"].append(b)
                res[name]["cli"].append(cli["cli"])
        print(f"round {r}: " + ", ".join(f"{n} bare {res[n]['bare'][-1]:.3f} cli {res[n]['cli'][-1]:.3f}"
                                        for n in procs if res[n]["bare"]), file=sys.stderr)
    quit_servers(*procs.values())
    record = {"config": args.config, "set": args.set, "batch": args.batch, "device": args.device,
              "precision": args.precision, "threads": args.threads, "trees": {"A": args.ab[0], "B": args.ab[1]},
              "set_b": args.set_b,
              "rounds": args.rounds, **{f"{n}_{k}_s": v for n in res for k, v in res[n].items()}}
    for k in ("bare", "cli"):
        record[f"B_over_A_{k}"] = ratio_stats([b / a for a, b in zip(res["A"][k], res["B"][k])])
        record[f"A_{k}_median_s"] = statistics.median(res["A"][k])
        record[f"B_{k}_median_s"] = statistics.median(res["B"][k])
    return record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--set", action="append", default=None,
                    help=f"config override (repeatable); default for the default config: {' '.join(DEFAULT_SETS)}")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: the trainer's)")
    ap.add_argument("--rounds", type=int, default=6, help="timed rounds (one bare + one trainer step each)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--ab", nargs=2, metavar=("TREE_A", "TREE_B"), help="before/after: two source trees")
    ap.add_argument("--set-b", action="append", default=[], metavar="SET",
                    help="with --ab: a config override for B only (repeatable), e.g. `--ab . . --set-b "
                         "train.compile=true` times one option against the default in one tree")
    ap.add_argument("--port", metavar="DIR",
                    help="time against the TGAN-ODE authors' PyTorch TGANv2: DIR holds its models/ folder")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-port", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help="append the JSON record to this file (a JSON list)")
    args = ap.parse_args(argv)
    if args.set is None:
        args.set = DEFAULT_SETS if args.config == DEFAULT_CONFIG else []
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.serve:
        serve(args)
        return
    if args.serve_port:
        serve_port(args)
        return
    record = run_ab(args) if args.ab else run_port(args) if args.port else run_local(args)
    print(json.dumps(record, indent=1))
    if args.out:
        path = Path(args.out)
        records = json.loads(path.read_text()) if path.exists() else []
        records.append(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
