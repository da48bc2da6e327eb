"""Equal-compute quality (issue 31, item 3) for the two families whose reference is the authors' code: TGANv2
against the TGAN-ODE authors' PyTorch port, VideoGPT against wilson1yan/VideoGPT. ``benchmarks/equal_compute.py``
imports this module and merges ``AUTHORS_FAMILIES`` / ``REFERENCE_TRAINERS`` into its own tables.

Per family:

- ``AUTHORS_FAMILIES[family]``: kinema's side, ``{"stages": [{"name", "config", "set", "steps"}, ...], "batch",
  "speed_ratio", "reference", "notes"}`` at the architecture the reference can express (parameter counts equal,
  checked by ``tests/benchmarks/test_equal_compute_authors.py``), the reference's batch, loss weights and
  optimiser (lr, betas), fp32. A second stage names the first in ``"first_stage"``: kinema's
  ``model.<first_stage>`` is set to the first stage's run. ``speed_ratio``: kinema / reference seconds per
  training step at this architecture (``--speed``; the driver trains kinema ``steps / speed_ratio`` steps
  for its equal-wall-clock point).
- ``REFERENCE_TRAINERS[family](official, batches, steps, seed, work) -> sample(n, seed)``: the authors' model
  built from the checkout ``official`` (run from there, never copied), trained by the body of their own
  training loop on ``batches`` (``(B, 3, T, H, W)`` in [-1, 1]: the clips kinema trains on) for
  ``steps[stage name]`` iterations per stage; ``sample(n, seed)`` returns ``(n, 3, T, H, W)`` in [-1, 1] drawn
  by the authors' sampler.

TGANv2. The port (``models/tganv2_gen.py``, ``models/tganv2_dis.py``) hard-codes four levels (the
full-resolution render and three sub-sampled ones) and a square latent map, so its output side is
``zt_dim * 2 ** (len(upchannels) + 3)``: 32x32 needs ``zt_dim = 2, upchannels = [c]``. kinema's
``tganv2_cpu16`` (16 frames, 32x32, three levels from a 4x4 ConvLSTM) cannot be expressed; the common
network is ``tganv2_cpu16`` with one more level below (``PORT_CPU16_G``: a 2x2 ConvLSTM of 64 channels, then 64
at 4x4, 64 at 8x8, 32 at 16x16, 16 at 32x32, the same widths per resolution as ``tganv2_cpu16`` from 8x8 up;
levels 16x4x4, 8x8x8, 4x16x16, 2x32x32 in training) and ``tganv2_cpu16``'s discriminator widths
``[16, 32, 64]`` per level. kinema is set to the port's loop (``tganv2 UCF101.py``): R1 weight 0.5 summed over the
batch, softplus loss, Adam 1e-4 betas (0, 0.9), no EMA, and the port's network quirks (batch-norm eps 1e-5, no
ReLU before the discriminator's sum, ConvLSTM forget bias 0), as ``kinema convert tgan_ode_port`` describes
the port, and the port's update order (``objective.update_order = "discriminator_first"``: D on a no-grad
fake, then G on a new draw). Each seed's kinema run starts from the port's own initial weights of that seed
(``kinema_start``: built by its code, converted by ``kinema convert tgan_ode_port``), so both sides are the same
network at step 0 running the same loop (three iterations agree to 1.7e-12 in float64:
tests/models/tgan/test_parity_tgan_ode.py). Left different: the draws (z, sub-sampling offsets; kinema's reals
one offset per sample, the port's one per batch), the port's ``LambdaLR(1 - e / 100000)`` (within 0.6% of
constant here) against kinema's constant LR. Sampling: the port's ``genSamples`` (``gen(z, test=True)`` under ``no_grad``, generator in
train mode, so batch norm uses the sample batch's statistics); kinema's ``api.generate``.

VideoGPT. Stage 1, the VQ-VAE ``VQVAE(args)`` of ``scripts/train_vqvae.py`` at ``videogpt_vqvae_cpu16``'s
widths (``reference.FAMILIES["videogpt"]["reference"]["vqvae"]``), trained as Lightning 1.3.3 runs its
``training_step`` with ``configure_optimizers`` (Adam 3e-4, betas (0.9, 0.999), no schedule; data-dependent
codebook initialisation on the first batch, EMA codebook with restarts). Stage 2, ``VideoGPT(args)`` of
``scripts/train_videogpt.py`` at ``videogpt_prior_cpu16``'s widths on that VQ-VAE (saved as Lightning saves it,
loaded by their ``VQVAE.load_from_checkpoint``), Adam 3e-4 with the per-step cosine schedule over their
``max_steps`` 200,000 (within 1e-6 of constant over these steps; kinema's is constant). kinema's two stages use the
same lr and betas. Each of the reference's stages reads its own stream from draw 0 (``batches.stage(name)``,
the last stage ``batches`` itself), as kinema's trainer does. Shims: those of
``benchmarks/parity_videogpt.py`` (a stand-in ``pytorch_lightning`` and the data-only imports).

    OMP_NUM_THREADS=1 python benchmarks/equal_compute_authors.py --smoke \\
        --tgan-ode TGAN_ODE_CHECKOUT --videogpt VIDEOGPT_CHECKOUT       # a few steps of each, shapes and range
    OMP_NUM_THREADS=1 python benchmarks/equal_compute_authors.py --speed tganv2 --official TGAN_ODE_CHECKOUT
    OMP_NUM_THREADS=1 python benchmarks/equal_compute_authors.py --run tganv2 --official TGAN_ODE_CHECKOUT \\
        --seeds 0 1 2 --points equal_steps equal_wall_clock --clips 96 --i3d I3D.safetensors --workdir WORK \\
        --images WORK/images --out benchmarks/results/equal_compute_tganv2.json
    python benchmarks/equal_compute_authors.py --grid tganv2 --images WORK/images   # docs/images/equal_compute_tganv2.png

``--run`` is a standalone scorer (``benchmarks/quality.py``'s ``real_clips``, ``Features``, ``score``) for when
the driver is not at hand: per seed, kinema's stages through ``kinema.api.train`` and the reference's trainer on
the same stream, 96 samples of each scored against the same held-out clips.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# VideoGPT.sample draws a progress bar per token; tqdm reads this when it is first imported
os.environ.setdefault("TQDM_DISABLE", "1")
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# The port's constructors at the common 32x32 network (see the module docstring).
PORT_CPU16_G = dict(z_dim=64, tempc=64, zt_dim=2, upchannels=[64], subchannels=[64, 32, 16], n_frames=16,
                    colors=3, subsample=2)
PORT_CPU16_D = dict(layers=4, channels=[16, 32, 64])
# The authors' VideoGPT at videogpt_vqvae_cpu16 / videogpt_prior_cpu16 (benchmarks/reference.py FAMILIES).
VIDEOGPT_REFERENCE = {
    "vqvae": {"embedding_dim": 16, "n_codes": 128, "n_hiddens": 48, "n_res_layers": 1, "downsample": [4, 4, 4],
              "sequence_length": 16, "resolution": 32},
    "prior": {"hidden_dim": 96, "heads": 4, "layers": 4, "dropout": 0.0, "attn_dropout": 0.0, "attn_type": "full"},
}

# Every kinema stage: one DataLoader process (the reference reads its batches in-process), a 4-video preview.
_COMMON = ["data.workers=0", "train.num_samples=4"]

AUTHORS_FAMILIES: dict[str, dict] = {
    "tganv2": {
        "stages": [{
            "name": "tganv2", "stage": "tganv2",
            "config": "tganv2_cpu16",
            "set": [
                # the port's 32x32 network (PORT_CPU16_G / PORT_CPU16_D): a 2x2 ConvLSTM and four levels
                "model.z_dim=64", "model.base_size=2", "model.resolution=32", "model.gen_channels=[64,64,64,32,16]",
                "model.levels=4", "model.dis_channels=[16,32,64]",
                # the port's network, as `kinema convert tgan_ode_port` describes it
                "model.bn_eps=1e-5", "model.dis_final_relu=false", "model.convlstm_forget_bias=0.0",
                "model.subsample_stride=2", 'model.subsample_offset="batch"', "model.batch_subsample=1",
                # the loop of `tganv2 UCF101.py`: lambda 0.5 on the summed R1, softplus, Adam 1e-4 (0, 0.9), no EMA
                'objective.loss="softplus"', "objective.gp_weight=0.5", 'objective.gp_reduction="sum"',
                "train.lr=1e-4", "train.betas=[0.0,0.9]", "train.eps=1e-8", 'train.lr_schedule="constant"',
                "train.ema_decay=0.0", "train.batch_size=16", 'train.precision="fp32"', *_COMMON,
                # ... and its update order: D on a no-grad fake, then G on a fresh draw against the new D
                'objective.update_order="discriminator_first"',
            ],
            "steps": 600,
        }],
        # kinema starts from the port's own initial weights of the seed (converted by `kinema convert
        # tgan_ode_port`): the same network at step 0 on both sides. Measured at 100 steps, seed 0 (FVD, 96
        # samples): kinema's own init (Chainer's LeCun-normal, zero biases) and G-first order 3204; the
        # port's init 1843; + D first 1616; the port 1327.
        "kinema_init": "reference",
        "batch": 16,
        "speed_ratio": None,  # filled below from benchmarks/results/equal_compute_speed_tganv2.json (--speed)
        "reference": "Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation",
        "reference_args": {"gen": PORT_CPU16_G, "dis": PORT_CPU16_D},
        "notes": ("the port's TGANv2 (models/tganv2_gen.py, tganv2_dis.py) and the loop of `tganv2 UCF101.py`; the "
                  "port has four levels and a square latent, so 32x32 is tganv2_cpu16 with one level more (2x2 "
                  "ConvLSTM); kinema at the port's loss, optimiser and update order (R1 0.5, Adam 1e-4 (0, 0.9), no "
                  "EMA, D then G), from the port's initial weights of the seed; not tganv2_cpu16's own recipe "
                  "(R1 0.05, lr 5e-4, EMA 0.999)"),
    },
    "videogpt": {
        "stages": [
            {"name": "vqvae", "stage": "vqvae", "config": "videogpt_vqvae_cpu16",
             # VQVAE.configure_optimizers: Adam 3e-4 (0.9, 0.999), no schedule
             # data.num_clips: the 2,000-clip epoch these runs were measured on (the cpu16 configs now draw from 200,000)
             "set": ["train.lr=3e-4", "train.betas=[0.9,0.999]", 'train.lr_schedule="constant"',
                     "train.batch_size=8", 'train.precision="fp32"', "data.num_clips=2000", *_COMMON],
             "steps": 120},
            {"name": "prior", "stage": "prior", "config": "videogpt_prior_cpu16", "first_stage": "vqvae",
             # VideoGPT.configure_optimizers: Adam 3e-4 (0.9, 0.999), cosine over 200,000 steps (~constant here)
             "set": ["train.lr=3e-4", "train.betas=[0.9,0.999]", 'train.lr_schedule="constant"',
                     "train.batch_size=8", "train.ema_decay=0.0", 'train.precision="fp32"', "data.num_clips=2000",
                     *_COMMON],
             "steps": 120},
        ],
        "batch": 8,
        "speed_ratio": None,
        "reference": "wilson1yan/VideoGPT",
        "reference_args": VIDEOGPT_REFERENCE,
        "notes": ("the authors' VQVAE (scripts/train_vqvae.py) then VideoGPT (scripts/train_videogpt.py) on its "
                  "codes, their training_step and configure_optimizers; kinema's videogpt_vqvae_cpu16 + "
                  "videogpt_prior_cpu16 at their lr 3e-4 and betas (0.9, 0.999)"),
    },
}

SPEED_FILE = HERE / "results" / "equal_compute_speed_{family}.json"


def _load_speed() -> None:
    """``speed_ratio`` (and per stage) from the ``--speed`` records, when they are there."""
    for family, spec in AUTHORS_FAMILIES.items():
        path = Path(str(SPEED_FILE).format(family=family))
        if path.is_file():
            record = json.loads(path.read_text())
            spec["speed_ratio"] = record["speed_ratio"]
            spec["stage_speed_ratios"] = record["stage_speed_ratios"]


_load_speed()


# --------------------------------------------------------------------------- the references' trainers


def train_tganv2(official: Path | None, batches: Iterator[torch.Tensor], steps: dict[str, int], seed: int,
                 work: Path) -> Callable[[int, int], torch.Tensor]:
    """The port at ``PORT_CPU16_G`` / ``PORT_CPU16_D`` (built under ``torch.manual_seed(seed)``) trained for
    ``steps["tganv2"]`` iterations of the loop body of ``tganv2 UCF101.py`` (``train_speed.build_port_tganv2``:
    D step with the R1 penalty on the four real levels and a no-grad fake, then a G step on a new draw; Adam
    1e-4 (0, 0.9) and the linear decay), each on the next clip batch of ``batches`` (kinema's
    ``(B, C, T, H, W)`` -> the script's ``(N, T, C, H, W)``). ``sample(n, seed)``: the script's
    ``genSamples`` (``gen(z, test=True)``, z uniform in [-1, 1], train-mode generator, no_grad)."""
    import numpy as np

    import train_speed

    official = Path(official or os.environ.get("KINEMA_OFFICIAL_TGAN_ODE", ""))
    if not official.is_dir():
        raise FileNotFoundError(f"TGANv2 reference: no checkout of the TGAN-ODE authors' repository ({official})")
    first = next(batches)
    gen, dis, step, counts = train_speed.build_port_tganv2(official, first.shape[0], torch.device("cpu"),
                                                           real=first.transpose(1, 2).contiguous(),
                                                           gen_kwargs=PORT_CPU16_G, dis_kwargs=PORT_CPU16_D, seed=seed)
    if hasattr(batches, "parameters"):
        batches.parameters = {"G": counts[0], "D": counts[1]}
    cpu = time.process_time()
    for i in range(steps["tganv2"]):
        x = first if i == 0 else next(batches)
        step(x.float().transpose(1, 2).contiguous())
    if hasattr(batches, "cpu"):
        batches.cpu("tganv2", time.process_time() - cpu)

    @torch.no_grad()
    def sample(n: int, seed: int = 0) -> torch.Tensor:
        torch.manual_seed(seed)
        np.random.seed(seed)
        out = gen(torch.rand((n, PORT_CPU16_G["z_dim"])) * 2 - 1, test=True)  # (N, C, T, H, W)
        return out.float().clamp(-1, 1)

    return sample


def _official_vqvae(official: Path, seed: int):
    """``VQVAE(args)`` as ``scripts/train_vqvae.py`` builds it (``parity_videogpt.script_args``: their parser)."""
    import parity_videogpt as pv

    VQVAE, _ = pv.import_official(official)
    v = VIDEOGPT_REFERENCE["vqvae"]
    args = pv.script_args(VQVAE, ["--embedding_dim", str(v["embedding_dim"]), "--n_codes", str(v["n_codes"]),
                                  "--n_hiddens", str(v["n_hiddens"]), "--n_res_layers", str(v["n_res_layers"]),
                                  "--downsample", *map(str, v["downsample"]),
                                  "--sequence_length", str(v["sequence_length"]), "--resolution", str(v["resolution"])],
                          {"data_path": "", "sequence_length": 16, "resolution": 64, "batch_size": 32,
                           "num_workers": 8})  # train_vqvae.py:14-18
    torch.manual_seed(seed)
    return VQVAE(args)


def _lightning_steps(module, stream: Iterator[torch.Tensor], n: int, opt, batches, name: str, scheduler=None) -> None:
    """``n`` iterations of what Lightning 1.3.3 runs per batch for the authors' modules: ``training_step`` on
    ``{"video": x / 2}`` (their pixels in [-0.5, 0.5]), backward, ``opt.step()``, ``zero_grad()``, then the
    scheduler if one steps per iteration; the loss log and CPU seconds go to the driver's ``batches``."""
    cpu = time.process_time()
    for i in range(n):
        loss = module.training_step({"video": next(stream).float() / 2}, i)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()
        if hasattr(batches, "log"):
            batches.log(name, i, loss.item())
    if hasattr(batches, "cpu"):
        batches.cpu(name, time.process_time() - cpu)


def train_videogpt(official: Path | None, batches: Iterator[torch.Tensor], steps: dict[str, int], seed: int,
                   work: Path) -> Callable[[int, int], torch.Tensor]:
    """Stage ``vqvae``: the authors' ``VQVAE`` trained ``steps["vqvae"]`` iterations as Lightning 1.3.3 runs
    ``training_step`` (recon MSE / 0.06 + commitment) with ``configure_optimizers`` (Adam 3e-4), in train mode
    (the codebook's data-dependent initialisation on the first batch, its EMA and restarts); saved as Lightning
    saves it (``parity_videogpt.save_lightning_ckpt``). Stage ``prior``: ``VideoGPT(args)``
    (``reference_authors.official_videogpt``: their script's arguments, their ``VQVAE.load_from_checkpoint``)
    trained ``steps["prior"]`` iterations of ``training_step`` + Adam + the per-step cosine schedule.
    Videos go in as the authors' [-0.5, 0.5] (``x / 2``). ``sample(n, seed)``: ``VideoGPT.sample(n)``
    (their cached decoding; [0, 1] out, mapped to [-1, 1])."""
    import parity_videogpt as pv
    import reference_authors

    official = Path(official or os.environ.get("KINEMA_OFFICIAL_VIDEOGPT", ""))
    if not official.is_dir():
        raise FileNotFoundError(f"VideoGPT reference: no checkout of wilson1yan/VideoGPT ({official})")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    # each stage reads its own stream from draw 0, as kinema's trainer does (the driver's batches.stage)
    vq_batches = batches.stage("vqvae") if hasattr(batches, "stage") else batches
    vqvae = _official_vqvae(official, seed)
    vqvae.train()
    opt = vqvae.configure_optimizers()
    _lightning_steps(vqvae, vq_batches, steps["vqvae"], opt, batches, "vqvae")
    vqvae.eval()
    pv.save_lightning_ckpt(vqvae, work / "official_vqvae.ckpt", opt, step=steps["vqvae"])
    model, opt, sched = reference_authors.official_videogpt(official, VIDEOGPT_REFERENCE, work, seed=seed)
    model.train()
    if hasattr(batches, "parameters"):
        batches.parameters = {"vqvae": sum(p.numel() for p in vqvae.parameters()),
                              "prior": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    _lightning_steps(model, batches, steps["prior"], opt, batches, "prior", sched["scheduler"])  # interval "step"
    model.eval()

    @torch.no_grad()
    def sample(n: int, seed: int = 0) -> torch.Tensor:
        torch.manual_seed(seed)
        return (model.sample(n).float() * 2 - 1).clamp(-1, 1)

    return sample


REFERENCE_TRAINERS = {"tganv2": train_tganv2, "videogpt": train_videogpt}
CHECKOUT_ENV = {"tganv2": "KINEMA_OFFICIAL_TGAN_ODE", "videogpt": "KINEMA_OFFICIAL_VIDEOGPT"}


# --------------------------------------------------------------------------- kinema's side and the data stream


def stage_overrides(family: str, stage: dict, seed: int, runs: dict[str, Path]) -> list[str]:
    """``stage["set"]`` + the seed + (a second stage) ``model.<first_stage>`` = the first stage's run."""
    out = [*stage["set"], f"train.seed={seed}"]
    if "first_stage" in stage:
        out.append(f'model.{stage["first_stage"]}="{runs[stage["first_stage"]]}"')
    return out


def stage_stream(family: str, name: str, seed: int) -> Iterator[torch.Tensor]:
    """The clip batches kinema's trainer reads for stage ``name`` at ``train.seed = seed``
    (``Trainer._batches``: ``build_dataset(cfg.data, seed=train.seed, uint8=True)`` through its
    ``DrawSampler`` stream, dequantised), ``(B, 3, T, H, W)`` float in [-1, 1]."""
    from trainer_stream import config_stream

    from kinema.registry import load_config

    stage = next(s for s in AUTHORS_FAMILIES[family]["stages"] if s["name"] == name)
    return config_stream(load_config(stage["config"], [*stage["set"], f"train.seed={seed}"]))


class KinemaBatches:
    """The driver's ``batches`` here: iterating gives the last stage's stream, ``stage(name)`` another's."""

    def __init__(self, family: str, seed: int) -> None:
        self.family, self.seed = family, seed
        self.last = stage_stream(family, AUTHORS_FAMILIES[family]["stages"][-1]["name"], seed)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        return next(self.last)

    def stage(self, name: str) -> Iterator[torch.Tensor]:
        return stage_stream(self.family, name, self.seed)


def kinema_batches(family: str, seed: int) -> KinemaBatches:
    return KinemaBatches(family, seed)


def port_initial_weights(official: Path, seed: int, work: Path) -> Path:
    """The port's TGANv2 at ``PORT_CPU16_G`` / ``PORT_CPU16_D`` as ``train_tganv2`` builds it for ``seed``
    (its own initialisers under ``torch.manual_seed(seed)``), saved as ``tganv2 UCF101.py`` saves a
    checkpoint and converted by ``kinema convert tgan_ode_port``: kinema's ``train.init_from``."""
    import train_speed

    from kinema import api

    out = work / "reference_init"
    if not (out / "config.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        gen, dis, _, _ = train_speed.build_port_tganv2(official, 1, torch.device("cpu"),
                                                       real=torch.zeros(1, 16, 3, 32, 32),
                                                       gen_kwargs=PORT_CPU16_G, dis_kwargs=PORT_CPU16_D, seed=seed)
        src = work / "state_normal0.ckpt"
        torch.save({"epoch": 0, "model_state_dict": [gen.state_dict(), dis.state_dict()]}, src)
        api.convert("tgan_ode_port", src, out)
    return out


REFERENCE_INITS = {"tganv2": port_initial_weights}


def kinema_start(family: str, seed: int, work: Path, official: Path | None) -> list[str]:
    """Extra overrides of kinema's first stage: ``train.init_from`` = the reference's initial weights of the
    seed, when the family's spec says ``kinema_init = "reference"``."""
    if AUTHORS_FAMILIES[family].get("kinema_init") != "reference":
        return []
    official = Path(official or os.environ.get(CHECKOUT_ENV[family], ""))
    if not official.is_dir():
        raise FileNotFoundError(f"{family}: kinema starts from the reference's initial weights, which need its "
                                f"checkout (--official or ${CHECKOUT_ENV[family]}); got {official}")
    return [f'train.init_from="{REFERENCE_INITS[family](official, seed, work)}"']


def train_kinema(family: str, seed: int, work: Path, steps: dict[str, int] | None = None, log=print,
                 official: Path | None = None):
    """kinema's stages through ``kinema.api.train`` (the trainer of ``kinema train``); returns the last
    stage's checkpoint and the per-stage seconds. ``official``: the reference's checkout, for families whose
    kinema side starts from the reference's initial weights (``kinema_start``)."""
    from kinema import api

    runs, seconds, ckpt = {}, {}, None
    start_from = kinema_start(family, seed, work, official)
    for i, stage in enumerate(AUTHORS_FAMILIES[family]["stages"]):
        n = (steps or {}).get(stage["name"], stage["steps"])
        out = work / f"kinema_{stage['name']}"
        start = time.perf_counter()
        overrides = stage_overrides(family, stage, seed, runs) + (start_from if i == 0 else [])
        ckpt = Path(api.train(stage["config"], out, overrides=overrides, steps=n, device="cpu", progress=False))
        torch.set_num_threads(1)
        seconds[stage["name"]] = time.perf_counter() - start
        runs[stage["name"]] = ckpt.parent.parent
        log(f"  kinema {family} {stage['name']}: {n} steps in {seconds[stage['name']]:.0f} s")
    return ckpt, seconds


def kinema_sampler(ckpt: Path) -> Callable[[int, int], torch.Tensor]:
    from kinema import api

    model, _ = api.load(ckpt)

    def sample(n: int, seed: int = 0) -> torch.Tensor:
        return api.generate(model, n, seed=seed, batch_size=min(n, 32)).float()

    return sample


# --------------------------------------------------------------------------- --smoke


def smoke(family: str, official: Path, work: Path, steps: int = 2) -> dict:
    """A few reference steps on kinema's stream, 2 samples: shapes and range."""
    batches = kinema_batches(family, 0)
    stage_steps = {s["name"]: steps for s in AUTHORS_FAMILIES[family]["stages"]}
    start = time.perf_counter()
    sample = REFERENCE_TRAINERS[family](official, batches, stage_steps, 0, work)
    videos = sample(2, 0)
    took = time.perf_counter() - start
    stage = AUTHORS_FAMILIES[family]["stages"][0]
    from kinema.registry import load_config

    m = load_config(stage["config"], stage["set"]).model
    want = (2, 3, m.frames, m.resolution, m.resolution)
    assert tuple(videos.shape) == want, (videos.shape, want)
    assert videos.min() >= -1 and videos.max() <= 1 and torch.isfinite(videos).all()
    return {"family": family, "shape": list(videos.shape), "min": float(videos.min()), "max": float(videos.max()),
            "seconds": took}


# --------------------------------------------------------------------------- --speed


def reference_step_fn(family: str, official: Path, stage: str, work: Path, x: torch.Tensor):
    """One iteration of the reference's loop body for ``stage`` on ``x`` (seconds)."""
    if family == "tganv2":
        import train_speed

        _, _, step, _ = train_speed.build_port_tganv2(official, x.shape[0], torch.device("cpu"),
                                                      real=x.transpose(1, 2).contiguous(),
                                                      gen_kwargs=PORT_CPU16_G, dis_kwargs=PORT_CPU16_D)
        return step
    import reference_authors

    if stage == "vqvae":
        vqvae = _official_vqvae(official, 0)
        vqvae.train()
        opt = vqvae.configure_optimizers()

        def step():
            t = time.perf_counter()
            loss = vqvae.training_step({"video": x / 2}, 0)
            loss.backward()
            opt.step()
            opt.zero_grad()
            return time.perf_counter() - t

        return step
    _, prior_step, _, _ = reference_authors.build_videogpt(official, VIDEOGPT_REFERENCE, work, x)

    def timed():
        t = time.perf_counter()
        prior_step()
        return time.perf_counter() - t

    return timed


def speed(family: str, official: Path, rounds: int, warmup: int, work: Path) -> dict:
    """kinema's ``kinema train`` step (``train_speed.kinema_server``: the trainer's loop, its own process)
    alternating with one iteration of the reference's loop body (this process) at each stage's architecture,
    order swapped every round; ``speed_ratio`` = the steps-weighted total of per-stage median seconds."""
    from types import SimpleNamespace

    import reference_authors
    import train_speed

    from kinema.data import Draws, build_dataset
    from kinema.registry import load_config

    spec = AUTHORS_FAMILIES[family]
    record = {"family": family, "reference": spec["reference"], "threads": torch.get_num_threads(), "stages": {}}
    extra: list[str] = []
    if family == "videogpt":  # the prior's server needs a VQ-VAE: the authors' (random, data-initialised) converted
        extra = reference_authors.prepare_videogpt(official, VIDEOGPT_REFERENCE, work)
    for stage in spec["stages"]:
        sets = [*stage["set"], *(extra if "first_stage" in stage else [])]
        cfg = load_config(stage["config"], sets)
        m = cfg.model
        ds = build_dataset(cfg.data, frames=m.frames, height=m.resolution, width=m.resolution, seed=0)
        x = torch.stack([torch.as_tensor(Draws(ds)[i]).float() for i in range(spec["batch"])])
        ref_step = reference_step_fn(family, official, stage["name"], work, x)
        args = SimpleNamespace(config=stage["config"], set=sets, batch=spec["batch"], device="cpu", precision="fp32",
                               threads=1)
        kin = train_speed.kinema_server(args)
        got = train_speed.alternate_with_kinema(kin, "reference", ref_step, warmup + rounds)[warmup:]
        train_speed.quit_servers(kin)
        cli = [g["kinema_cli"] for g in got]
        ref = [g["reference"] for g in got]
        record["stages"][stage["name"]] = {
            "steps": stage["steps"], "kinema_cli_s": cli, "reference_s": ref,
            "kinema_cli_median_s": statistics.median(cli), "reference_median_s": statistics.median(ref),
            "kinema_over_reference": train_speed.ratio_stats([a / b for a, b in zip(cli, ref)])}
    return with_speed_ratio(record)


def with_speed_ratio(record: dict) -> dict:
    """``speed_ratio`` such that kinema, its earlier stages at their steps and its last stage at
    ``steps / speed_ratio``, takes the reference's wall clock for all stages at their steps (the driver's
    equal-wall-clock point continues only the last stage), from the per-stage median seconds:
    ``steps_last * kinema_last / (sum reference - sum kinema of the earlier stages)``. One stage: the ratio of
    the median seconds. Also the per-stage median of the per-round ratios and the all-stages total ratio."""
    st = record["stages"]
    names = list(st)
    record["stage_speed_ratios"] = {k: v["kinema_over_reference"]["median"] for k, v in st.items()}
    ref_total = sum(v["reference_median_s"] * v["steps"] for v in st.values())
    kin_earlier = sum(st[k]["kinema_cli_median_s"] * st[k]["steps"] for k in names[:-1])
    last = st[names[-1]]
    record["speed_ratio"] = last["steps"] * last["kinema_cli_median_s"] / (ref_total - kin_earlier)
    record["total_speed_ratio"] = sum(v["kinema_cli_median_s"] * v["steps"] for v in st.values()) / ref_total
    return record


# --------------------------------------------------------------------------- --run (standalone scorer)

POINTS = ("equal_steps", "equal_wall_clock")
SUMMARY_KEYS = ("fvd", "kvd", "count_preserved", "physically_consistent", "speed_distance", "train_seconds")


def wall_clock_steps(family: str) -> dict[str, int]:
    """Per stage, kinema's steps at the reference's wall clock, as the driver takes them: earlier stages keep
    their steps, the last one trains ``steps / speed_ratio`` (see ``speed``)."""
    spec = AUTHORS_FAMILIES[family]
    out = {s["name"]: s["steps"] for s in spec["stages"]}
    last = spec["stages"][-1]
    out[last["name"]] = math.floor(last["steps"] / spec["speed_ratio"])
    return out


def train_kinema_longer(family: str, seed: int, work: Path, log=print, official: Path | None = None):
    """kinema at ``wall_clock_steps``: the last stage's equal-steps run continued (resume; constant LR, so the
    same as one longer run)."""
    from kinema import api

    spec = AUTHORS_FAMILIES[family]
    more, runs = wall_clock_steps(family), {}
    for stage in spec["stages"][:-1]:
        runs[stage["name"]] = work / f"kinema_{stage['name']}"
    stage = spec["stages"][-1]
    start_from = kinema_start(family, seed, work, official) if len(spec["stages"]) == 1 else []
    start = time.perf_counter()
    ckpt = Path(api.train(stage["config"], work / f"kinema_{stage['name']}",
                          overrides=stage_overrides(family, stage, seed, runs) + start_from, steps=more[stage["name"]],
                          device="cpu", progress=False, resume=True))
    torch.set_num_threads(1)
    took = time.perf_counter() - start
    log(f"  kinema {family} {stage['name']}: continued to step {more[stage['name']]} in {took:.0f} s")
    return ckpt, took, more


def summarise(rows: list[dict]) -> dict:
    import quality

    summary = {}
    for side, label in sorted({(r["side"], r["point"]) for r in rows}):
        mine = [r for r in rows if (r["side"], r["point"]) == (side, label)]
        summary[f"{side}_{label}"] = {k: quality.mean_std([r[k] for r in mine]) for k in SUMMARY_KEYS}
        summary[f"{side}_{label}"]["seeds"] = sorted(r["seed"] for r in mine)
    return summary


def run(family: str, official: Path, seeds: list[int], points: list[str], clips: int, i3d: Path, work: Path,
        out: Path, images: Path | None, log=print) -> dict:
    """Per seed and point: ``equal_steps``: kinema's stages (``kinema.api.train``), then the reference's trainer
    on kinema's stream, each at the stages' steps; ``equal_wall_clock``: kinema at ``steps / speed_ratio``
    (``train_kinema_longer``, after the equal-steps run in the same ``work``). ``clips`` samples of each (sample
    seed = the training seed) scored by ``quality.score`` against the held-out ``bouncing_shapes`` clips
    (``quality.HELD_OUT_SEED``; their I3D features cached in ``work``). Rows already in ``out`` are kept and
    not redone; ``out`` is rewritten after every row."""
    import quality

    from kinema.registry import load_config

    spec = AUTHORS_FAMILIES[family]
    first = spec["stages"][0]
    m = load_config(first["config"], first["set"]).model
    real = quality.real_clips("bouncing_shapes", quality.HELD_OUT_SEED, clips, m.resolution, m.frames)
    features = quality.Features(quality.i3d_feature_fn(i3d, "cpu"), log=log, cache_dir=work / "features")
    disk_key = {"network": "i3d", "frames": m.frames, "num": clips, "seed": quality.HELD_OUT_SEED,
                "data": "bouncing_shapes", "size": m.resolution}
    record = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    command = ("python benchmarks/equal_compute_authors.py " + " ".join(sys.argv[1:])).replace(str(official), "CHECKOUT")
    record.update({
        "family": family, "reference": spec["reference"], "reference_args": spec["reference_args"],
        "stages": spec["stages"], "batch": spec["batch"], "speed_ratio": spec["speed_ratio"],
        "stage_speed_ratios": spec.get("stage_speed_ratios"), "wall_clock_steps": wall_clock_steps(family),
        "clips": clips, "data": "bouncing_shapes", "held_out_seed": quality.HELD_OUT_SEED,
        "torch": torch.__version__, "threads": 1})
    record.setdefault("commands", [])
    command = command.replace(str(i3d), "I3D").replace(str(work), "WORKDIR").replace(str(out.parent), "OUT")
    if images is not None:
        command = command.replace(str(images), "IMAGES")
    if command not in record["commands"]:
        record["commands"].append(command)
    done = {(r["side"], r["point"], r["seed"]) for r in record["rows"]}

    def add(side: str, point: str, seed: int, steps: dict, seconds: float, videos: torch.Tensor) -> None:
        r = quality.flat(quality.score(videos, real, features, "real", ref_disk_key=disk_key))
        record["rows"].append({"side": side, "point": point, "seed": seed, "steps": steps, "train_seconds": seconds,
                               **r})
        record["summary"] = summarise(record["rows"])
        log(f"{family} seed {seed} {side} ({point}): FVD {r['fvd']:.1f} KVD {r['kvd']:.2f} count "
            f"{r['count_preserved']:.3f} phys {r['physically_consistent']:.3f} speed {r['speed_distance']:.3f}")
        if images is not None:
            images.mkdir(parents=True, exist_ok=True)
            torch.save(videos[:8].clone(), images / f"{family}_{side}_{point}_seed{seed}.pt")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")

    steps = {s["name"]: s["steps"] for s in spec["stages"]}
    for seed in seeds:
        w = work / f"{family}_seed{seed}"
        w.mkdir(parents=True, exist_ok=True)
        if "equal_steps" in points and ("kinema", "equal_steps", seed) not in done:
            ckpt, secs = train_kinema(family, seed, w, log=log, official=official)
            add("kinema", "equal_steps", seed, steps, sum(secs.values()), kinema_sampler(ckpt)(clips, seed))
        if "equal_steps" in points and ("reference", "equal_steps", seed) not in done:
            start = time.perf_counter()
            sample = REFERENCE_TRAINERS[family](official, kinema_batches(family, seed), steps, seed, w / "reference")
            took = time.perf_counter() - start
            log(f"  reference {family}: {steps} in {took:.0f} s")
            add("reference", "equal_steps", seed, steps, took, sample(clips, seed))
        if "equal_wall_clock" in points and ("kinema", "equal_wall_clock", seed) not in done:
            ckpt, took, more = train_kinema_longer(family, seed, w, log=log, official=official)
            add("kinema", "equal_wall_clock", seed, more, took, kinema_sampler(ckpt)(clips, seed))
    return record


def grid(family: str, images: Path, point: str = "equal_steps", seed: int = 0, path: Path | None = None) -> Path:
    """``docs/images/equal_compute_<family>.png``: kinema's first 8 samples | the reference's (frames 0, 3, 7,
    11, 15 each; ``quality.save_sample_png``'s layout, the two grids side by side with a gap)."""
    import numpy as np
    from PIL import Image

    import quality

    tiles = []
    for side in ("kinema", "reference"):
        videos = torch.load(images / f"{family}_{side}_{point}_seed{seed}.pt")
        tiles.append(np.asarray(Image.open(quality.save_sample_png(videos, images / f"{family}_{side}.png"))))
    gap = np.full((tiles[0].shape[0], 16, 3), 255, np.uint8)
    path = path or ROOT / "docs" / "images" / f"equal_compute_{family}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([tiles[0], gap, tiles[1]], axis=1)).save(path)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few reference steps of each family with a checkout")
    ap.add_argument("--tgan-ode", help="--smoke: the TGAN-ODE authors' checkout (default $KINEMA_OFFICIAL_TGAN_ODE)")
    ap.add_argument("--videogpt", help="--smoke: the VideoGPT checkout (default $KINEMA_OFFICIAL_VIDEOGPT)")
    ap.add_argument("--speed", choices=sorted(AUTHORS_FAMILIES), help="time kinema against the reference")
    ap.add_argument("--run", choices=sorted(AUTHORS_FAMILIES), help="train and score both sides (standalone)")
    ap.add_argument("--official", help="--speed / --run: the family's checkout")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--i3d", help="--run: I3D weights (kinema convert i3d)")
    ap.add_argument("--points", nargs="+", choices=POINTS, default=["equal_steps"], help="--run: which points")
    ap.add_argument("--images", help="--run: folder for the first 8 samples of each row (.pt)")
    ap.add_argument("--grid", choices=sorted(AUTHORS_FAMILIES),
                    help="write docs/images/equal_compute_<family>.png from --images (kinema | reference, seed 0)")
    ap.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--out", help="write the JSON record here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        if args.smoke:
            for family, given in (("tganv2", args.tgan_ode), ("videogpt", args.videogpt)):
                official = given or os.environ.get(CHECKOUT_ENV[family])
                if not official:
                    print(f"{family}: no checkout given, skipped")
                    continue
                print(json.dumps(smoke(family, Path(official), work / family)))
            return
        if args.speed:
            record = speed(args.speed, Path(args.official), args.rounds, args.warmup, work)
            record["command"] = ("python benchmarks/equal_compute_authors.py " + " ".join(sys.argv[1:])
                                 ).replace(args.official, "CHECKOUT")
        elif args.run:
            if not (args.out and args.i3d):
                ap.error("--run needs --out and --i3d")
            record = run(args.run, Path(args.official), args.seeds, args.points, args.clips, Path(args.i3d), work,
                         Path(args.out), Path(args.images) if args.images else None)
            print(json.dumps(record["summary"], indent=1))
            return
        elif args.grid:
            print(grid(args.grid, Path(args.images)))
            return
        else:
            ap.error("give --smoke, --speed, --run or --grid")
        print(json.dumps({k: v for k, v in record.items() if k != "rows"}, indent=1))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
