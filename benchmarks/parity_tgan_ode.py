"""TGAN-ODE output parity against the authors' PyTorch code (Zasder3/Latent-Neural-Differential-Equations-
for-Video-Generation, 0717f48): their TGANv2 port, TGANv2-ODE, and 64x64 TGAN-ODE.

    python benchmarks/parity.py --family tgan_ode --official /path/to/checkout [--config paper]

The networks are built from the checkout's ``models/`` (imported from there, never copied), with their own
initialisation under ``torch.manual_seed(seed)``; every bias and BatchNorm value is then perturbed (a
mis-mapped one would otherwise hide behind 0 / 1). They are saved exactly as the scripts save them --
``torch.save({'epoch', 'model_state_dict': [gen.state_dict(), dis.state_dict()], 'optimizer_state_dict':
[...], 'optimizer_schedule_dict': [...]})`` (``tganv2 UCF101.py`` / ``tganv2_ode.py``: Adam + LambdaLR; the
64x64 ``tgan SVC ODE lin UCF101.py``: RMSprop, no schedule) -- converted with ``kinema convert
tgan_ode_port`` (api), and both sides get the same ``z`` (the scripts' ``torch.rand(B, z) * 2 - 1``).

Outputs compared (kinema layout (B, C, T, H, W)):
- TGANv2 / TGANv2-ODE: the dense video (``gen(z, test=True)``) with BN on running statistics and on
  batch statistics; the four sparse training renders (``gen(z)``, batch statistics) for pinned sub-sampling
  offsets; the BN running statistics after that forward; ``DisMultiResNet``'s scores of the four renders.
- 64x64 TGAN-ODE (with and without the initial MLP) and TGAN (conv1d): the video with BN in eval and train mode; ``VideoDiscriminator``'s
  scores, eval and train.

Shims (the scripts are not imported, only ``models/``; listed in docs/models/tgan_ode.md):
1. ``numpy.random.randint`` answers the port's frame sub-sampling draws (``np.random.randint(min(frames,
   T))``, models/tganv2_gen.py ``subsample``) with the pinned offsets while the generator runs.
2. The port's TGANv2 sub-samples with stride 4 (``subsample=4``: levels see 16, 4, 1, 1 frames), which
   kinema's sparse training cannot express; the generators are built with ``subsample=2`` (the paper's
   stride, a constructor argument) so that the sparse renders can be compared. Dense generation and the
   discriminator do not depend on it.
3. ``tgan.VideoDiscriminator`` reshapes to a hard-coded batch of 32 (``torch.reshape(h, (32, 512, 4, 4))``):
   the 64x64 comparison uses batch 32, the scripts' batch size. Optimisers get float betas ``(0.0, 0.9)``
   (torch 2.13 refuses the int 0 the scripts pass).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

OFFSETS = [1, 0, 1]  # sub-sampling offsets after level 1, 2, 3 (stride 2)

CONFIGS = {
    # Generator_CLSTM / GeneratorODE from a 1x1 map through one Up block to 16x16, 16 frames (the scripts'
    # frame count), widths 8..2; DisMultiResNet with widths 1..16; batch 2.
    "tiny": {"tganv2": {"gen": {"z_dim": 8, "tempc": 8, "zt_dim": 1, "upchannels": [8], "subchannels": [4, 2, 2],
                                "n_frames": 16, "colors": 3, "subsample": 2},
                        "dis": {"layers": 4, "channels": [1, 2, 4, 8, 16], "colors": 3}, "batch": 2}},
    # The scripts' networks (their constructors' defaults), batch 1; the 64x64 TGAN-ODE at batch 32.
    "paper": {"tganv2": {"gen": {"subsample": 2}, "dis": {}, "batch": 1}, "tgan": {"batch": 32}},
}


def _perturb(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every bias and BatchNorm value a non-default value (in place)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05)
            elif leaf == "running_mean":
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif leaf == "running_var":
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif leaf == "weight" and tensor.dim() == 1:  # BatchNorm scale
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)


def _save_like_the_scripts(path: Path, gen, dis, adam: bool) -> None:
    if adam:  # tganv2 UCF101.py / tganv2_ode.py: Adam(lr=1e-4, betas=(0, 0.9)) + LambdaLR(1 - epoch/epochs)
        opts = [torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.0, 0.9)) for m in (gen, dis)]
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda epoch: 1 - epoch / 100000) for o in opts]
        torch.save({"epoch": 0, "model_state_dict": [gen.state_dict(), dis.state_dict()],
                    "optimizer_state_dict": [o.state_dict() for o in opts],
                    "optimizer_schedule_dict": [s.state_dict() for s in scheds]}, path)
    else:  # tgan SVC ODE lin UCF101.py: RMSprop(lr=5e-5), no schedule
        opts = [torch.optim.RMSprop(m.parameters(), lr=5e-5) for m in (gen, dis)]
        torch.save({"epoch": 0, "model_state_dict": [gen.state_dict(), dis.state_dict()],
                    "optimizer_state_dict": [o.state_dict() for o in opts]}, path)


def _pinned_numpy(offsets: list[int]):
    """Shim 1: a ``numpy.random.randint`` that answers the sub-sampling draws with ``offsets``."""
    queue, original = list(offsets), np.random.randint

    def randint(high, *rest, **kwargs):
        return queue.pop(0) if not rest and not kwargs else original(high, *rest, **kwargs)

    return randint, queue, original


def _pinned_kinema(offsets: list[int]):
    queue = list(offsets)

    def frame_offsets(rows, stride, policy, generator, device):
        return torch.full((len(rows),), queue.pop(0), dtype=torch.long, device=device)

    return frame_offsets, queue


def compare(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> tuple:
    ours, theirs = ours.detach().double(), theirs.detach().double()
    if ours.shape != theirs.shape:
        raise RuntimeError(f"{name}: kinema {tuple(ours.shape)} vs official {tuple(theirs.shape)}")
    diff = float((ours - theirs).abs().max())
    return (name, diff, diff / max(float(theirs.abs().max()), 1e-30), tuple(ours.shape))


def official_tganv2(official: Path, kind: str, spec: dict, seed: int, ckpt: Path) -> dict[str, torch.Tensor]:
    """Build, perturb and save the port's TGANv2 (kind "convlstm") or TGANv2-ODE ("ode"); its outputs."""
    from models.ode_gen import GeneratorODE
    from models.tganv2_dis import DisMultiResNet
    from models.tganv2_gen import Generator_CLSTM

    torch.manual_seed(seed)
    gen = (Generator_CLSTM if kind == "convlstm" else GeneratorODE)(**spec["gen"])
    dis = DisMultiResNet(**spec["dis"])
    perturb = torch.Generator().manual_seed(seed + 1)
    _perturb(gen, perturb)
    _perturb(dis, perturb)
    _save_like_the_scripts(ckpt, gen, dis, adam=True)
    z = torch.rand((spec["batch"], gen.fc.in_features)) * 2 - 1  # the scripts' draw
    out = {"z": z}
    with torch.no_grad():
        gen.eval()
        out["dense_eval"] = gen(z, test=True)
        gen.train()
        out["dense_train"] = gen(copy.deepcopy(z), test=True)
        gen.load_state_dict(torch.load(ckpt, weights_only=True)["model_state_dict"][0])  # undo the BN updates
        randint, queue, original = _pinned_numpy(OFFSETS)
        np.random.randint = randint
        try:
            levels = gen(z)
        finally:
            np.random.randint = original
        assert not queue, f"the port drew {len(OFFSETS) - len(queue)} offsets, {len(OFFSETS)} pinned"
        for i, video in enumerate(levels, 1):
            out[f"level{i}"] = video.transpose(1, 2)  # (N, T, C, H, W) -> (N, C, T, H, W)
        scores = dis(list(levels))  # DisResNet transposes (N, T, 3, H, W) itself
        sizes = [len(v) for v in levels]
        for i, s in enumerate(scores.split(sizes), 1):
            out[f"dis{i}"] = s[:, 0]
        for name, buf in gen.state_dict().items():
            if name.endswith(("running_mean", "running_var")):
                out[f"bn/{name}"] = buf.clone()
    return out


