"""Profile one side of a ``benchmarks/reference.py`` family: kinema's bare objective step (the trainer's
model, optimisers and first batch, as ``train_speed.bare_step_fn`` times it) or the reference's training-loop
body (``reference.build_reference`` / ``reference_authors.build_<family>``), with ``torch.profiler``
(``record_shapes=True``). Prints the top ops by self CPU time, and the same grouped by input shapes.

Run each side in its own process, one at a time (the docs compare their lists, not their absolute times):

    OMP_NUM_THREADS=1 python benchmarks/profile_reference.py --family tgan_ode --side kinema --steps 2
    OMP_NUM_THREADS=1 python benchmarks/profile_reference.py --family tgan_ode --side reference \
        --official TGAN_ODE_CHECKOUT --steps 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402
import train_speed  # noqa: E402


def kinema_step(args, out: str):
    ns = argparse.Namespace(config=args.config, set=args.set, batch=args.batch, precision="fp32", device="cpu",
                            steps_total=100000, threads=args.threads)
    trainer = train_speed.build_trainer(ns, out)
    return train_speed.bare_step_fn(trainer)[0]


def reference_step(args, work: Path):
    fam = reference.FAMILIES[args.family]
    ref_args = reference.parse_args(["--family", args.family, *(["--official", args.official] if args.official
                                                                 else [])])
    from kinema.registry import load_config

    train = load_config(ref_args.config, ref_args.set).train
    data = reference.prepare(ref_args, work)
    x = torch.load(data)
    torch.manual_seed(0)
    if "checkout" in fam:
        import reference_authors

        _, step, _, _ = getattr(reference_authors, f"build_{args.family}")(Path(args.official), fam["reference"],
                                                                          work, x)
        return step
    _, step, _, _ = reference.build_reference(args.family, fam["reference"], ref_args.sample_steps, x.shape[2],
                                              x.shape[-1], train.lr, tuple(train.betas), train.weight_decay)
    return lambda: step(x)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(reference.FAMILIES), required=True)
    ap.add_argument("--side", choices=["kinema", "reference"], required=True)
    ap.add_argument("--official", help="the authors' checkout (families with one)")
    ap.add_argument("--steps", type=int, default=2, help="profiled steps, after one untimed (default 2)")
    ap.add_argument("--set", action="append", default=[], help="extra kinema override (kinema side)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=20)
    args = ap.parse_args(argv)
    fam = reference.FAMILIES[args.family]
    args.config, args.batch = fam["config"], fam["batch"]
    args.set = [*fam["set"], *args.set]
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.side == "kinema":
            step = kinema_step(args, tmp)
        else:
            reference.install_torchvision_stub()
            step = reference_step(args, Path(tmp))
        step()  # untimed
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.steps):
                step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.rows,
                                                             max_name_column_width=40,
                                                             max_shapes_column_width=90))


if __name__ == "__main__":
    main()
