"""``kinema convert videogpt_vqvae`` / ``videogpt_prior``: the authors' PyTorch Lightning checkpoints.

The official training scripts (wilson1yan/VideoGPT at 733d2b1, ``scripts/train_vqvae.py``,
``scripts/train_videogpt.py``) save ``.ckpt`` files through Lightning's ``ModelCheckpoint``: a
``torch.save`` of ``{"state_dict", "hyper_parameters": {"args": argparse.Namespace}, "epoch",
"global_step", "pytorch-lightning_version", "callbacks": {ModelCheckpoint: {...}}, "optimizer_states",
"lr_schedulers", "hparams_name"}`` (``VQVAE.__init__`` / ``VideoGPT.__init__`` call
``save_hyperparameters()`` with the script's whole ``args``). The released checkpoints of
``videogpt/download.py`` (``bair_stride4x2x2``, ``ucf101_stride4x4x4``, ``kinetics_stride4x4x4``,
``kinetics_stride2x4x4``, ``bair_gpt``, ``ucf101_uncond_gpt``) are such files.

The file is read as data only (:func:`kinema.foreign.load_foreign`): ``argparse.Namespace`` and Lightning's
callback classes become inert records, nothing from the file is imported or run. The model config is read
from ``args``: every key is either a model setting (mapped below), or a known data / Lightning ``Trainer``
setting (recorded in ``converted.json``, not a model setting), or refused by name.

Pixel range: the official code feeds videos in ``[-0.5, 0.5]`` (data.py), kinema in ``[-1, 1]``. The
converter folds the factor 2 into the weights that touch pixels -- the encoder's first conv and the prior's
conditioning-frame stem are halved, the decoder's last transposed conv (weight and bias) doubled -- so that
kinema on ``2 x`` gives exactly ``2 x`` the official reconstruction and the same codes and logits (powers of
2: no rounding; zero padding maps to zero padding).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from kinema.config import build_dataclass
from kinema.errors import CheckpointError, ConfigError
from kinema.foreign import ConvertOptions, Converted, Inert, load_foreign
from kinema.models.videogpt.prior import VideoGPTPriorConfig
from kinema.models.videogpt.vqvae import VideoGPTVQVAEConfig

# Pickled classes a Lightning 1.2/1.3 checkpoint of the official scripts names (as inert records).
INERT = ("argparse.Namespace", "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
         "pytorch_lightning.callbacks.*.*", "pytorch_lightning.utilities.parsing.AttributeDict")

# pl.Trainer.add_argparse_args of Lightning 1.2.7 and 1.3.3 (the versions requirements.txt pinned while the
# checkpoints were trained; read from Trainer.__init__ of each release): training settings, not the model's.
TRAINER_ARGS = frozenset("""
accelerator accumulate_grad_batches amp_backend amp_level auto_lr_find auto_scale_batch_size auto_select_gpus
automatic_optimization benchmark check_val_every_n_epoch checkpoint_callback default_root_dir deterministic
distributed_backend enable_pl_optimizer fast_dev_run flush_logs_every_n_steps gpus gradient_clip_algorithm
gradient_clip_val limit_predict_batches limit_test_batches limit_train_batches limit_val_batches
log_every_n_steps log_gpu_memory logger max_epochs max_steps max_time min_epochs min_steps move_metrics_to_cpu
multiple_trainloader_mode num_nodes num_processes num_sanity_val_steps overfit_batches plugins precision
prepare_data_per_node process_position profiler progress_bar_refresh_rate reload_dataloaders_every_epoch
replace_sampler_ddp resume_from_checkpoint stochastic_weight_avg sync_batchnorm terminate_on_nan tpu_cores
track_grad_norm truncated_bptt_steps val_check_interval weights_save_path weights_summary
""".split())
DATA_ARGS = frozenset({"data_path", "batch_size", "num_workers"})  # scripts/train_*.py, data.py
VQVAE_ARGS = ("embedding_dim", "n_codes", "n_hiddens", "n_res_layers", "downsample", "sequence_length",
              "resolution")  # vqvae.py:15-37, :76-83; scripts/train_vqvae.py:14-18
PRIOR_ARGS = ("vqvae", "n_cond_frames", "class_cond", "class_cond_dim", "hidden_dim", "heads", "layers",
              "dropout", "attn_type", "attn_dropout", "sequence_length", "resolution")  # gpt.py:169-185

_ATTENTION = {"w_qs": "q", "w_ks": "k", "w_vs": "v", "fc": "out"}  # official MultiHeadAttention -> kinema


def read_lightning_checkpoint(src: Path, what: str, expected_keys: tuple[str, ...]) -> tuple[dict, dict]:
    """``(state_dict, args as a dict)`` of an official Lightning ``.ckpt``; a clear error for anything else."""
    ckpt = load_foreign(src, inert=INERT)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{src} is not a PyTorch Lightning checkpoint (expected a dict with 'state_dict' and "
                              f"'hyper_parameters', as the official VideoGPT scripts save; found {found})")
    hparams = ckpt.get("hyper_parameters")
    if isinstance(hparams, Inert):  # a Lightning AttributeDict (dict subclass): its items were SETITEMS
        hparams = dict(hparams.items) or dict(hparams.attributes)
    args = hparams.get("args") if isinstance(hparams, dict) else None
    if not isinstance(args, Inert) or args.class_path != "argparse.Namespace":
        raise CheckpointError(f"{src} has no hyper_parameters['args'] Namespace: the official VideoGPT scripts save "
                              f"their argparse arguments there (found hyper_parameters = {hparams!r:.200}); the model "
                              "config cannot be read from this file")
    values = dict(args.attributes)
    missing = [k for k in expected_keys if k not in values]
    if missing:
        looks = ("a VideoGPT transformer (gpt.py)", "; convert it with `kinema convert videogpt_prior SRC OUT --first-stage "
                 "VQ_DIR`") if "hidden_dim" in values else \
            ("a VideoGPT VQ-VAE (vqvae.py)", "; convert it with `kinema convert videogpt_vqvae SRC OUT`") \
            if "n_codes" in values else ("no VideoGPT model", "")
        raise CheckpointError(f"{src} is not a {what} checkpoint: its hyper-parameters lack {', '.join(missing)} "
                              f"(they look like {looks[0]}){looks[1]}")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{src}: 'state_dict' is not a dict of tensors")
    return state, values


def _check_unknown(src: Path, args: dict, model_keys: tuple[str, ...]) -> dict[str, Any]:
    """The args that are not model settings (recorded); refuse any key the official scripts do not define."""
    unknown = sorted(set(args) - set(model_keys) - TRAINER_ARGS - DATA_ARGS)
    if unknown:
        raise ConfigError(f"{src}: hyper-parameter {unknown[0]!r} (= {args[unknown[0]]!r}) is not one the official "
                          f"VideoGPT scripts or Lightning 1.2/1.3's Trainer define ({len(unknown)} unknown: "
                          f"{', '.join(unknown[:6])}); kinema does not know what it changes, so it does not guess. "
                          "If the checkpoint comes from a modified VideoGPT, convert it with a kinema that knows the "
                          "modification")
    return {k: v for k, v in args.items() if k not in model_keys}


def _int(src: Path, args: dict, key: str) -> int:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{src}: hyper-parameter {key} = {value!r} is not an integer")
    return value


def vqvae_config_from_args(src: Path, args: dict) -> VideoGPTVQVAEConfig:
    downsample = args["downsample"]
    if not isinstance(downsample, (list, tuple)) or len(downsample) != 3:
        raise ConfigError(f"{src}: hyper-parameter downsample = {downsample!r}, expected three (T, H, W) factors")
    config = VideoGPTVQVAEConfig(
        frames=_int(src, args, "sequence_length"), resolution=_int(src, args, "resolution"),
        downsample=[int(d) for d in downsample], hidden=_int(src, args, "n_hiddens"),
        res_layers=_int(src, args, "n_res_layers"), attention_heads=2,  # AxialBlock(n_hiddens, 2), vqvae.py:118
        codebook_size=_int(src, args, "n_codes"), embedding_dim=_int(src, args, "embedding_dim"),
        ema_decay=0.99, restart_threshold=1.0)  # vqvae.py:184-185, :197
    config.validate()
    return config


def _rename_attention(key: str) -> str:
    return re.sub(r"\.(w_qs|w_ks|w_vs|fc)\.(weight|bias)$", lambda m: f".{_ATTENTION[m[1]]}.{m[2]}", key)


def vqvae_state(src: Path, state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Official ``VQVAE.state_dict()`` (keys under ``prefix``) -> kinema ``VideoGPTVQVAE`` names, the
    pixel-range factor folded in (module docstring)."""
    out: dict[str, torch.Tensor] = {}
    convts = sorted({int(m[1]) for k in state if (m := re.match(re.escape(prefix) + r"decoder\.convts\.(\d+)\.", k))})
    last_convt = f"decoder.convts.{convts[-1]}.convt." if convts else None
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.startswith(("pre_vq_conv.", "post_vq_conv.")):
            name = name.replace("_conv.", ".", 1)
        elif ".attn_" in name:
            name = _rename_attention(name)
        elif not name.startswith(("encoder.", "decoder.", "codebook.")):
            raise CheckpointError(f"{src}: unexpected VQ-VAE tensor {key!r}; the official VQVAE (vqvae.py:15-31) has "
                                  "encoder, decoder, pre_vq_conv, post_vq_conv and codebook only")
        value = value.detach().clone().float()
        if name == "encoder.convs.0.conv.weight":
            value = value * 0.5  # input pixels: official [-0.5, 0.5], kinema [-1, 1]
        elif last_convt and name.startswith(last_convt):
            value = value * 2.0  # output pixels
        out[name] = value
    out["codebook.initialized"] = torch.ones(())  # the official sets _need_init = False once trained
    return out


