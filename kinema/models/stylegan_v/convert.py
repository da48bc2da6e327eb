"""``kinema convert stylegan_v SNAPSHOT.pkl OUT``: the authors' network snapshots -> a kinema checkpoint.

universome/stylegan-v (commit 3fecd69) saves ``network-snapshot-NNNNNN.pkl`` with ``pickle.dump`` of a dict
(``src/training/training_loop.py:472-501``): ``training_set_kwargs``, ``G``, ``D``, ``G_ema``,
``augment_pipe``, ``G_opt``, ``D_opt``, ``vis``, ``stats``. The networks are StyleGAN2-ADA persistent objects:
each record carries its module's Python source, its instance ``__dict__`` (parameters, buffers, submodules)
and the constructor arguments (``_init_kwargs``: ``w_dim``, ``mapping_kwargs``, ``synthesis_kwargs``, ...,
and ``cfg``, the hydra/OmegaConf config of the network). :func:`kinema.foreign.load_foreign` rebuilds them
as inert data -- no source is run, no class imported -- and this module reads the hyper-parameters from the
constructor arguments and the config (interpolations such as ``sampling: ${sampling}`` resolved against the
pickled config root), maps them to :class:`StyleGANVConfig`, refusing any it does not know by name, and
renames the weights: ``model.safetensors`` holds G and D, ``ema.safetensors`` G_ema and D (what
``kinema.load`` / ``kinema sample`` use by default). Card: docs/models/stylegan_v.md, "Load the authors'
checkpoints".
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from kinema.errors import CheckpointError
from kinema.foreign import Converted, ConvertOptions, Inert, load_foreign, module_state_dict
from kinema.models.stylegan_v.layers import setup_filter
from kinema.models.stylegan_v.model import StyleGANVConfig, linspaced_frequencies, log_spaced_time_freqs

# Classes a genuine snapshot pickles besides tensors and the persistent networks, rebuilt as inert records
# (never imported): the hydra config (OmegaConf 2.0-2.4 containers, nodes and their metadata, whose type
# fields name typing.Any and builtin types), dnnlib.EasyDict kwargs, the torch modules the official code
# does not mark persistent (nn.Sequential of the motion convs, nn.Embedding and TemporalDifferenceEncoder of
# D), and the Adam optimisers (with their defaultdict state).
INERT = (
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.nodes.*",
    "omegaconf.base.Metadata", "omegaconf.base.ContainerMetadata", "typing.Any",
    "builtins.dict", "builtins.list", "builtins.int", "builtins.float", "builtins.str", "builtins.bool",
    "src.dnnlib.util.EasyDict", "dnnlib.util.EasyDict", "collections.defaultdict",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.sparse.Embedding",
    "training.layers.TemporalDifferenceEncoder", "src.training.layers.TemporalDifferenceEncoder",
    "torch.optim.adam.Adam",
)

_MISSING = object()


class _Config:
    """The pickled OmegaConf tree as plain data, with ``${a.b}`` interpolations resolved on access."""

    def __init__(self, node: Inert, where: str):
        self.where = where
        root, path = node, []
        while isinstance(root, Inert) and isinstance(root.attributes.get("_parent"), Inert):
            path.append(_meta(root).get("key"))
            root = root.attributes["_parent"]
        self.root = _plain(root)
        self.path = [str(k) for k in reversed(path)]

    def node(self, *keys: str) -> Any:
        """The value at ``keys`` under this config (``_MISSING`` if absent), interpolations resolved."""
        return self._walk(self.root, self.path + list(keys), self.path + list(keys))

    def _walk(self, value: Any, keys: list[str], full: list[str], depth: int = 0) -> Any:
        for i, key in enumerate(keys):
            value = self._resolve(value, full, depth)
            if not isinstance(value, dict) or key not in value:
                return _MISSING
            value = value[key]
        return self._resolve(value, full, depth)

    def _resolve(self, value: Any, full: list[str], depth: int) -> Any:
        if not isinstance(value, str) or "${" not in value:
            return value
        if depth > 16:
            raise CheckpointError(f"{self.where}: config interpolation loop at {'.'.join(full)}")
        whole = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", value)
        if whole:
            target = self._walk(self.root, whole.group(1).split("."), full, depth + 1)
            if target is _MISSING:
                raise CheckpointError(f"{self.where}: config key {'.'.join(full)} = {value!r} points at nothing")
            return target
        raise CheckpointError(f"{self.where}: config key {'.'.join(full)} = {value!r} is an interpolation kinema "
                              "cannot resolve (only ${a.b.c} references are supported); please report it")


def _meta(node: Inert) -> dict:
    meta = node.attributes.get("_metadata")
    return meta.attributes if isinstance(meta, Inert) else {}


def _plain(obj: Any) -> Any:
    """OmegaConf containers/nodes and EasyDicts -> dicts, lists and values (interpolations kept as text)."""
    if isinstance(obj, Inert):
        path = obj.class_path
        if path.startswith("omegaconf."):
            attrs = obj.attributes
            if "_content" in attrs:
                content = attrs["_content"]
                if isinstance(content, dict):
                    return {str(k): _plain(v) for k, v in content.items()}
                if isinstance(content, (list, tuple)):
                    return [_plain(v) for v in content]
                return content  # None, "???" or an interpolation string
            return _plain(attrs.get("_val"))
        if path.endswith("EasyDict"):
            return {str(k): _plain(v) for k, v in {**obj.attributes, **obj.items}.items()}
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _kwargs(record: Inert, name: str, where: str) -> dict:
    state = record.attributes
    if "_init_kwargs" not in state:
        raise CheckpointError(f"{where}: {name} has no constructor arguments (_init_kwargs); expected a StyleGAN2-ADA "
                              "persistent object as universome/stylegan-v pickles it")
    if state.get("_init_args"):
        raise CheckpointError(f"{where}: {name} was built with positional arguments {state['_init_args']!r}; "
                              "universome/stylegan-v passes keywords only")
    return state["_init_kwargs"]


def _take(kwargs: dict, known: dict[str, Any], what: str, where: str) -> dict:
    """Plain values of ``kwargs`` with defaults from ``known``; an unknown key is refused by name."""
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{where}: {what} is {kwargs if kwargs is not _MISSING else 'missing'!r}, expected a "
                              "mapping as universome/stylegan-v writes it")
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise CheckpointError(f"{where}: {what} has {', '.join(unknown)}, which kinema's StyleGAN-V converter does "
                              f"not know (known: {', '.join(sorted(known))}); refusing rather than ignoring it")
    return {k: kwargs.get(k, default) for k, default in known.items()}


def _require(value: Any, expected: Any, key: str, where: str, why: str) -> None:
    if value != expected:
        raise CheckpointError(f"{where}: {key} = {value!r}; kinema's StyleGAN-V implements {expected!r} only ({why})")


def _check_family(data: Any, where: str) -> tuple[Inert, Inert, Inert]:
    if not isinstance(data, dict) or not {"G", "D", "G_ema"} <= set(data):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{where}: expected a StyleGAN-V network snapshot (a dict with G, D, G_ema, as "
                              f"training_loop.py writes network-snapshot-*.pkl), found {found}")
    nets = []
    for name, cls in (("G", "Generator"), ("D", "Discriminator"), ("G_ema", "Generator")):
        net = data[name]
        if not isinstance(net, Inert) or net.class_path != f"persistence.{cls}":
            found = net.class_path if isinstance(net, Inert) else type(net).__name__
            raise CheckpointError(f"{where}: {name} is {found}; expected StyleGAN-V's persistent {cls}")
        source = getattr(net, "source", "")
        marker = "MotionMappingNetwork" if cls == "Generator" else "TemporalDifferenceEncoder"
        if marker not in source:
            raise CheckpointError(f"{where}: {name} is a {cls} whose source has no {marker}: a StyleGAN2-ADA / "
                                  "StyleGAN3 (or MoCoGAN-HD) snapshot, not StyleGAN-V (universome/stylegan-v)")
        nets.append(net)
    return tuple(nets)


def read_config(G: Inert, D: Inert, where: str) -> tuple[StyleGANVConfig, dict]:
    """:class:`StyleGANVConfig` from the constructor arguments and configs of the pickled G and D."""
    g = _take(_kwargs(G, "G", where), {"w_dim": _MISSING, "mapping_kwargs": {}, "synthesis_kwargs": {}, "cfg": None,
                                      "c_dim": 0, "img_resolution": _MISSING, "img_channels": 3},
              "G's constructor arguments", where)
    d = _take(_kwargs(D, "D", where), {"c_dim": 0, "img_resolution": _MISSING, "img_channels": 3,
                                      "architecture": "resnet", "channel_base": 32768, "channel_max": 512,
                                      "num_fp16_res": 0, "conv_clamp": None, "cmap_dim": None, "block_kwargs": {},
                                      "mapping_kwargs": {}, "epilogue_kwargs": {}, "cfg": None},
              "D's constructor arguments", where)
    if not isinstance(g["cfg"], Inert) or not isinstance(d["cfg"], Inert):
        raise CheckpointError(f"{where}: G or D has no hydra config (cfg); expected universome/stylegan-v's networks")
    gcfg, dcfg = _Config(g["cfg"], where), _Config(d["cfg"], where)
    mapping = _take(_plain(g["mapping_kwargs"]), {"num_layers": 8, "cfg": None}, "G's mapping_kwargs", where)
    synthesis = _take(_plain(g["synthesis_kwargs"]), {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 0,
                                                     "conv_clamp": None}, "G's synthesis_kwargs", where)
    d_block = _take(_plain(d["block_kwargs"]), {"freeze_layers": 0}, "D's block_kwargs", where)
    d_mapping = _take(_plain(d["mapping_kwargs"]), {"num_layers": 8}, "D's mapping_kwargs", where)
    d_epilogue = _take(_plain(d["epilogue_kwargs"]), {"mbstd_group_size": 4, "mbstd_num_channels": 1},
                       "D's epilogue_kwargs", where)

    # the generator config (configs/model/base.yaml + stylegan-v.yaml): every key is mapped, checked or named
    gkeys = gcfg.node()
    if not isinstance(gkeys, dict):
        raise CheckpointError(f"{where}: G's cfg is {type(gkeys).__name__}, expected a config mapping")
    _take(gkeys, dict.fromkeys(["source", "use_noise", "w_dim", "z_dim", "c_dim", "input", "motion", "time_enc",
                                "sampling", "fmaps", "channel_max", "mapping_net_n_layers", "fp32"]),
          "the generator config (model.generator)", where)
    _take(gcfg.node("motion"), dict.fromkeys(["z_dim", "v_dim", "motion_z_distance", "gen_strategy", "kernel_size",
                                              "use_fractional_t", "fourier", "time_enc"]),
          "model.generator.motion", where)
    _take(gcfg.node("time_enc"), dict.fromkeys(["cond_type", "dim", "min_period_len", "max_period_len",
                                                "phase_dropout_std"]), "model.generator.time_enc", where)
    sampling_keys = dict.fromkeys(["name", "fps", "max_num_frames", "num_frames_per_video", "type", "total_dists",
                                   "max_dist"])
    _take(gcfg.node("sampling"), sampling_keys, "model.generator.sampling", where)
    _take(dcfg.node(), dict.fromkeys(["source", "sampling", "concat_res", "num_frames_div_factor", "dummy_c",
                                      "mbstd_group_size", "fmaps", "channel_max", "fp32"]),
          "the discriminator config (model.discriminator)", where)
    _take(dcfg.node("sampling"), sampling_keys, "model.discriminator.sampling", where)

    why_official = "the configuration of configs/model/stylegan-v.yaml"
    _require(gcfg.node("use_noise"), False, "model.generator.use_noise", where, "no noise inputs, " + why_official)
    _require(gcfg.node("input", "type"), "temporal", "model.generator.input.type", where, why_official)
    _require(gcfg.node("motion", "gen_strategy"), "conv", "model.generator.motion.gen_strategy", where, why_official)
    _require(gcfg.node("motion", "fourier"), True, "model.generator.motion.fourier", where, why_official)
    _require(gcfg.node("motion", "time_enc"), {}, "model.generator.motion.time_enc", where, why_official)
    _require(gcfg.node("time_enc", "cond_type"), "concat_const", "model.generator.time_enc.cond_type", where,
             why_official)
    _require(g["c_dim"], 0, "G's c_dim", where, "class-conditional StyleGAN-V is not implemented")
    _require(d["c_dim"], 0, "D's c_dim", where, "class-conditional StyleGAN-V is not implemented")
    _require(d["architecture"], "resnet", "D's architecture", where, "the StyleGAN2 default StyleGAN-V uses")
    _require(d_mapping["num_layers"], 2, "D's mapping_kwargs.num_layers", where, "src/train.py:178")
    _require(dcfg.node("dummy_c"), False, "model.discriminator.dummy_c", where, "an ablation that zeroes the time "
             "condition")
    _require(gcfg.node("sampling", "type"), "random", "sampling.type", where, "random_frame_sampling")
    for key in ("max_num_frames", "num_frames_per_video", "max_dist", "total_dists"):
        _require(dcfg.node("sampling", key), gcfg.node("sampling", key), f"model.discriminator.sampling.{key}", where,
                 "G and D sampled alike")
    dists = gcfg.node("sampling", "total_dists")
    if isinstance(dists, list) and [int(x) for x in dists] != [2**k for k in range(len(dists))]:
        raise CheckpointError(f"{where}: sampling.total_dists = {dists}; kinema draws powers of two (1, 2, 4, ...)")
    for key in ("channel_base", "channel_max", "conv_clamp"):
        _require(d[key], synthesis[key], f"D's {key}", where, f"one {key} for G and D, G has {synthesis[key]!r}")
    _require(g["img_resolution"], d["img_resolution"], "D's img_resolution", where, "G and D of one resolution")
    _require(g["img_channels"], d["img_channels"], "D's img_channels", where, "G and D of one channel count")
    _require(d_epilogue["mbstd_num_channels"], 1, "D's epilogue mbstd_num_channels", where, "the StyleGAN2 default")
    w_dim = gcfg.node("w_dim")
    _require(w_dim, g["w_dim"], "model.generator.w_dim", where, "G's w_dim argument")

    def need(conf: _Config, *keys: str) -> int:
        value = conf.node(*keys)
        if value is _MISSING or value is None or value == "???":
            raise CheckpointError(f"{where}: the snapshot's config has no {'.'.join(conf.path + list(keys))}; "
                                  "expected it as configs/model/stylegan-v.yaml sets it")
        if not isinstance(value, int) or isinstance(value, bool):
            raise CheckpointError(f"{where}: {'.'.join(conf.path + list(keys))} = {value!r}, expected an integer")
        return value

    max_dist = gcfg.node("sampling", "max_dist")
    fractional = gcfg.node("motion", "use_fractional_t")
    config = StyleGANVConfig(
        frames=min(16, need(gcfg, "sampling", "max_num_frames")),  # kinema's default clip length
        resolution=int(g["img_resolution"]),
        channels=int(g["img_channels"]),
        z_dim=need(gcfg, "z_dim"),
        w_dim=int(g["w_dim"]),
        mapping_layers=int(mapping["num_layers"]),
        channel_base=int(synthesis["channel_base"]),
        channel_max=int(synthesis["channel_max"]),
        conv_clamp=float(synthesis["conv_clamp"] or 0.0),
        motion_z_dim=need(gcfg, "motion", "z_dim"),
        motion_u_dim=need(gcfg, "motion", "v_dim"),
        motion_kernel=need(gcfg, "motion", "kernel_size"),
        motion_z_distance=need(gcfg, "motion", "motion_z_distance"),
        time_enc_dim=need(gcfg, "time_enc", "dim"),
        min_period_len=need(gcfg, "time_enc", "min_period_len"),
        max_period_len=need(gcfg, "time_enc", "max_period_len"),
        max_num_frames=need(gcfg, "sampling", "max_num_frames"),
        frames_per_clip=need(gcfg, "sampling", "num_frames_per_video"),
        max_dist=int(max_dist) if isinstance(max_dist, int) else StyleGANVConfig.max_dist,
        fractional_t=bool(fractional) if isinstance(fractional, bool) else True,
        concat_res=need(dcfg, "concat_res"),
        frames_div_factor=need(dcfg, "num_frames_div_factor"),
        cmap_dim=int(d["cmap_dim"] or 0),
        mbstd_group_size=int(d_epilogue["mbstd_group_size"]),
    )
    try:
        config.validate()
    except ValueError as exc:
        raise CheckpointError(f"{where}: the snapshot's hyper-parameters give an invalid kinema config: "
                              f"{exc}") from None
    read = {"G": {k: v for k, v in g.items() if k not in ("cfg", "mapping_kwargs", "synthesis_kwargs")},
            "mapping_kwargs": {"num_layers": mapping["num_layers"]}, "synthesis_kwargs": synthesis,
            "D": {k: v for k, v in d.items() if k not in ("cfg", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")},
            "D_block_kwargs": d_block, "D_epilogue_kwargs": d_epilogue,
            "model.generator": _jsonable(gkeys), "model.discriminator": _jsonable(dcfg.node())}
    return config, read


def _jsonable(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {str(k): _jsonable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_jsonable(v) for v in tree]
    return tree if isinstance(tree, (str, int, float, bool)) or tree is None else repr(tree)


def _constants(cfg: StyleGANVConfig) -> dict[str, torch.Tensor]:
    """Buffers the official modules save and kinema computes (checked, not loaded)."""
    freqs = linspaced_frequencies(cfg.time_enc_dim, cfg.min_period_len, cfg.max_period_len)
    return {"resample_filter": setup_filter(), "freqs": freqs,
            "phase_scales": cfg.max_period_len / (2 * math.pi / freqs),
            "fourier_coefs": log_spaced_time_freqs(cfg.max_num_frames)}


def _rename(state: dict[str, torch.Tensor], net: str, cfg: StyleGANVConfig, where: str) -> dict[str, torch.Tensor]:
    """Official ``G`` / ``D`` state-dict names -> kinema's ``generator.*`` / ``discriminator.*``."""
    constants = _constants(cfg)
    out: dict[str, torch.Tensor] = {}
    rules = {
        "G": [(r"mapping\.fc(\d+)\.(weight|bias)", r"generator.mapping.layers.\1.\2"),
              (r"mapping\.w_avg", r"generator.mapping.w_avg"),
              (r"synthesis\.motion_encoder\.conv\.(\d+)\.(weight|bias)", r"generator.motion.conv.\1.\2"),
              (r"synthesis\.motion_encoder\.time_encoder\.(periods_predictor|phase_predictor|aligners_predictor)"
               r"\.weight", r"generator.motion.time_encoder.\1.weight"),
              (r"synthesis\.b4\.input\.input\.const", r"generator.blocks.b4.const"),
              (r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(weight|bias|affine\.weight|affine\.bias)",
               r"generator.blocks.b\1.\2.\3")],
        "D": [(r"b4\.(conv|fc|out)\.(weight|bias)", r"discriminator.\1.\2"),
              (r"b(\d+)\.(fromrgb|conv0|conv1|skip)\.(weight|bias)", r"discriminator.blocks.b\1.\2.\3"),
              (r"time_encoder\.const_embed\.weight", r"discriminator.time_encoder.const_embed.weight"),
              (r"mapping\.embed\.(weight|bias)", r"discriminator.mapping.embed.\1"),
              (r"mapping\.fc(\d+)\.(weight|bias)", r"discriminator.mapping.layers.\1.\2")],
    }[net]
    for name, tensor in state.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in constants:
            expected = constants[leaf]
            if tensor.shape != expected.shape or not torch.allclose(tensor.float(), expected, rtol=1e-5, atol=1e-7):
                raise CheckpointError(f"{where}: {net}.{name} differs from the constant kinema computes for it "
                                      f"({leaf}, shape {tuple(tensor.shape)} vs {tuple(expected.shape)}); a "
                                      "different filter or time encoding than StyleGAN-V's is not supported")
            continue
        if "noise_const" in name or "noise_strength" in name:
            raise CheckpointError(f"{where}: {net}.{name}: noise inputs (use_noise) are not implemented")
        for pattern, target in rules:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, target, name)] = tensor.detach().float().contiguous()
                break
        else:
            raise CheckpointError(f"{where}: {net} has a tensor {name!r} kinema's StyleGAN-V has no place for")
    return out


