"""TGANv2 output parity against the authors' Chainer code (pfnet-research/tgan2).

    TGAN2_PYTHON=/path/to/chainer-venv/bin/python \\
        python benchmarks/parity.py --family tganv2 --official /path/to/tgan2-checkout [--config paper]

The official side runs in its own Python with Chainer (``$TGAN2_PYTHON``; Chainer 7.8.1 with numpy<2 and
pyyaml, see docs/models/tganv2.md) as ``benchmarks/parity_tganv2_official.py``: it builds the official
generator and multi-level discriminator from the checkout, saves them with ``chainer.serializers.save_npz``
as ``generator_iter_0.npz`` / ``discriminator_iter_0.npz`` (what train.py's ``snapshot_object`` writes),
and writes its inputs and outputs. This side converts the two files with ``kinema convert tganv2_chainer``
(api), feeds kinema the same ``z`` and the same frame sub-sampling offsets, and compares:

- ``dense``: inference video (BN on running statistics), ``z -> (B, 3, T, R, R)``;
- ``level1..4``: the sparse training renders (BN on batch statistics) for the pinned offsets;
- ``bn running stats``: every generator BN's running mean/var after that one training forward;
- ``dis level1..4``: the multi-level discriminator's scores of the official ``level1..4`` videos.

Pinned draws: ``z`` is the official ``make_hidden`` draw; the sub-sampling offsets are fixed in both
(official: its ``numpy.random.randint(2)`` draws answered by a recorder; kinema:
``kinema.models.tganv2.model.frame_offsets`` replaced here by the same values, one per batch).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

OFFSETS = [1, 0, 1]  # frame sub-sampling offset after level 1, 2, 3 (stride 2): both values exercised

CONFIGS = {
    # The official classes at a tiny width: 6 Up blocks from a 1x1 map (64x64), 8 frames (levels see 8, 4,
    # 2, 1 frames: the last level's discriminator meets a length-1 time axis), batch 2 (batch sub-sampling
    # keeps 1 row after level 1).
    "tiny": {
        "official": {"gen": {"n_frames": 8, "z_slow_dim": 8, "out_channels": 3, "t_size": 1, "ch": 2,
                             "clstm_ch": 8}, "dis": {"in_channels": 3, "mid_ch": 2},
                     "batch": 2, "dense_frames": 8},
        "kinema": ("tganv2_ucf101_192", ["model.z_dim=8", "model.frames=8", "model.base_size=1",
                                         "model.resolution=64", "model.gen_channels=[8,32,16,8,4,2,2]",
                                         "model.dis_channels=[2,4,8,16,32]", "model.batch_subsample=2"]),
    },
    # The paper's network: conf/tgan-v41-ucf101.yml read from the checkout (out_channels / in_channels 3 as
    # train.py:77-80 passes them), batch 1. The yml turns batch sub-sampling on (subsample_batch: True);
    # kinema's config follows the README run (batch_subsample = 1), so the benchmark sets 2 -- with batch 1
    # both keep the one row.
    "paper": {
        "official": {"yml": "conf/tgan-v41-ucf101.yml", "gen": {"out_channels": 3}, "dis": {"in_channels": 3},
                     "batch": 1, "dense_frames": 16},
        "kinema": ("tganv2_ucf101_192", ["model.batch_subsample=2"]),
    },
}

FIXTURE_DENSE_FRAMES = 2  # the CI fixture keeps 2 dense frames (the official gen(z, n_frames=2)) to stay small


def chainer_python() -> str:
    python = os.environ.get("TGAN2_PYTHON", "python3")
    probe = subprocess.run([python, "-c", "import chainer, yaml"], capture_output=True, text=True)
    if probe.returncode:
        raise SystemExit(f"TGAN2_PYTHON={python} cannot import chainer and yaml ({probe.stderr.strip()[-200:]}). "
                         "Make a separate venv: python -m venv V && V/bin/pip install 'setuptools<70' wheel "
                         "'numpy<2' pyyaml && V/bin/pip install --no-build-isolation chainer==7.8.1; then "
                         "TGAN2_PYTHON=V/bin/python")
    return python


def run_official(official: Path, spec: dict, out: Path) -> dict:
    """Run the official side; returns its outputs (arrays) and writes the .npz snapshots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    script = Path(__file__).with_name("parity_tganv2_official.py")
    subprocess.run([chainer_python(), "-W", "ignore", str(script), "--official", str(official),
                    "--spec", str(out / "spec.json"), "--out", str(out)], check=True, env=env)
    with np.load(out / "outputs.npz") as npz:
        return {k: npz[k] for k in npz.files}


def pinned_offsets(offsets: list[int]):
    """A stand-in for ``kinema.models.tganv2.model.frame_offsets`` answering ``offsets`` in turn (one
    offset per batch, as the official ``numpy.random.randint(frame)`` in ``subsample``)."""
    queue = list(offsets)

    def frame_offsets(rows, stride, policy, generator, device):
        return torch.full((len(rows),), queue.pop(0), dtype=torch.long, device=device)

    return frame_offsets, queue


