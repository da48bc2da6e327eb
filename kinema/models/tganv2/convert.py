"""``kinema convert tganv2_chainer generator_iter_N.npz OUT --config tganv2_ucf101_192``: the official
Chainer TGANv2 (github.com/pfnet-research/tgan2) -> a kinema checkpoint folder.

The official training saves the generator every ``snapshot_interval`` iterations with
``extensions.snapshot_object(gen, 'generator_iter_{.updater.iteration}.npz')`` (train.py:152-154), i.e.
``chainer.serializers.save_npz``: one array per parameter and persistent value, named by its link path
(``fc/W``, ``decoder0/w_xifoc/W``, ``block4/b1/avg_mean``, ``c6/b`` ...). The same call for the
discriminator is commented out there (train.py:155-158, "to save the space"); a run that enabled it wrote
``discriminator_iter_N.npz`` beside the generator, and the converter takes it from there:

- SRC ``generator_iter_N.npz``: the generator; ``discriminator_iter_N.npz`` in the same folder, if there,
  is the multi-level discriminator (``level0/block1/c1/W`` ...). Without it the discriminator is
  initialised as ``model.init`` says (seed 0) and ``converted.json`` says so -- sampling needs only the
  generator; fine-tuning then starts the discriminator afresh, as the official code would have to.
- SRC a folder (the run's ``out``): its ``generator_iter_N.npz`` with the largest N, and that N's
  discriminator if there.

An ``.npz`` has no hyper-parameters, so the model config comes from ``--config`` (+ ``--set``); every array
is checked against it and the first that does not fit is named with both shapes (the error also says
which sizes the file itself implies). Arrays are read with ``allow_pickle=False``: nothing in the file is
ever unpickled or run. Card: docs/models/tganv2.md, "Load the authors' checkpoints".
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from kinema.errors import CheckpointError, ConfigError
from kinema.foreign import Converted, ConvertOptions

OFFICIAL_BLOCKS = 6  # MultiTGANCLSTMGenerator: block1..block6 (multi_tgan_clstm_generator.py:51-70)
OFFICIAL_LEVELS = 4  # renders b3/c3 .. b6/c6 after block3..block6
CHAINER_BN_EPS = 2e-5  # chainer.links.BatchNormalization's default; tgan2 never changes it
BN_NAMES = {"gamma": "weight", "beta": "bias", "avg_mean": "running_mean", "avg_var": "running_var",
            "N": "num_batches_tracked"}
PARAM_NAMES = {"W": "weight", "b": "bias"}
# Arrays of options of the official classes that kinema's TGANv2 does not have: named, never dropped.
UNSUPPORTED = (
    (re.compile(r"^decoder[1-9]\d*/"), "a second ConvLSTM layer (n_layers > 1); kinema's TGANv2 has one"),
    (re.compile(r"/peep_c_[ifo]$"), "ConvLSTM peephole weights (peephole=True); kinema's ConvLSTM has none"),
    (re.compile(r"/(gammas|betas)(/|$)"), "class-conditional BatchNorm (n_classes > 0, CTGAN): not supported"),
    (re.compile(r"(^|/)l_c/"), "the class embedding of a conditional discriminator (n_classes > 0): not supported"),
)
SNAPSHOT = re.compile(r"^generator_iter_(\d+)\.npz$")


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of a Chainer ``save_npz`` file, read as data (``allow_pickle=False``)."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not an .npz archive (truncated, damaged, or another format); expected "
                              f"the {what} .npz that chainer.serializers.save_npz writes")
    try:
        with np.load(path, allow_pickle=False) as npz:
            others = [name for name in npz.zip.namelist() if not name.endswith(".npy")]
            if others:
                raise CheckpointError(f"{path} is a zip archive but not a Chainer .npz: it holds {others[0]!r} "
                                      f"(a torch.save file?); expected the {what} .npz of pfnet-research/tgan2")
            arrays = {}
            for name in npz.files:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise CheckpointError(f"{path}: {name!r} is an object array (a pickle); Chainer's save_npz "
                                          "writes numeric arrays only, and kinema never unpickles one") from None
            return arrays
    except CheckpointError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"{path} is truncated or damaged ({type(exc).__name__}: {exc})") from None


def implied_config(arrays: dict[str, np.ndarray]) -> str:
    """The generator sizes the file implies, as ``--set`` arguments (for error messages)."""
    try:
        fc = arrays["fc/W"].shape
        c0 = arrays["decoder0/w_xifoc/W"].shape[1]
        widths = [c0] + [int(arrays[f"block{k}/c2/W"].shape[0]) for k in range(1, OFFICIAL_BLOCKS + 1)]
        side = math.isqrt(fc[0] // c0)
        return (f"--set model.z_dim={fc[1]} --set model.base_size={side} --set model.resolution="
                f"{side * 2 ** OFFICIAL_BLOCKS} --set 'model.gen_channels={widths}'")
    except (KeyError, IndexError, ZeroDivisionError):
        return "(sizes not readable)"


def _refuse_unsupported(name: str, path: Path) -> None:
    for pattern, meaning in UNSUPPORTED:
        if pattern.search(name):
            raise CheckpointError(f"{path}: array {name!r} belongs to {meaning}")


def _param(name: str, prefix: str, leaf: str) -> str:
    if leaf in BN_NAMES:
        return f"{prefix}.{BN_NAMES[leaf]}"
    if leaf in PARAM_NAMES:
        return f"{prefix}.{PARAM_NAMES[leaf]}"
    raise CheckpointError(f"array {name!r}: {leaf!r} is neither a parameter (W, b) nor a BatchNorm value "
                          f"({', '.join(BN_NAMES)})")


GEN_BLOCK_NAMES = {"b1": "bn1", "c1": "conv1", "b2": "bn2", "c2": "conv2", "c_sc": "shortcut"}


def generator_key(name: str, path: Path) -> str | None:
    """kinema's name for the official generator array ``name`` (``None``: a ConvLSTM half, joined later).

    ``blockK`` (GenBlock: b1, c1, b2, c2, c_sc) -> ``blocks.K-1`` (bn1, conv1, bn2, conv2, shortcut);
    ``bK``/``cK`` (K = 3..6, render of level K-2) -> ``renders.K-3`` (bn, conv).
    """
    _refuse_unsupported(name, path)
    parts = name.split("/")
    if parts[0] == "fc" and len(parts) == 2:
        return _param(name, "generator.fc", parts[1])
    if parts[0] == "decoder0" and len(parts) == 3 and parts[1] in ("w_xifoc", "w_hifoc"):
        return None
    if (m := re.fullmatch(r"block(\d)", parts[0])) and len(parts) == 3 and parts[1] in GEN_BLOCK_NAMES:
        index = int(m[1]) - 1
        if not 0 <= index < OFFICIAL_BLOCKS:
            raise CheckpointError(f"{path}: array {name!r}: the official generator has block1..block6")
        return _param(name, f"generator.blocks.{index}.{GEN_BLOCK_NAMES[parts[1]]}", parts[2])
    if (m := re.fullmatch(r"([bc])(\d)", parts[0])) and len(parts) == 2 and 3 <= int(m[2]) <= 6:
        return _param(name, f"generator.renders.{int(m[2]) - 3}.{'bn' if m[1] == 'b' else 'conv'}", parts[1])
    raise CheckpointError(f"{path}: array {name!r} is not part of the official MultiTGANCLSTMGenerator "
                          "(fc, decoder0, block1..6, b3..6, c3..6)")


def generator_state(arrays: dict[str, np.ndarray], path: Path) -> dict[str, torch.Tensor]:
    """Official ``MultiTGANCLSTMGenerator`` arrays -> kinema ``generator.*`` tensors (:func:`generator_key`).

    ``decoder0`` (ConvLSTM, conv_lstm.py:13-14): ``w_xifoc`` over x (with bias) and ``w_hifoc`` over h (no
    bias), gates in the order i, f, o, c (conv_lstm.py:47-51) -- kinema's one convolution over
    ``concat(x, h)`` has the same order, so its weight is the two concatenated on the input axis.
    """
    state: dict[str, torch.Tensor] = {}
    for name, array in arrays.items():
        key = generator_key(name, path)
        if key is not None:
            state[key] = torch.from_numpy(np.array(array))
    try:
        w_x, w_h = arrays["decoder0/w_xifoc/W"], arrays["decoder0/w_hifoc/W"]
        bias = arrays["decoder0/w_xifoc/b"]
    except KeyError as exc:
        raise CheckpointError(f"{path}: the ConvLSTM array {exc.args[0]!r} is missing") from None
    if "decoder0/w_hifoc/b" in arrays:
        raise CheckpointError(f"{path}: decoder0/w_hifoc has a bias; the official ConvLSTM's w_hifoc has none "
                              "(conv_lstm.py:14, nobias=True): another ConvLSTM version")
    if w_x.shape[0] != w_h.shape[0] or w_x.shape[2:] != w_h.shape[2:]:
        raise CheckpointError(f"{path}: decoder0/w_xifoc/W {w_x.shape} and decoder0/w_hifoc/W {w_h.shape} do not "
                              "form one ConvLSTM")
    state["generator.temporal.rnn.cell.gates.weight"] = torch.from_numpy(np.concatenate([w_x, w_h], axis=1))
    state["generator.temporal.rnn.cell.gates.bias"] = torch.from_numpy(np.array(bias))
    return state


def discriminator_state(arrays: dict[str, np.ndarray], path: Path) -> dict[str, torch.Tensor]:
    """Official ``MultiResNetVideoDiscriminator`` arrays -> kinema ``discriminator.*`` tensors:
    ``level{i}/block{k}/{c1,c2,c_sc}`` -> ``levels.i.blocks.k-1.{conv1,conv2,shortcut}``,
    ``level{i}/l6`` -> ``levels.i.linear`` (resnet_video_discriminator.py:15-23)."""
    state: dict[str, torch.Tensor] = {}
    convs = {"c1": "conv1", "c2": "conv2", "c_sc": "shortcut"}
    for name, array in arrays.items():
        _refuse_unsupported(name, path)
        parts = name.split("/")
        tensor = torch.from_numpy(np.array(array))
        level = re.fullmatch(r"level(\d+)", parts[0])
        if level and len(parts) == 4 and (m := re.fullmatch(r"block(\d)", parts[1])) and parts[2] in convs \
                and parts[3] in PARAM_NAMES and 1 <= int(m[1]) <= 5:
            key = f"discriminator.levels.{level[1]}.blocks.{int(m[1]) - 1}.{convs[parts[2]]}"
            state[_param(name, key, parts[3])] = tensor
        elif level and len(parts) == 3 and parts[1] == "l6" and parts[2] in PARAM_NAMES:
            state[_param(name, f"discriminator.levels.{level[1]}.linear", parts[2])] = tensor
        else:
            raise CheckpointError(f"{path}: array {name!r} is not part of the official MultiResNetVideoDiscriminator "
                                  "(level<i>/block1..5/{c1,c2,c_sc}, level<i>/l6)")
    return state


def _sources(src: Path) -> tuple[Path, Path | None, int | None]:
    """(generator file, discriminator file or None, iteration or None) for SRC (a file or a run folder)."""
    if src.is_dir():
        found = sorted((int(m[1]), p) for p in src.iterdir() if (m := SNAPSHOT.match(p.name)))
        if not found:
            raise CheckpointError(f"{src} is a folder without generator_iter_<N>.npz files; give the generator "
                                  "snapshot the official train.py wrote (or the folder it wrote them to)")
        src = found[-1][1]
    if src.name.startswith("discriminator_iter_"):
        raise CheckpointError(f"{src} is a discriminator snapshot; give the generator's "
                              f"{src.name.replace('discriminator', 'generator', 1)}: the discriminator is taken "
                              "from beside it")
    m = SNAPSHOT.match(src.name)
    if m is None:
        return src, None, None
    dis = src.with_name(f"discriminator_iter_{m[1]}.npz")
    return src, (dis if dis.is_file() else None), int(m[1])


def _check_config(model, arrays: dict[str, np.ndarray], path: Path) -> None:
    if model is None:
        raise ConfigError(f"{path} is a Chainer .npz, which carries no hyper-parameters: give the model config with "
                          "--config (tganv2_ucf101_192 for the paper's network, conf/tgan-v41-ucf101.yml) and --set "
                          f"for what differs. The file's sizes: {implied_config(arrays)}")
    if getattr(model, "name", None) != "tganv2":
        raise ConfigError(f"--config gives a {getattr(model, 'name', '?')!r} model; tganv2_chainer converts into "
                          "a 'tganv2' config (e.g. --config tganv2_ucf101_192)")
    problems = []
    if model.temporal != "convlstm":
        problems.append(f"model.temporal = {model.temporal!r} (the official generator is a ConvLSTM: 'convlstm')")
    if len(model.gen_channels) - 1 != OFFICIAL_BLOCKS or model.levels != OFFICIAL_LEVELS:
        problems.append(f"{len(model.gen_channels) - 1} Up blocks and {model.levels} levels (official: "
                        f"{OFFICIAL_BLOCKS} blocks, the last {OFFICIAL_LEVELS} rendered)")
    if len(model.dis_channels) != 5:
        problems.append(f"model.dis_channels has {len(model.dis_channels)} widths (official: 5, block1..block5)")
    if model.bn_eps != CHAINER_BN_EPS:
        problems.append(f"model.bn_eps = {model.bn_eps} (Chainer's BatchNormalization: {CHAINER_BN_EPS})")
    if not model.dis_final_relu:
        problems.append("model.dis_final_relu = false (the official discriminator has a ReLU before its sum: true)")
    if not model.dis_pad_singleton:
        problems.append("model.dis_pad_singleton = false (the official DownSample pads length-1 axes: true)")
    if problems:
        raise ConfigError(f"the model config does not describe the official TGANv2 of {path.name}: "
                          + "; ".join(problems) + f". The file's sizes: {implied_config(arrays)}")


def convert_chainer(src: Path, options: ConvertOptions) -> Converted:
    """Official Chainer TGANv2 snapshot(s) -> :class:`Converted` (config from ``options.model``)."""
    from kinema.models.tganv2.model import TGANv2

    gen_path, dis_path, iteration = _sources(Path(src))
    arrays = read_npz(gen_path, "generator")
    if any(name.startswith("level0/") for name in arrays):
        raise CheckpointError(f"{gen_path} holds a discriminator (level0/...); give the generator snapshot "
                              "(generator_iter_<N>.npz): the discriminator is taken from beside it")
    if "fc/W" not in arrays or "decoder0/w_xifoc/W" not in arrays:
        raise CheckpointError(f"{gen_path} is not a TGANv2 MultiTGANCLSTMGenerator snapshot: expected fc/W and "
                              f"decoder0/w_xifoc/W, found {', '.join(sorted(arrays)[:6]) or 'no arrays'}")
    model = options.model
    _check_config(model, arrays, gen_path)
    state = generator_state(arrays, gen_path)
    if dis_path is not None:
        state.update(discriminator_state(read_npz(dis_path, "discriminator"), dis_path))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        expected = TGANv2(model).state_dict()
    for key, value in expected.items():
        if key.startswith("discriminator.") and dis_path is None:
            state[key] = value
    for key, value in state.items():
        if key not in expected:
            raise CheckpointError(f"{gen_path}: {key} (from the file) has no place in the configured model")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{dis_path if key.startswith('discriminator.') else gen_path}: {key} is {tuple(value.shape)} in "
                f"the file but {tuple(expected[key].shape)} in the configured model; the config does not describe "
                f"this checkpoint. The generator's sizes: {implied_config(arrays)}")
        state[key] = value.to(expected[key].dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{gen_path}: the file has no array for {missing[0]} ({len(missing)} missing)")
    provenance = {
        "format": "Chainer save_npz of pfnet-research/tgan2 MultiTGANCLSTMGenerator (extensions.snapshot_object)",
        "generator": str(gen_path),
        "discriminator": str(dis_path) if dis_path else
        f"not in the source (no discriminator_iter_N.npz beside it): initialised with model.init = {model.init!r}, seed 0",
        "iteration": iteration,
    }
    return Converted(model=model, state=state, provenance=provenance)