def convert_stylegan_v(src: Path, options: ConvertOptions) -> Converted:
    """A universome/stylegan-v ``network-snapshot-*.pkl`` -> :class:`Converted` (G + D; G_ema + D as EMA)."""
    src = Path(src)
    where = str(src)
    if options.first_stage is not None:
        raise CheckpointError("stylegan_v takes no --vqvae (first stage); StyleGAN-V is a single GAN")
    data = load_foreign(src, inert=INERT)
    G, D, G_ema = _check_family(data, where)
    config, read = read_config(G, D, where)
    ema_config, _ = read_config(G_ema, D, where)
    if ema_config != config:
        raise CheckpointError(f"{where}: G_ema's hyper-parameters differ from G's")
    if options.model is not None and options.model != config:
        raise CheckpointError(f"{where}: --config/--set are not used by stylegan_v: the snapshot carries its own "
                              "hyper-parameters (see converted.json); drop them")
    disc = _rename(module_state_dict(D), "D", config, where)
    state = {**_rename(module_state_dict(G), "G", config, where), **disc}
    ema = {**_rename(module_state_dict(G_ema), "G", config, where), **disc}
    augment = data.get("augment_pipe")
    p = None
    if isinstance(augment, Inert):
        buffer = augment.attributes.get("_buffers", {}).get("p")
        p = float(buffer) if isinstance(buffer, torch.Tensor) else None
    stats = data.get("stats") if isinstance(data.get("stats"), dict) else {}
    provenance = {
        "format": "universome/stylegan-v network snapshot (StyleGAN2-ADA persistence pickle)",
        "official_commit_read": "3fecd69",
        "hyper_parameters": read,
        "augment_pipe_p": p,
        "cur_nimg": stats.get("cur_nimg"),
        "notes": ["G_ema + D -> ema.safetensors (kinema.load default), G + D -> model.safetensors",
                  "ADA (augment_pipe) is not converted: kinema's augmentation is off (model.augment_p = 0)",
                  "kinema runs float32; the official num_fp16_res layers ran fp16 (conv_clamp kept)"],
    }
    return Converted(model=config, state=state, ema_state=ema, provenance=provenance)
