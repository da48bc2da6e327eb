"""``kinema convert tgan_ode_port state_normalN.ckpt OUT``: a checkpoint of the TGAN-ODE authors' PyTorch
code (github.com/Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation, 0717f48) -> a kinema
checkpoint folder.

Every training script of that repository saves (e.g. ``tganv2 UCF101.py``, ``tganv2_ode.py``,
``tgan SVC ODE lin UCF101.py``)::

    torch.save({'epoch': epoch, 'model_state_dict': [gen.state_dict(), dis.state_dict()],
                'optimizer_state_dict': [...], 'optimizer_schedule_dict': [...]},   # the last: TGANv2 only
               f'checkpoints/{path}/state_normal{epoch}.ckpt')

The file is read as data (:func:`kinema.foreign.load_foreign`, no class allowed: state dicts are tensors
in plain containers). Which network it holds is read from the generator's parameter names, every size
from their shapes:

- ``Generator_CLSTM`` (models/tganv2_gen.py; ``tganv2 UCF101.py``) -> ``tganv2``, ``temporal = "convlstm"``;
- ``GeneratorODE`` (models/ode_gen.py; ``tganv2_ode.py``) -> ``tganv2``, ``temporal = "ode"`` (Conv2d field
  + LeakyReLU 0.2, RK4 on ``linspace(0, 1, T)``: kinema's default time scale);
  both with ``DisMultiResNet`` (models/tganv2_dis.py) -> the multi-level discriminator;
- ``tgan_ode.VideoGenerator`` (``tgan SVC ODE UCF101.py``, ``linear=False``: ``model.temporal_init_mlp =
  false``; ``tgan SVC ODE lin UCF101.py``, ``linear=True``: the initial MLP) -> ``tgan``, ``temporal = "ode"``, and ``tgan.VideoGenerator`` (``tgan SVC UCF101.py``, TGAN's conv1d temporal generator) -> ``tgan``,
  ``temporal = "conv1d"``, both with ``tgan.VideoDiscriminator``.

Port behaviour the converted config keeps: BatchNorm eps 1e-5 (PyTorch's default; ``model.bn_eps``), no
ReLU before the discriminator's sum (``model.dis_final_relu = false``). Not representable, named and
refused: ``ODEFuncDeep``, higher-order
(``GeneratorNOODE``/``NOODEFunc``) and SDE generators, ``dim_hidden``. The port sub-samples frames with
stride 4 in training (levels see 16, 4, 1, 1 frames), which kinema's sparse training cannot express; the
converted config trains with the paper's stride 2 (inference and the discriminator are unaffected).
``--config``/``--set`` give frames (not stored in the file; the scripts use 16) and anything else; every
tensor is checked against the result. Card: docs/models/tgan_ode.md, "Load the authors' checkpoints".
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import torch

from kinema.errors import CheckpointError, ConfigError
from kinema.foreign import Converted, ConvertOptions, load_foreign

SCRIPT_FRAMES = 16  # n_frames of every script (and the hard-coded .view(-1, 16, 3, 64, 64) of models/tgan.py)
PORT_BN_EPS = 1e-5  # nn.BatchNorm2d's default: the port never sets it
UP_NAMES = {"bn1": "bn1", "convm1": "conv1", "bn2": "bn2", "convm2": "conv2", "sconv": "shortcut"}
UNSUPPORTED = (
    ("temp.ode_fn.conv.", "a higher-order ODE generator (GeneratorNOODE / NOODEFunc)"),
    ("dsdt_encoders.", "a higher-order ODE generator (VideoGeneratorNOODE / GeneratorNOODE)"),
    ("temp.ode_fn.drift_fn.", "an SDE generator (VideoGeneratorSDE)"),
    ("temp.ode_fn.fn.2.", "a deeper field (ODEFuncDeep, or GeneratorODE with dim_hidden): kinema's deeper "
                          "fields differ (docs/models/tgan_ode.md)"),
)


def _numbers(keys, pattern: str) -> list[int]:
    """The sorted integers that group 1 of ``pattern`` matches in ``keys``."""
    return sorted({int(m[1]) for k in keys if (m := re.fullmatch(pattern, k))})


def _variant(gen: dict, path: Path) -> str:
    for prefix, meaning in UNSUPPORTED:
        if any(k.startswith(prefix) for k in gen):
            raise CheckpointError(f"{path}: the generator has {prefix}* -- {meaning}, which tgan_ode_port does not "
                                  "convert (supported: Generator_CLSTM, GeneratorODE, tgan_ode.VideoGenerator(linear=True))")
    if "temp.cell.w_x.weight" in gen:
        return "tganv2_convlstm"
    if "temp.ode_fn.fn.0.weight" in gen and gen["temp.ode_fn.fn.0.weight"].dim() == 4:
        return "tganv2_ode"
    if "slow.0.weight" in gen and "fast.0.weight" in gen:
        if "temp.model.0.weight" in gen:
            return "tgan_conv1d"
        if "temp.ode_fn.fn.0.weight" not in gen:
            raise CheckpointError(f"{path}: a 64x64 TGAN generator whose temporal generator is neither the ODE "
                                  "(temp.ode_fn.fn.0.weight) nor TGAN's conv1d (temp.model.0.weight)")
        return "tgan_ode"
    raise CheckpointError(f"{path}: the generator is none of the TGAN-ODE port's networks (expected "
                          f"temp.cell.w_x.weight, temp.ode_fn.fn.0.weight or slow/fast; found "
                          f"{', '.join(list(gen)[:5])})")


def _read(src: Path) -> tuple[dict, dict, dict]:
    ckpt = load_foreign(src)
    states = ckpt.get("model_state_dict") if isinstance(ckpt, dict) else None
    if not (isinstance(states, (list, tuple)) and len(states) == 2 and all(isinstance(s, dict) for s in states)):
        found = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{src} is not a checkpoint of the TGAN-ODE authors' scripts: expected torch.save("
                              f"{{'epoch', 'model_state_dict': [gen.state_dict(), dis.state_dict()], ...}}), found {found}")
    known = {"epoch", "model_state_dict", "optimizer_state_dict", "optimizer_schedule_dict"}
    unknown = sorted(set(ckpt) - known)
    if unknown:
        raise CheckpointError(f"{src}: unknown entry {unknown[0]!r} (the scripts save {', '.join(sorted(known))})")
    return ckpt, dict(states[0]), dict(states[1])


# --------------------------------------------------------------------------- TGANv2 / TGANv2-ODE


def _tganv2_config(gen: dict, dis: dict, variant: str, base) -> object:
    from kinema.models.tganv2.model import TGANv2Config

    fc = gen["fc.weight"].shape
    c0 = (gen["temp.cell.w_x.weight"] if variant == "tganv2_convlstm" else gen["temp.ode_fn.fn.0.weight"]).shape[1]
    ups = _numbers(gen, r"build\.Up(\d+)\.convm2\.weight")
    widths = [c0] + [gen[f"build.Up{i}.convm2.weight"].shape[0] for i in ups]
    widths += [gen[f"sup{i}.convm2.weight"].shape[0] for i in (1, 2, 3)]
    side = math.isqrt(fc[0] // c0)
    levels = len(_numbers(dis, r"res\.(\d+)\..*"))
    dis_widths = [dis["res.0.convs.OptDisc.c1.weight"].shape[0]]
    dis_widths += [dis[f"res.0.convs.Down{i}.c2.weight"].shape[0]
                   for i in _numbers(dis, r"res\.0\.convs\.Down(\d+)\.c2\.weight")]
    inferred = {"z_dim": fc[1], "base_size": side, "resolution": side * 2 ** (len(widths) - 1), "gen_channels": widths,
                "levels": levels, "dis_channels": dis_widths, "bn_eps": PORT_BN_EPS, "dis_final_relu": False,
                "temporal": "convlstm" if variant == "tganv2_convlstm" else "ode", "batch_subsample": 1,
                "subsample_stride": 2, "subsample_offset": "batch", "convlstm_forget_bias": 0.0}
    if variant == "tganv2_ode":
        inferred.update(temporal_order=1, temporal_solver="rk4", temporal_activation="leaky_relu")
    if base is None:
        return TGANv2Config(frames=SCRIPT_FRAMES, **inferred)
    if base.name != "tganv2":
        raise ConfigError(f"--config gives a {base.name!r} model; this checkpoint holds the port's TGANv2 ({variant}): "
                          "give a 'tganv2' config or none (the file's sizes are used)")
    for key in ("bn_eps", "dis_final_relu", "temporal"):
        if getattr(base, key) != inferred[key]:
            raise ConfigError(f"model.{key} = {getattr(base, key)!r} does not describe the port's network "
                              f"({inferred[key]!r}); remove it (without --config the file's own sizes are used)")
    return base


def tganv2_generator_names(keys, path: Path = Path("?")) -> dict[str, str]:
    """The port's Generator_CLSTM / GeneratorODE names (all but ``temp.*``) -> kinema's: ``fc`` -> ``fc``;
    ``build.Up1..n`` then ``sup1..3`` (Up: bn1, convm1, bn2, convm2, sconv) -> ``blocks.0..n+2`` (bn1, conv1,
    bn2, conv2, shortcut); ``buildr``, ``sup1r..sup3r`` -> ``renders.0..3`` (models/tganv2_gen.py)."""
    keys = list(keys)
    ups = _numbers(keys, r"build\.Up(\d+)\..*")
    blocks = {f"build.Up{i}": n for n, i in enumerate(ups)}
    blocks.update({f"sup{i}": len(ups) + i - 1 for i in (1, 2, 3)})
    renders = {"buildr": 0, "sup1r": 1, "sup2r": 2, "sup3r": 3}
    names = {}
    for key in keys:
        if key.startswith("fc."):
            names[key] = f"generator.{key}"
        elif key.startswith("temp."):
            continue
        elif (m := re.fullmatch(r"(build\.Up\d+|sup\d)\.(\w+)\.(\w+)", key)) and m[1] in blocks and m[2] in UP_NAMES:
            names[key] = f"generator.blocks.{blocks[m[1]]}.{UP_NAMES[m[2]]}.{m[3]}"
        elif (m := re.fullmatch(r"(buildr|sup\dr)\.(bn|conv)\.(\w+)", key)) and m[1] in renders:
            names[key] = f"generator.renders.{renders[m[1]]}.{m[2]}.{m[3]}"
        else:
            raise CheckpointError(f"{path}: generator entry {key!r} is not part of the port's Generator_CLSTM")
    return names


def _tganv2_state(gen: dict, dis: dict, variant: str, path: Path) -> dict[str, torch.Tensor]:
    state = {kinema: gen[port] for port, kinema in tganv2_generator_names(gen, path).items()}
    if variant == "tganv2_convlstm":
        state["generator.temporal.rnn.cell.gates.weight"] = torch.cat(
            [gen["temp.cell.w_x.weight"], gen["temp.cell.w_h.weight"]], dim=1)  # gates i, f, o, c in both
        state["generator.temporal.rnn.cell.gates.bias"] = gen["temp.cell.w_x.bias"]
        extra = set(k for k in gen if k.startswith("temp.")) - {"temp.cell.w_x.weight", "temp.cell.w_x.bias",
                                                                  "temp.cell.w_h.weight"}
    else:
        state["generator.temporal.field.net.0.weight"] = gen["temp.ode_fn.fn.0.weight"]
        state["generator.temporal.field.net.0.bias"] = gen["temp.ode_fn.fn.0.bias"]
        extra = set(k for k in gen if k.startswith("temp.")) - {"temp.ode_fn.fn.0.weight", "temp.ode_fn.fn.0.bias"}
    if extra:
        raise CheckpointError(f"{path}: generator entry {sorted(extra)[0]!r} is not part of the port's {variant}")
    convs = {"c1": "conv1", "c2": "conv2", "c_sc": "shortcut", "s_sc": "shortcut"}
    for key, value in dis.items():
        if m := re.fullmatch(r"res\.(\d+)\.convs\.(OptDisc|Down(\d+))\.(c1|c2|c_sc|s_sc)\.(weight|bias)", key):
            block = 0 if m[2] == "OptDisc" else int(m[3])
            state[f"discriminator.levels.{m[1]}.blocks.{block}.{convs[m[4]]}.{m[5]}"] = value
        elif m := re.fullmatch(r"res\.(\d+)\.fc\.(weight|bias)", key):
            state[f"discriminator.levels.{m[1]}.linear.{m[2]}"] = value
        else:
            raise CheckpointError(f"{path}: discriminator entry {key!r} is not part of the port's DisMultiResNet")
    return state


# --------------------------------------------------------------------------- 64x64 TGAN-ODE


def _tgan_config(gen: dict, dis: dict, variant: str, base) -> object:
    from kinema.models.tgan.model import TGANConfig

    half = gen["slow.0.weight"].shape[0] // 16
    deconvs = [i for i in _numbers(gen, r"model\.(\d+)\.weight") if gen[f"model.{i}.weight"].dim() == 4]
    widths = [2 * half] + [gen[f"model.{i}.weight"].shape[1] for i in deconvs[:-1]]
    convs = [i for i in _numbers(dis, r"model3d\.(\d+)\.weight") if dis[f"model3d.{i}.weight"].dim() == 5]
    inferred = {"z_dim": gen["slow.0.weight"].shape[1], "resolution": 4 * 2 ** (len(widths) - 1),
                "gen_channels": widths, "dis_channels": [dis[f"model3d.{i}.weight"].shape[0] for i in convs],
                "dis_norm": "batch"}
    if variant == "tgan_ode" and "temp.linear.0.weight" in gen:  # linear=True: the 'lin' scripts
        inferred.update(temporal="ode", temporal_order=1, temporal_solver="rk4", temporal_layers=1,
                        temporal_hidden=gen["temp.linear.0.weight"].shape[0])
    elif variant == "tgan_ode":  # linear=False (tgan SVC ODE UCF101.py): x(0) = z
        inferred.update(temporal="ode", temporal_order=1, temporal_solver="rk4", temporal_layers=1,
                        temporal_init_mlp=False)
    else:
        inferred.update(temporal="conv1d", temporal_hidden=gen["temp.model.0.weight"].shape[1])
    if base is None:
        return TGANConfig(frames=SCRIPT_FRAMES, **inferred)
    if base.name != "tgan":
        raise ConfigError(f"--config gives a {base.name!r} model; this checkpoint holds the port's 64x64 TGAN-ODE: "
                          "give a 'tgan' config or none (the file's sizes are used)")
    return base


def _tgan_state(gen: dict, dis: dict, path: Path) -> dict[str, torch.Tensor]:
    """models/tgan.py + tgan_ode.py -> kinema's tgan: ``slow`` / ``fast`` -> ``image.content`` / ``motion``,
    ``model`` -> ``image.deconvs``; the ODE's ``temp.linear`` -> ``temporal.init``, ``temp.ode_fn.fn.0`` ->
    ``temporal.field.net.0``; TGAN's conv1d ``temp.model.0`` (ConvTranspose1d, kernel 1, on a length-1
    sequence: a Linear) -> ``temporal.fc.0``, ``temp.model.1`` -> ``fc.1`` (BN), ``temp.model.k`` (k >= 3) ->
    ``temporal.deconvs.k-3``; D ``model3d`` -> ``convs``, ``conv2d`` -> ``score``."""
    state: dict[str, torch.Tensor] = {}
    for key, value in gen.items():
        head, _, rest = key.partition(".")
        if head == "slow":
            state[f"generator.image.content.{rest}"] = value
        elif head == "fast":
            state[f"generator.image.motion.{rest}"] = value
        elif head == "model":
            state[f"generator.image.deconvs.{rest}"] = value
        elif key.startswith("temp.linear."):
            state[f"generator.temporal.init.{key[len('temp.linear.'):]}"] = value
        elif key.startswith("temp.ode_fn.fn.0."):
            state[f"generator.temporal.field.net.0.{key.rsplit('.', 1)[1]}"] = value
        elif key == "temp.model.0.weight":  # (in, out, 1) -> Linear (out, in)
            state["generator.temporal.fc.0.weight"] = value[:, :, 0].t().contiguous()
        elif m := re.fullmatch(r"temp\.model\.(\d+)\.(\w+)", key):
            index = int(m[1])
            state[f"generator.temporal.{f'fc.{index}' if index < 3 else f'deconvs.{index - 3}'}.{m[2]}"] = value
        else:
            raise CheckpointError(f"{path}: generator entry {key!r} is not part of the port's tgan_ode.VideoGenerator")
    for key, value in dis.items():
        if key.startswith("model3d."):
            state[f"discriminator.convs.{key[len('model3d.'):]}"] = value
        elif key == "conv2d.weight":  # Conv2d(512, 1, 4) on the (512, 4, 4) map = Conv3d over (1, 4, 4)
            state["discriminator.score.weight"] = value.unsqueeze(2)
        elif key == "conv2d.bias":
            state["discriminator.score.bias"] = value
        else:
            raise CheckpointError(f"{path}: discriminator entry {key!r} is not part of the port's VideoDiscriminator")
    return state


def convert_port(src: Path, options: ConvertOptions) -> Converted:
    """A TGAN-ODE port checkpoint -> :class:`Converted` (``tganv2`` or ``tgan`` config, read from the file)."""
    src = Path(src)
    ckpt, gen, dis = _read(src)
    variant = _variant(gen, src)
    try:
        if variant in ("tgan_ode", "tgan_conv1d"):
            model, state = _tgan_config(gen, dis, variant, options.model), _tgan_state(gen, dis, src)
        else:
            model, state = _tganv2_config(gen, dis, variant, options.model), _tganv2_state(gen, dis, variant, src)
    except KeyError as exc:
        raise CheckpointError(f"{src}: the port's {variant} has no {exc.args[0]!r}: a damaged or other network") from None
    model.validate()  # names and shapes are checked against the built model by kinema.registry.convert
    provenance = {"format": "torch.save of the TGAN-ODE authors' scripts (Zasder3/Latent-Neural-Differential-"
                            "Equations-for-Video-Generation)", "network": variant, "epoch": ckpt.get("epoch"),
                  "config_from": "--config" if options.model is not None else
                  f"the file's tensor shapes; frames = {SCRIPT_FRAMES} (the scripts')",
                  "model": dataclasses.asdict(model)}
    if variant.startswith("tganv2"):
        provenance["training_subsampling"] = ("the port sub-samples frames with stride 4 (levels 16, 4, 1, 1 frames); "
                                              "the converted model trains with model.subsample_stride = "
                                              f"{model.subsample_stride}")
    return Converted(model=model, state={k: v.detach().clone() for k, v in state.items()}, provenance=provenance)