def kinema_tganv2(ckpt_dir: Path, theirs: dict, dtype: torch.dtype = torch.float32) -> tuple[list[tuple], torch.nn.Module]:
    """kinema's rows for the converted port checkpoint (``dtype`` float64: the exact-maths reference)."""
    import kinema.models.tganv2.model as tganv2
    from kinema.models.tgan.convert import tganv2_generator_names
    from kinema.registry import load_model

    model = load_model(ckpt_dir)[0].to(dtype)
    z = theirs["z"].to(dtype)
    rows = []
    with torch.no_grad():
        # PyTorch's CPU BatchNorm2d gathers train-mode statistics of channels-last input in float32 with a
        # one-pass formula (see kinema_tgan); each mode also in the NCHW layout (channels_last = false).
        # Eval first: the train-mode forwards update the running statistics.
        model.eval()
        for mode in ("eval", "train"):
            model.train(mode == "train")
            rows.append(compare(f"dense ({mode} BN)", model.sample(z), theirs[f"dense_{mode}"]))
            model.generator.cfg.channels_last = False
            rows.append(compare(f"dense ({mode} BN, channels_last=false)", model.sample(z), theirs[f"dense_{mode}"]))
            model.generator.cfg.channels_last = True
        model = load_model(ckpt_dir)[0].to(dtype)  # fresh running statistics, as the official side
        model.train()
        stand_in, queue = _pinned_kinema(OFFSETS)
        original, tganv2.frame_offsets = tganv2.frame_offsets, stand_in
        try:
            levels = model.generate_levels(z)
        finally:
            tganv2.frame_offsets = original
        assert not queue
        rows += [compare(f"level{i} (sparse, train BN)", v, theirs[f"level{i}"]) for i, v in enumerate(levels, 1)]
        state = model.state_dict()
        names = tganv2_generator_names(k[3:] for k in theirs if k.startswith("bn/"))
        bn = [compare(k, state[names[k[3:]]], v) for k, v in theirs.items() if k.startswith("bn/")]
        rows.append((f"bn running stats after 1 step ({len(bn)})", max(r[1] for r in bn), max(r[2] for r in bn), (len(bn),)))
        model.eval()
        scores = model.discriminate([theirs[f"level{i}"].to(dtype) for i in range(1, 5)])
        rows += [compare(f"dis level{i}", s, theirs[f"dis{i}"]) for i, s in enumerate(scores, 1)]
    return rows, model