def kinema_outputs(ckpt: Path, z: np.ndarray, dense_frames: int, offsets: list[int],
                   dtype: torch.dtype = torch.float32) -> tuple[dict[str, np.ndarray], torch.nn.Module]:
    """kinema's outputs for the converted checkpoint: the same names as the official ``outputs.npz``."""
    import kinema.models.tganv2.model as tganv2
    from kinema.registry import load_model

    model, _, _ = load_model(ckpt)
    model = model.to(dtype)
    z_t = torch.from_numpy(z)
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        model.eval()
        out["dense"] = model.sample(z_t, torch.arange(dense_frames)).numpy()
        model.train()
        original, (stand_in, queue) = tganv2.frame_offsets, pinned_offsets(offsets)
        tganv2.frame_offsets = stand_in
        try:
            levels = model.generate_levels(z_t)
        finally:
            tganv2.frame_offsets = original
        if queue:
            raise RuntimeError(f"kinema drew {len(offsets) - len(queue)} sub-sampling offsets, the official code "
                               f"{len(offsets)}")
        for i, video in enumerate(levels):
            out[f"level{i + 1}"] = video.numpy()
        model.eval()
        return out, model


def compare(name: str, ours: np.ndarray, theirs: np.ndarray) -> tuple:
    if ours.shape != theirs.shape:
        raise RuntimeError(f"{name}: kinema {ours.shape} vs official {theirs.shape}")
    diff = float(np.abs(ours.astype(np.float64) - theirs).max())
    return (name, diff, diff / max(float(np.abs(theirs).max()), 1e-30), ours.shape)


def bn_rows(model, official: dict[str, np.ndarray]) -> list[tuple]:
    """Running statistics after one training forward: official ``bn/<link>/avg_*`` vs kinema's buffers
    (the worst over every BN of the generator)."""
    from kinema.models.tganv2.convert import generator_key

    state = model.state_dict()
    rows = {"avg_mean": [], "avg_var": []}
    for key, value in official.items():
        if key.startswith("bn/"):
            name = key[len("bn/"):]
            rows[name.rsplit("/", 1)[1]].append(compare(name, state[generator_key(name, Path())].numpy(), value))
    return [(f"bn {stat} after 1 training step ({len(r)} BNs)", max(x[1] for x in r), max(x[2] for x in r), (len(r),))
            for stat, r in rows.items()]


def run(official: Path, config: str, work: Path, fixture: Path | None, seed: int) -> list[tuple]:
    from kinema import api

    torch.set_num_threads(1)
    spec = {**CONFIGS[config]["official"], "seed": seed, "offsets": OFFSETS}
    if fixture is not None:
        spec["dense_frames"] = FIXTURE_DENSE_FRAMES
    theirs = run_official(official, spec, work / "official")
    base, overrides = CONFIGS[config]["kinema"]
    ckpt = api.convert("tganv2_chainer", work / "official" / "generator_iter_0.npz", work / "converted",
                       config=base, overrides=overrides)
    ours, model = kinema_outputs(ckpt, theirs["z"], spec["dense_frames"], OFFSETS)
    rows = [compare(f"dense (eval BN, {spec['dense_frames']} frames)", ours["dense"], theirs["dense"])]
    rows += [compare(f"level{i} (sparse, train BN)", ours[f"level{i}"], theirs[f"level{i}"]) for i in range(1, 5)]
    rows += bn_rows(model, theirs)
    with torch.no_grad():
        scores = model.discriminate([torch.from_numpy(theirs[f"level{i}"]) for i in range(1, 5)])
    rows += [compare(f"dis level{i}", s.numpy(), theirs[f"dis{i}"][:, 0]) for i, s in enumerate(scores, 1)]
    print_rounding_floor(ckpt, theirs, spec["dense_frames"])
    draws = json.loads((work / "official" / "draws.json").read_text())
    commit = official_commit(official)
    print(f"official: pfnet-research/tgan2 {commit}, chainer {draws['chainer']}; offsets {OFFSETS}; "
          f"official draws {draws['draws']}")
    if fixture is not None:
        write_fixture(fixture, work / "official", theirs, config, seed, commit)
    return rows


def print_rounding_floor(ckpt: Path, theirs: dict, dense_frames: int) -> None:
    """How far the official float32 outputs are from kinema's float64 run of the same weights: the float32
    rounding any float32 implementation is off by (the tanh renders divide an error near 0 by a max near 1)."""
    ours, model = kinema_outputs(ckpt, theirs["z"].astype(np.float64), dense_frames, OFFSETS, torch.float64)
    floors = [compare(k, ours[k], theirs[k]) for k in ("dense", "level1", "level2", "level3", "level4")]
    print("official float32 vs kinema float64 (the float32 rounding floor), relative: "
          + ", ".join(f"{name} {rel:.2e}" for name, _, rel, _ in floors))


def official_commit(official: Path) -> str:
    probe = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else os.environ.get("TGAN2_COMMIT", "(not a git checkout)")


def write_fixture(fixture: Path, official_out: Path, theirs: dict, config: str, seed: int, commit: str) -> None:
    """The CI fixture: the two snapshots in the authors' format, the inputs and the official outputs."""
    fixture.mkdir(parents=True, exist_ok=True)
    for name in ("generator_iter_0.npz", "discriminator_iter_0.npz"):
        shutil.copy(official_out / name, fixture / name)
    keep = {k: v for k, v in theirs.items() if k != "dis_concat"}
    np.savez_compressed(fixture / "outputs.npz", **keep)
    base, overrides = CONFIGS[config]["kinema"]
    (fixture / "fixture.json").write_text(json.dumps({
        "config": base, "overrides": overrides, "offsets": OFFSETS, "dense_frames": FIXTURE_DENSE_FRAMES,
        "official_commit": commit, "seed": seed}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit("run through benchmarks/parity.py --family tganv2")
