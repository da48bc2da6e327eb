"""The official side of benchmarks/parity_tganv2.py: runs in a Python with Chainer (never kinema's).

    TGAN2_PYTHON=/path/to/chainer-venv/bin/python  # what parity_tganv2.py starts this file with
    $TGAN2_PYTHON benchmarks/parity_tganv2_official.py --official CHECKOUT --spec spec.json --out DIR

Builds the authors' ``MultiTGANCLSTMGenerator`` and ``MultiResNetVideoDiscriminator`` from an unmodified
checkout of pfnet-research/tgan2 (imported from there), initialises them with their own initialisers under
``numpy.random.seed(spec.seed)`` (train.py:64-65), perturbs every bias and every BatchNorm statistic so
that no parameter keeps an inert value (zero bias, unit scale: a mis-mapped one would go unnoticed), saves
both with ``chainer.serializers.save_npz`` -- what ``extensions.snapshot_object(gen,
'generator_iter_{.updater.iteration}.npz')`` writes (train.py:152-154; the discriminator line is commented
out there, 155-158, and saved here the same way) -- and writes ``outputs.npz``:

- ``z``: ``gen.make_hidden(batch)`` (U(-1, 1), the official draw);
- ``dense``: inference (``chainer.config.train = False``: BN on running statistics, every frame, render
  level 4), ``spec.dense_frames`` frames (``gen(z, n_frames)``);
- ``level1``..``level4``: the sparse training renders (``train = True``: BN on batch statistics), with the
  frame sub-sampling offsets pinned to ``spec.offsets`` (``numpy.random.randint(2)`` in
  ``MultiTGANCLSTMGenerator.subsample``, multi_tgan_clstm_generator.py:107; the recorder below answers
  those draws and records every draw);
- ``dis1``..``dis4``: ``dis((level1, ..., level4))`` split per level (multi_resnet_video_discriminator.py:21-24);
- ``bn/<link>/avg_mean|avg_var``: every BN's running statistics after the training forward (one update).

Shims (each needed only because the checkout is imported, not installed with its 2019 pins):
1. ``tgan2`` is registered as a bare package so that ``tgan2/__init__.py`` -- which imports the dataset
   readers (h5py, cv2, imageio, pandas, scipy) that model code never uses -- is not run; the model modules
   are then imported from the checkout as they are.
2. ``numpy.random.randint`` is wrapped while the generator runs: draws with ``high == 2`` (the frame
   sub-sampling offsets) return the pinned offsets, all others pass through; every draw is recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--official", required=True, type=Path)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())

    sys.path.insert(0, str(args.official))
    package = types.ModuleType("tgan2")  # shim 1
    package.__path__ = [str(args.official / "tgan2")]
    sys.modules["tgan2"] = package
    import chainer
    from tgan2.models.discriminators.multi_resnet_video_discriminator import MultiResNetVideoDiscriminator
    from tgan2.models.generators.multi_tgan_clstm_generator import MultiTGANCLSTMGenerator

    chainer.config.comm = None  # train.py:23
    gen_args, dis_args = dict(spec["gen"]), dict(spec["dis"])
    if spec.get("yml"):  # the paper config: the authors' own yml, as train.py reads it (train.py:77-80)
        import yaml

        conf = yaml.safe_load((args.official / spec["yml"]).read_text())
        gen_args = {**conf["gen"]["args"], **gen_args}
        dis_args = {**conf["dis"]["args"], **dis_args}
    numpy.random.seed(spec["seed"])
    gen = MultiTGANCLSTMGenerator(**gen_args)
    dis = MultiResNetVideoDiscriminator(**dis_args)

    rng = numpy.random.RandomState(spec["seed"] + 1)
    for link in (gen, dis):
        for name, param in link.namedparams():
            if name.endswith("/b"):
                param.array[...] = rng.normal(0, 0.05, param.shape)
        for name, child in link.namedlinks():
            if isinstance(child, chainer.links.BatchNormalization):
                child.gamma.array[...] = rng.uniform(0.5, 1.5, child.gamma.shape)
                child.beta.array[...] = rng.normal(0, 0.1, child.beta.shape)
                child.avg_mean[...] = rng.normal(0, 0.1, child.avg_mean.shape)
                child.avg_var[...] = rng.uniform(0.5, 1.5, child.avg_var.shape)
                child.N = 7
    args.out.mkdir(parents=True, exist_ok=True)
    chainer.serializers.save_npz(str(args.out / "generator_iter_0.npz"), gen)
    chainer.serializers.save_npz(str(args.out / "discriminator_iter_0.npz"), dis)

    outputs = {}
    z = gen.make_hidden(spec["batch"])
    outputs["z"] = z.array
    draws = []
    pinned = list(spec["offsets"])
    randint = numpy.random.randint

    def recorder(high, *rest, **kwargs):  # shim 2
        value = pinned.pop(0) if high == 2 and not rest and not kwargs else randint(high, *rest, **kwargs)
        draws.append([int(high), int(value)])
        return value

    with chainer.using_config("enable_backprop", False):
        with chainer.using_config("train", False):
            outputs["dense"] = gen(z, spec["dense_frames"]).array
        numpy.random.randint = recorder
        try:
            with chainer.using_config("train", True):
                levels = gen(z)
        finally:
            numpy.random.randint = randint
        if pinned:
            raise SystemExit(f"the generator drew fewer sub-sampling offsets than pinned: {draws}")
        for i, video in enumerate(levels):
            outputs[f"level{i + 1}"] = video.array
        for i, level in enumerate(dis.levels):
            outputs[f"dis{i + 1}"] = level(levels[i]).array
        outputs["dis_concat"] = dis(levels).array
    for name, child in gen.namedlinks():
        if isinstance(child, chainer.links.BatchNormalization):
            outputs[f"bn{name}/avg_mean"] = child.avg_mean
            outputs[f"bn{name}/avg_var"] = child.avg_var
    numpy.savez(args.out / "outputs.npz", **outputs)
    (args.out / "draws.json").write_text(json.dumps({"draws": draws, "chainer": chainer.__version__,
                                                     "gen_args": gen_args, "dis_args": dis_args}))


if __name__ == "__main__":
    main()