def official_tgan(kind: str, spec: dict, seed: int, ckpt: Path) -> dict[str, torch.Tensor]:
    """The port's 64x64 TGAN-ODE without / with the initial MLP (kind "ode": linear=False, ``tgan SVC ODE
    UCF101.py``; "ode_lin": linear=True, the 'lin' scripts) or TGAN (kind "conv1d": models/tgan.py, ``tgan SVC
    UCF101.py``), and its discriminator."""
    import models.tgan as tgan
    import models.tgan_ode as tgan_ode

    torch.manual_seed(seed)
    if kind.startswith("ode"):
        gen = tgan_ode.VideoGenerator(linear=kind == "ode_lin")
    else:
        gen = tgan.VideoGenerator()
    dis = tgan.VideoDiscriminator()
    perturb = torch.Generator().manual_seed(seed + 1)
    _perturb(gen, perturb)
    _perturb(dis, perturb)
    _save_like_the_scripts(ckpt, gen, dis, adam=False)
    z = torch.rand((spec["batch"], 100)) * 2 - 1
    out = {"z": z}
    with torch.no_grad():
        gen.eval()
        dis.eval()
        out["video_eval"] = gen(z)
        out["dis_eval"] = dis(out["video_eval"]).flatten()
        gen.train()
        dis.train()
        out["video_train"] = gen(z)
        out["dis_train"] = dis(out["video_eval"]).flatten()
    return out


def kinema_tgan(ckpt_dir: Path, theirs: dict) -> list[tuple]:
    from kinema.registry import load_model

    rows = []
    with torch.no_grad():
        for mode in ("eval", "train"):
            model, _, _ = load_model(ckpt_dir)
            model.train(mode == "train")
            rows.append(compare(f"64x64 video ({mode} BN)", model.sample(theirs["z"]), theirs[f"video_{mode}"]))
            rows.append(compare(f"64x64 dis ({mode} BN)", model.discriminate([theirs["video_eval"]])[0],
                                theirs[f"dis_{mode}"]))
        # PyTorch's CPU BatchNorm2d gathers train-mode statistics of channels-last input in float32 with a
        # one-pass formula; the reference init (U(-0.01, 0.01)) gives small-spread, offset activations, where it
        # loses ~3 digits. The NCHW layout (the reference's) keeps them: the same model with channels_last off.
        model, _, _ = load_model(ckpt_dir)
        model.generator.image.cfg.channels_last = False
        model.train()
        rows.append(compare("64x64 video (train BN, channels_last=false)", model.sample(theirs["z"]),
                            theirs["video_train"]))
    return rows


TRAIN_STEPS = 3  # iterations of the training loop compared