def convert_vqvae(src: Path, options: ConvertOptions) -> Converted:
    """An official VideoGPT VQ-VAE ``.ckpt`` -> kinema ``videogpt_vqvae``."""
    src = Path(src)
    state, args = read_lightning_checkpoint(src, "VideoGPT VQ-VAE", VQVAE_ARGS)
    if "hidden_dim" in args or any(k.startswith("vqvae.") for k in state):
        raise CheckpointError(f"{src} is a VideoGPT transformer checkpoint (it has hidden_dim and vqvae.* weights), "
                              "expected a VQ-VAE; convert it with `kinema convert videogpt_prior SRC OUT --first-stage "
                              "CONVERTED_VQVAE`")
    other = _check_unknown(src, args, VQVAE_ARGS)
    config = vqvae_config_from_args(src, args)
    return Converted(model=config, state=vqvae_state(src, state),
                     provenance={"format": "PyTorch Lightning .ckpt (wilson1yan/VideoGPT VQVAE)",
                                 "hyper_parameters": {k: args[k] for k in VQVAE_ARGS},
                                 "not_model_settings": other,
                                 "pixel_range": "official [-0.5, 0.5] folded into the first/last layers"})


def prior_state(src: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``VideoGPT.state_dict()`` -> kinema ``VideoGPTPrior`` names (``vqvae.*`` through
    :func:`vqvae_state`)."""
    out = {f"vqvae.{k}": v for k, v in vqvae_state(src, state, "vqvae.").items()}
    fixed = {"fc_in.weight": "transformer.fc_in.weight", "fc_out.weight": "transformer.fc_out.weight",
             "attn_stack.right_shift.sos": "transformer.sos"}
    blocks = {"pre_attn_norm": "norm_attn", "attn": "attn", "pre_enc_norm": "norm_cross", "enc_attn": "cross",
              "pre_fc_norm": "norm_fc", "fc_block": "fc"}
    for key, value in state.items():
        if key.startswith("vqvae."):
            continue
        value = value.detach().clone().float()
        if key in fixed:
            out[fixed[key]] = value
        elif m := re.fullmatch(r"attn_stack\.pos_embd\.emb\.d_(\d)", key):
            out[f"transformer.pos.tables.{m[1]}"] = value
        elif m := re.fullmatch(r"cond_pos_embd\.emb\.d_(\d)", key):
            out[f"transformer.frame_encoder.pos.tables.{m[1]}"] = value
        elif m := re.fullmatch(r"norm\.(g|b|w\.weight|wb\.weight)", key):
            out[f"transformer.norm.{m[1]}"] = value
        elif key.startswith("resnet."):
            if key == "resnet.stem.0.weight":
                value = value * 0.5  # conditioning frames: official [-0.5, 0.5], kinema [-1, 1]
            out["transformer.frame_encoder.net." + key[len("resnet."):]] = value
        elif m := re.fullmatch(r"attn_stack\.attn_nets\.(\d+)\.attn\.attn\.mask", key):
            seq = value.shape[0]  # FullAttention's causal mask buffer: derived, kinema builds it on the fly
            if value.shape != (seq, seq) or not torch.equal(value, torch.tril(torch.ones(seq, seq))):
                raise CheckpointError(f"{src}: {key} is not the lower-triangular causal mask the official "
                                      "FullAttention registers (attention.py:208-210)")
        elif m := re.fullmatch(r"attn_stack\.attn_nets\.(\d+)\.(\w+)\.(.+)", key):
            if m[2] not in blocks:
                raise CheckpointError(f"{src}: unexpected transformer tensor {key!r} (official AttentionBlock has "
                                      f"{', '.join(blocks)})")
            rest = _rename_attention("." + m[3])[1:] if m[2] in ("attn", "enc_attn") else m[3]
            out[f"transformer.blocks.{m[1]}.{blocks[m[2]]}.{rest}"] = value
        else:
            raise CheckpointError(f"{src}: unexpected tensor {key!r} for the official VideoGPT transformer "
                                  "(gpt.py:18-68)")
    return out


def _vqvae_folder(src: Path, first_stage: Path | None) -> tuple[Path, dict, VideoGPTVQVAEConfig]:
    """The converted VQ-VAE checkpoint ``--first-stage`` names, with clear errors when it is missing or unconverted."""
    from kinema.models.videogpt.prior import read_vqvae_config

    how = (f"convert the VQ-VAE the transformer was trained on first (`kinema convert videogpt_vqvae VQVAE.ckpt "
           f"VQ_DIR`), then `kinema convert videogpt_prior {src} OUT --first-stage VQ_DIR`")
    if first_stage is None:
        raise ConfigError(f"videogpt_prior needs --first-stage: {how}")
    first_stage = Path(first_stage)
    if first_stage.is_file():
        raise ConfigError(f"--first-stage {first_stage} is a file; it must be the folder `kinema convert videogpt_vqvae` "
                          f"wrote: {how}")
    try:
        stored = read_vqvae_config(first_stage)
        values = {k: v for k, v in stored.items() if k not in VideoGPTVQVAEConfig.MOVED_KEYS}
        return first_stage, stored, build_dataclass(VideoGPTVQVAEConfig, values, "model")
    except (ConfigError, CheckpointError) as exc:
        raise ConfigError(f"--first-stage {first_stage}: {exc}. {how}") from None


def convert_prior(src: Path, options: ConvertOptions) -> Converted:
    """An official VideoGPT transformer ``.ckpt`` -> kinema ``videogpt_prior``, on the VQ-VAE folder
    ``options.first_stage`` (``--first-stage``) converted from the VQ-VAE it was trained on (checked weight by weight
    against the VQ-VAE copy inside the transformer's checkpoint)."""
    from safetensors.torch import load_file

    from kinema.runs import resolve_checkpoint

    src = Path(src)
    state, args = read_lightning_checkpoint(src, "VideoGPT transformer", PRIOR_ARGS[1:])
    if "vqvae" not in args or not any(k.startswith("vqvae.") for k in state):
        raise CheckpointError(f"{src} has no VQ-VAE weights (vqvae.*) or no `vqvae` hyper-parameter: it is not a "
                              "VideoGPT transformer checkpoint (gpt.py); a VQ-VAE converts with `kinema convert "
                              "videogpt_vqvae`")
    other = _check_unknown(src, args, PRIOR_ARGS)
    folder, stored, vq = _vqvae_folder(src, options.first_stage)
    mine = vqvae_state(src, state, "vqvae.")
    theirs = load_file(resolve_checkpoint(folder) / "model.safetensors")
    differ = sorted(k for k in set(mine) | set(theirs) if k not in mine or k not in theirs
                    or mine[k].shape != theirs[k].shape or not torch.equal(mine[k], theirs[k]))
    if differ:
        raise ConfigError(f"--first-stage {folder} is not the VQ-VAE this transformer was trained on (its copy inside {src}, "
                          f"hyper-parameter vqvae = {args['vqvae']!r}, differs first at {differ[0]}, {len(differ)} "
                          "tensors in all); convert the VQ-VAE checkpoint the transformer was trained with")
    frames, resolution = _int(src, args, "sequence_length"), _int(src, args, "resolution")
    if (frames, resolution) != (vq.frames, vq.resolution):
        raise ConfigError(f"{src}: the transformer was trained on {frames}x{resolution}x{resolution} clips, the VQ-VAE "
                          f"in --first-stage {folder} on {vq.frames}x{vq.resolution}x{vq.resolution}")
    class_cond = bool(args["class_cond"])
    classes = args["class_cond_dim"]
    if class_cond != (classes is not None):
        raise ConfigError(f"{src}: class_cond = {class_cond} but class_cond_dim = {classes!r} (train_videogpt.py:25 "
                          "sets class_cond_dim exactly when class_cond)")
    if args["attn_type"] not in ("full", "sparse"):
        raise ConfigError(f"{src}: attn_type = {args['attn_type']!r}, expected 'full' or 'sparse' (gpt.py:181-182)")
    cond_frames = _int(src, args, "n_cond_frames")
    config = VideoGPTPriorConfig(
        vqvae=str(folder), vqvae_config=json.dumps(stored),
        frames=frames, resolution=resolution, downsample=list(vq.downsample), codebook_size=vq.codebook_size,
        hidden=_int(src, args, "hidden_dim"), heads=_int(src, args, "heads"), layers=_int(src, args, "layers"),
        dropout=float(args["dropout"]), attn_dropout=float(args["attn_dropout"]),
        cond_frames=cond_frames, cond_hidden=240, cond_encoder="resnet34",  # gpt.py:36-42
        num_classes=int(classes or 0), start="learned", attention=args["attn_type"],
        sparse_block=32, sparse_local_blocks=4,  # SparseAttention defaults, attention.py:255
        layer_norm="official")
    if config.hidden % 3:
        raise ConfigError(f"{src}: hidden_dim = {config.hidden} is not a multiple of 3; the official "
                          "AddBroadcastPosEmbed asserts it (attention.py:467), so this is no official checkpoint")
    config.validate()
    return Converted(model=config, state=prior_state(src, state),
                     provenance={"format": "PyTorch Lightning .ckpt (wilson1yan/VideoGPT VideoGPT)",
                                 "hyper_parameters": {k: args[k] for k in PRIOR_ARGS},
                                 "vqvae_folder": str(folder), "not_model_settings": other,
                                 "pixel_range": "official [-0.5, 0.5] folded into the first/last layers"})