def official_tganv2_training(official: Path, spec: dict, seed: int, ckpt: Path, steps: int = TRAIN_STEPS
                             ) -> dict[str, torch.Tensor]:
    """``steps`` iterations of the port's loop (``train_speed.build_port_tganv2``: the loop body of ``tganv2
    UCF101.py`` -- D on a no-grad fake plus lambda 0.5 on the summed R1, then G on a fresh draw; Adam 1e-4
    (0, 0.9), LambdaLR) in float64, from its own initialisation under ``torch.manual_seed(seed)`` with every
    bias and BN value perturbed (saved to ``ckpt`` as the scripts save). Per iteration ``i`` it records the
    real batch ``batch{i}`` (B, C, T, H, W), the two noise draws ``z_d{i}`` / ``z_g{i}`` (the script's
    ``torch.rand(B, z) * 2 - 1``) and the pinned sub-sampling ``offsets{i}`` (reals, D's fake, G's fake; three
    each); after the last, the generator's and discriminator's state (``final/gen/...``, ``final/dis/...``)."""
    import train_speed

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    randint = np.random.randint
    try:
        b = spec["batch"]
        frames, side = spec["gen"]["n_frames"], spec["gen"]["zt_dim"] * 2 ** (len(spec["gen"]["upchannels"]) + 3)
        gen, dis, step, _ = train_speed.build_port_tganv2(official, b, torch.device("cpu"),
                                                          real=torch.zeros(b, frames, 3, side, side),
                                                          gen_kwargs=spec["gen"], dis_kwargs=spec["dis"], seed=seed)
        perturb = torch.Generator().manual_seed(seed + 1)
        _perturb(gen, perturb)
        _perturb(dis, perturb)
        with torch.no_grad():  # float32-representable: kinema's converted checkpoint stores float32
            for tensor in [*gen.state_dict().values(), *dis.state_dict().values()]:
                if tensor.is_floating_point():
                    tensor.copy_(tensor.float())
        _save_like_the_scripts(ckpt, gen, dis, adam=True)
        data = torch.Generator().manual_seed(seed + 2)
        out = {}
        for i in range(steps):
            # (N, T, C, H, W), the script's layout; float32-representable, stored as float32
            x = (torch.rand((b, frames, 3, side, side), generator=data, dtype=torch.float32) * 2 - 1).double()
            offsets = torch.randint(2, (9,), generator=data)
            torch.manual_seed(1000 + i)  # the two draws the loop body makes, replayed
            out[f"z_d{i}"], out[f"z_g{i}"] = (torch.rand((b, gen.fc.in_features)) * 2 - 1 for _ in range(2))
            torch.manual_seed(1000 + i)
            pinned, queue, _ = _pinned_numpy(offsets.tolist())
            np.random.randint = pinned
            step(x)
            assert not queue, f"the port drew {9 - len(queue)} offsets in one iteration, 9 pinned"
            np.random.randint = randint
            out[f"batch{i}"], out[f"offsets{i}"] = x.transpose(1, 2).float().contiguous(), offsets
        out.update({f"final/gen/{k}": v.clone() for k, v in gen.state_dict().items()})
        out.update({f"final/dis/{k}": v.clone() for k, v in dis.state_dict().items()})
        return out
    finally:
        np.random.randint = randint
        torch.set_default_dtype(default)


def kinema_tganv2_training(ckpt_dir: Path, theirs: dict[str, torch.Tensor], steps: int = TRAIN_STEPS,
                           update_order: str = "discriminator_first") -> list[tuple]:
    """kinema's training step (``GANObjective``, ``update_order = "discriminator_first"``, the port's loss and
    Adam; float64) from the converted initial checkpoint on the port's batches, noise and offsets; one row
    per generator and discriminator tensor (weights and BN statistics) after the last iteration. The
    learning rate follows the port's ``LambdaLR(1 - e / 100000)`` (kinema's trainer would keep it constant:
    a 2e-5 relative difference by the third step, kept out of the comparison). ``update_order =
    "generator_first"`` (kinema's default, the official updater) is the tests' negative control."""
    import kinema.models.tganv2.model as tganv2
    from kinema.data import Batch
    from kinema.models.tgan.convert import _tganv2_state
    from kinema.objectives.base import StepContext
    from kinema.objectives.gan import GANConfig, GANObjective
    from kinema.registry import load_model

    model = load_model(ckpt_dir)[0].double().train()
    objective = GANObjective(model, GANConfig(loss="softplus", gp_weight=0.5, gp_reduction="sum",
                                              update_order=update_order))
    opts = {name: torch.optim.Adam(params, lr=1e-4, betas=(0.0, 0.9))
            for name, params in objective.parameter_groups().items()}
    variant = "tganv2_convlstm"
    original = tganv2.frame_offsets
    try:
        for i in range(steps):
            draws = [theirs[f"z_d{i}"], theirs[f"z_g{i}"]]
            model.sample_noise = lambda n, generator=None, device=None: draws.pop(0)
            real, fake_d, fake_g = theirs[f"offsets{i}"].view(3, 3).tolist()
            # discriminator first: D's fake, the reals, G's fake; generator first: G's fake (also D's), the reals
            order = fake_d + real + fake_g if update_order == "discriminator_first" else fake_g + real
            tganv2.frame_offsets, queue = _pinned_kinema(order)
            for opt in opts.values():
                opt.param_groups[0]["lr"] = 1e-4 * (1 - i / 100000)
            x = theirs[f"batch{i}"].double()
            objective.train_step([Batch(x)], StepContext.for_batch(opts, torch.Generator().manual_seed(i), len(x)))
            assert not queue, "kinema drew fewer offsets than the port"
            assert not draws or update_order == "generator_first", "kinema drew one noise batch, the port two"
        gen = {k[len("final/gen/"):]: v for k, v in theirs.items() if k.startswith("final/gen/")}
        dis = {k[len("final/dis/"):]: v for k, v in theirs.items() if k.startswith("final/dis/")}
        state = model.state_dict()
        rows = [compare(k, state[k], v) for k, v in _tganv2_state(gen, dis, variant, Path("fixture")).items()
                if v.is_floating_point()]
    finally:
        tganv2.frame_offsets = original
        model.__dict__.pop("sample_noise", None)
    return rows


def run(official: Path, config: str, work: Path, fixture: Path | None, seed: int) -> list[tuple]:
    from kinema import api

    torch.set_num_threads(1)
    sys.path.insert(0, str(official))
    commit = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True)
    print(f"official: Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation "
          f"{commit.stdout.strip() or '(not a git checkout; fetched at 0717f48)'}; offsets {OFFSETS}")
    rows = []
    spec = CONFIGS[config]
    for kind in ("convlstm", "ode"):
        ckpt = work / f"tganv2_{kind}.ckpt"
        theirs = official_tganv2(official, kind, spec["tganv2"], seed, ckpt)
        out = api.convert("tgan_ode_port", ckpt, work / f"converted_{kind}")
        ours, _ = kinema_tganv2(out, theirs)
        rows += [(f"{'TGANv2' if kind == 'convlstm' else 'TGANv2-ODE'} {r[0]}", *r[1:]) for r in ours]
        if fixture is not None:
            fixture.mkdir(parents=True, exist_ok=True)
            (fixture / f"tganv2_{kind}.ckpt").write_bytes(ckpt.read_bytes())
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in theirs.items()}, fixture / f"tganv2_{kind}_outputs.safetensors")
    ckpt = work / "tganv2_train.ckpt"
    theirs = official_tganv2_training(official, spec["tganv2"], seed, ckpt)
    out = api.convert("tgan_ode_port", ckpt, work / "converted_train")
    trained = kinema_tganv2_training(out, theirs)
    worst = max(trained, key=lambda r: r[2])
    rows.append((f"TGANv2 {TRAIN_STEPS} training iterations: {len(trained)} tensors, worst {worst[0]}", *worst[1:]))
    if fixture is not None:
        from safetensors.torch import save_file

        (fixture / "tganv2_train.ckpt").write_bytes(ckpt.read_bytes())
        save_file({k: v.contiguous() for k, v in theirs.items()}, fixture / "tganv2_train_outputs.safetensors")
    names = {"ode": "TGAN-ODE", "ode_lin": "TGAN-ODE lin", "conv1d": "TGAN"}
    for kind in names if "tgan" in spec else ():
        ckpt = work / f"tgan_{kind}.ckpt"
        theirs = official_tgan(kind, spec["tgan"], seed, ckpt)
        out = api.convert("tgan_ode_port", ckpt, work / f"converted_tgan_{kind}")
        rows += [(f"{names[kind]} {r[0]}", *r[1:]) for r in kinema_tgan(out, theirs)]
    return rows


if __name__ == "__main__":
    sys.exit("run through benchmarks/parity.py --family tgan_ode")
