"""VideoGPT output parity: the authors' VQ-VAE and transformer (wilson1yan/VideoGPT) against kinema's.

    OMP_NUM_THREADS=1 python benchmarks/parity.py --family videogpt --official VIDEOGPT_CHECKOUT \\
        [--config tiny|paper] [--fixture tests/fixtures/parity/videogpt]

What it does (``run``):

1. Imports ``videogpt`` from the unmodified checkout ``--official`` (sys.path; nothing copied into kinema),
   with the shims below standing in for its 2021 pins.
2. Builds the arguments as the official scripts do (``scripts/train_vqvae.py`` / ``train_videogpt.py``:
   ``pl.Trainer.add_argparse_args`` + ``add_model_specific_args`` + the scripts' data arguments), seeds, builds
   ``VQVAE(args)``, runs two training-mode forwards on random videos (the official data-dependent codebook
   initialisation, one EMA update and moved batch-norm statistics: buffers worth converting), and saves the
   ``.ckpt`` as Lightning 1.3.3's ``ModelCheckpoint`` does (``dump_checkpoint`` + ``atomic_save``:
   ``torch.save`` of epoch, global_step, pytorch-lightning_version, state_dict, callbacks keyed by the
   ``ModelCheckpoint`` class, optimizer_states, lr_schedulers, hparams_name, hyper_parameters = {"args": Namespace}).
   Then ``VideoGPT(args)`` priors on that VQ-VAE (which the official loads with ``VQVAE.load_from_checkpoint``),
   with random weights (the zero-initialised ``fc_out`` replaced by ``randn * 0.02``, through the official
   parameter, so the logits are not all zero), saved the same way.
3. ``kinema convert videogpt_vqvae`` / ``videogpt_prior --first-stage`` (kinema.api.convert) and ``kinema.load``.
4. Same inputs: a video ``x`` in the official range [-0.5, 0.5] is fed to the official models, ``2 x`` to
   kinema's; codes; class labels; conditioning frames (``x[:, :, :n]``, resp. ``2 x[:, :, :n]``).
   Compared: pre-quantisation latents, code indices (count of differing codes), reconstruction of the
   official codes (kinema's / 2), ``forward`` reconstruction, and the transformer's next-token logits:
   official full forward (full attention only: the official sparse full pass needs DeepSpeed's CUDA
   kernels) and official fast decoding (``decode_step``/``decode_idx``, teacher-forced with the same codes;
   for sparse attention this is the official masked-dense path, ``get_non_block_layout_row``), against
   kinema's full forward (``model.logits``) and kinema's KV-cached ``transformer.step``.

Shims (the official code is not modified; these stand in for packages it imports at module top):

- ``pytorch_lightning``: ``LightningModule`` = ``nn.Module`` + ``save_hyperparameters()`` (Lightning 1.3.3's
  rule for a lone ``args``: ``hparams = {"args": args}``) + ``load_from_checkpoint`` (rebuild from
  ``hyper_parameters``, strict ``load_state_dict``) + ``log`` (no-op); ``Trainer.add_argparse_args`` (the
  Lightning 1.3.3 ``Trainer.__init__`` arguments of type str/int/float/bool with their defaults, listed
  below); ``callbacks.ModelCheckpoint`` (pickled under its real path, as in a real checkpoint);
  ``seed_everything``; ``LightningDataModule`` (an empty base class for ``data.py``'s ``VideoData``).
- ``gdown``, ``h5py``, ``torchvision.datasets.video_utils.VideoClips``: empty stand-ins; only
  ``download.py`` and ``data.py`` use them, never on this path.
- No DeepSpeed: the official ``SparseAttention`` full pass is not run (see above).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

Row = tuple

# Lightning 1.3.3 pl.Trainer.add_argparse_args: name -> default (Trainer.__init__, str/int/float/bool types).
PL_133_TRAINER_ARGS = {
    'logger': True, 'checkpoint_callback': True, 'default_root_dir': None, 'gradient_clip_val': 0.0,
    'gradient_clip_algorithm': 'norm', 'process_position': 0, 'num_nodes': 1, 'num_processes': 1, 'gpus': None,
    'auto_select_gpus': False, 'tpu_cores': None, 'log_gpu_memory': None, 'progress_bar_refresh_rate': None,
    'overfit_batches': 0.0, 'track_grad_norm': -1, 'check_val_every_n_epoch': 1, 'fast_dev_run': False,
    'accumulate_grad_batches': 1, 'max_epochs': None, 'min_epochs': None, 'max_steps': None, 'min_steps': None,
    'max_time': None, 'limit_train_batches': 1.0, 'limit_val_batches': 1.0, 'limit_test_batches': 1.0,
    'limit_predict_batches': 1.0, 'val_check_interval': 1.0, 'flush_logs_every_n_steps': 100,
    'log_every_n_steps': 50, 'accelerator': None, 'sync_batchnorm': False, 'precision': 32,
    'weights_summary': 'top', 'weights_save_path': None, 'num_sanity_val_steps': 2, 'truncated_bptt_steps': None,
    'resume_from_checkpoint': None, 'profiler': None, 'benchmark': False, 'deterministic': False,
    'reload_dataloaders_every_epoch': False, 'auto_lr_find': False, 'replace_sampler_ddp': True,
    'terminate_on_nan': False, 'auto_scale_batch_size': False, 'prepare_data_per_node': True, 'plugins': None,
    'amp_backend': 'native', 'amp_level': 'O2', 'distributed_backend': None, 'move_metrics_to_cpu': False,
    'multiple_trainloader_mode': 'max_size_cycle', 'stochastic_weight_avg': False,
}

# vqvae: official VQVAE args; priors: official VideoGPT args (+ n_classes for class_cond); batch: clips compared;
# decode_positions: how many positions the official fast decoding runs (None: all).
CONFIGS = {
    "tiny": {
        # 4x32x32 clips -> 4x8x8 codes (256 positions: 8 sparse blocks, so the strided links matter); one
        # downsampling stage does not build in the official code (vqvae.py:219-224, conv_last gets 3 input channels)
        "vqvae": dict(embedding_dim=8, n_codes=32, n_hiddens=8, n_res_layers=1, downsample=[1, 4, 4],
                      sequence_length=4, resolution=32),
        "priors": {  # "full" has 1 layer: FullAttention saves its 256x256 causal mask per layer (fixture size)
            "full": dict(hidden_dim=24, heads=2, layers=1, attn_type="full", n_cond_frames=0, n_classes=0),
            "sparse_class": dict(hidden_dim=24, heads=2, layers=2, attn_type="sparse", n_cond_frames=0, n_classes=3),
            "full_frame": dict(hidden_dim=24, heads=2, layers=2, attn_type="full", n_cond_frames=1, n_classes=0),
        },
        "fixture_priors": ("full", "sparse_class"),  # the frame prior carries the 35M-parameter ResNet-34
        "batch": 2, "decode_positions": None,
    },
    # download.py's bair_stride4x2x2 VQ-VAE layout (16x64x64 -> 4x32x32; 1024 codes, paper Table 8) and a
    # bair_gpt-style prior: 1 conditioning frame, sparse attention (README.md:114-116), the official code's
    # transformer defaults 576 / 4 heads / 8 layers (gpt.py:177-179; the paper's 512 does not build in the
    # official code: attention.py:467).
    "paper": {
        "vqvae": dict(embedding_dim=256, n_codes=1024, n_hiddens=240, n_res_layers=4, downsample=[4, 2, 2],
                      sequence_length=16, resolution=64),
        "priors": {"bair_gpt": dict(hidden_dim=576, heads=4, layers=8, attn_type="sparse", n_cond_frames=1,
                                    n_classes=0)},
        "fixture_priors": (),
        "batch": 1, "decode_positions": 1280,  # past frame 1 (1024 positions): the strided links are exercised
    },
    # download.py's ucf101_stride4x4x4 VQ-VAE layout (16x128x128 -> 4x32x32, 1024 codes) and a ucf101_uncond_gpt-
    # style prior (unconditional, sparse; the code's default size: the paper's 1024 wide does not build in the
    # official code). "light": the forward-reconstruction row (a second encoder + decoder pass) is skipped.
    "ucf101": {
        "vqvae": dict(embedding_dim=256, n_codes=1024, n_hiddens=240, n_res_layers=4, downsample=[4, 4, 4],
                      sequence_length=16, resolution=128),
        "priors": {"ucf101_uncond_gpt": dict(hidden_dim=576, heads=4, layers=8, attn_type="sparse", n_cond_frames=0,
                                             n_classes=0)},
        "fixture_priors": (),
        "batch": 1, "decode_positions": 1280, "light": True,
    },
}


# --------------------------------------------------------------------------- shims


class _AttributeDict(dict):
    def __getattr__(self, key):
        return self[key]


def install_shims() -> None:
    """Stand-in modules for the official code's imports (listed in the module docstring)."""
    if "pytorch_lightning" in sys.modules and getattr(sys.modules["pytorch_lightning"], "_kinema_shim", False):
        return
    pl = types.ModuleType("pytorch_lightning")
    pl._kinema_shim = True
    pl.__version__ = "1.3.3"

    class LightningModule(torch.nn.Module):
        def save_hyperparameters(self):  # Lightning 1.3.3: a lone Namespace argument -> {"args": args}
            frame = inspect.currentframe().f_back
            init_args = {k: v for k, v in frame.f_locals.items() if k not in ("self", "__class__")
                         and k in inspect.signature(type(self).__init__).parameters}
            self._hparams = _AttributeDict(init_args)
            self._hparams_name = "kwargs"

        @property
        def hparams(self):
            return self._hparams

        def log(self, *args, **kwargs):
            pass

        @classmethod
        def load_from_checkpoint(cls, path, map_location="cpu"):
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
            model = cls(**ckpt["hyper_parameters"])
            model.load_state_dict(ckpt["state_dict"])
            return model

    class Trainer:
        @staticmethod
        def add_argparse_args(parser):
            group = parser.add_argument_group("pl.Trainer")
            for name, default in PL_133_TRAINER_ARGS.items():
                group.add_argument(f"--{name}", default=default)
            return parser

    callbacks = types.ModuleType("pytorch_lightning.callbacks")
    model_checkpoint = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self, monitor=None, mode="min", save_top_k=1):
            self.monitor, self.mode, self.save_top_k = monitor, mode, save_top_k

    ModelCheckpoint.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    model_checkpoint.ModelCheckpoint = callbacks.ModelCheckpoint = ModelCheckpoint
    pl.LightningModule, pl.Trainer, pl.callbacks = LightningModule, Trainer, callbacks
    pl.LightningDataModule = type("LightningDataModule", (), {})  # data.py's base class (unused here)
    pl.seed_everything = lambda seed: torch.manual_seed(seed)
    sys.modules.update({"pytorch_lightning": pl, "pytorch_lightning.callbacks": callbacks,
                        "pytorch_lightning.callbacks.model_checkpoint": model_checkpoint})
    for name in ("gdown", "h5py"):
        sys.modules.setdefault(name, types.ModuleType(name))
    try:
        import torchvision.datasets.video_utils  # noqa: F401
    except ImportError:
        for name in ("torchvision", "torchvision.datasets", "torchvision.datasets.video_utils"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["torchvision.datasets.video_utils"].VideoClips = object


def import_official(official: Path):
    install_shims()
    sys.path.insert(0, str(official))
    import videogpt  # noqa: F401  (the checkout's package)
    from videogpt.gpt import VideoGPT
    from videogpt.vqvae import VQVAE

    if not str(Path(sys.modules["videogpt"].__file__).resolve()).startswith(str(official.resolve())):
        raise RuntimeError(f"imported videogpt from {sys.modules['videogpt'].__file__}, not from {official}")
    return VQVAE, VideoGPT


def official_commit(official: Path) -> str:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "733d2b1 (archive of wilson1yan/VideoGPT HEAD; not a git work tree)"


# --------------------------------------------------------------------------- the authors' side


def script_args(model_cls, extra: list[str], data: dict) -> argparse.Namespace:
    """The Namespace scripts/train_*.py build: Trainer args + model args + the script's data args."""
    parser = argparse.ArgumentParser()
    parser = sys.modules["pytorch_lightning"].Trainer.add_argparse_args(parser)
    parser = model_cls.add_model_specific_args(parser)
    for name, default in data.items():
        parser.add_argument(f"--{name}", type=type(default) if default is not None else str, default=default)
    return parser.parse_args(extra)


def save_lightning_ckpt(model, path: Path, optimizer, scheduler=None, step: int = 2) -> None:
    """Lightning 1.3.3 ``CheckpointConnector.dump_checkpoint`` + ``atomic_save`` (torch.save)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    ckpt = {
        "epoch": 1, "global_step": step, "pytorch-lightning_version": "1.3.3", "state_dict": model.state_dict(),
        "callbacks": {ModelCheckpoint: {"monitor": "val/recon_loss", "best_model_score": torch.tensor(0.5),
                                        "best_model_path": str(path), "current_score": torch.tensor(0.5),
                                        "dirpath": str(path.parent)}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()] if scheduler is not None else [],
        "hparams_name": model._hparams_name,
        "hyper_parameters": dict(model.hparams),
    }
    torch.save(ckpt, path)


def build_official_vqvae(VQVAE, cfg: dict, work: Path, seed: int):
    v = cfg
    args = script_args(VQVAE, ["--embedding_dim", str(v["embedding_dim"]), "--n_codes", str(v["n_codes"]),
                               "--n_hiddens", str(v["n_hiddens"]), "--n_res_layers", str(v["n_res_layers"]),
                               "--downsample", *map(str, v["downsample"]),
                               "--sequence_length", str(v["sequence_length"]), "--resolution", str(v["resolution"])],
                       {"data_path": "/home/wilson/data/datasets/bair.hdf5", "sequence_length": 16,
                        "resolution": 64, "batch_size": 32, "num_workers": 8})  # train_vqvae.py:14-18
    torch.manual_seed(seed)
    model = VQVAE(args)
    model.train()
    shape = (1 if v["resolution"] > 64 else 2, 3, v["sequence_length"], v["resolution"], v["resolution"])
    with torch.no_grad():  # data-dependent codebook init + one EMA update; batch-norm statistics move
        for _ in range(2):
            model(torch.rand(shape) - 0.5)
    model.eval()
    path = work / "official_vqvae.ckpt"
    save_lightning_ckpt(model, path, torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.999)))
    return model, path


def build_official_prior(VideoGPT, cfg: dict, vq_path: Path, vq: dict, work: Path, name: str, seed: int):
    extra = ["--vqvae", str(vq_path), "--hidden_dim", str(cfg["hidden_dim"]), "--heads", str(cfg["heads"]),
             "--layers", str(cfg["layers"]), "--attn_type", cfg["attn_type"],
             "--n_cond_frames", str(cfg["n_cond_frames"]), "--max_steps", "200000",
             "--sequence_length", str(vq["sequence_length"]), "--resolution", str(vq["resolution"]),
             "--data_path", "datasets/bair.hdf5"]
    if cfg["n_classes"]:
        extra.append("--class_cond")
    args = script_args(VideoGPT, extra, {"data_path": "", "resolution": 128, "sequence_length": 16,
                                         "batch_size": 8, "num_workers": 8})  # train_videogpt.py:14-19
    args.max_steps = int(args.max_steps)
    args.class_cond_dim = cfg["n_classes"] if args.class_cond else None  # train_videogpt.py:25
    torch.manual_seed(seed)
    model = VideoGPT(args)
    with torch.no_grad():  # official init zeroes fc_out (gpt.py:63-64): random values make the logits informative
        model.fc_out.weight.normal_(std=0.02)
        for module in model.modules():  # class-conditional norms: the official init gives w = const, wb = 0
            if hasattr(module, "wb"):
                module.wb.weight.normal_(std=0.1)
                module.w.weight.normal_(std=0.1)
    model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.max_steps)
    path = work / f"official_prior_{name}.ckpt"
    save_lightning_ckpt(model, path, optimizer, scheduler)
    return model, path


def official_decode_logits(model, codes: torch.Tensor, cond: dict, positions: int | None) -> torch.Tensor:
    """Official fast decoding (VideoGPT.sample, gpt.py:85-114) teacher-forced with ``codes (B, t, h, w)``:
    logits ``(B, P, K)`` of the first ``positions`` positions."""
    import itertools

    shape = tuple(codes.shape[1:])
    idxs = list(itertools.product(*[range(s) for s in shape]))[:positions]
    embeddings = model.vqvae.codebook.dictionary_lookup(codes)
    out, prev_idx = [], None
    with torch.no_grad():
        for i, idx in enumerate(idxs):
            batch_idx_slice = (slice(None, None), *[slice(j, j + 1) for j in idx])
            sl = batch_idx_slice if prev_idx is None else prev_idx
            logits = model(embeddings[sl], codes[sl], cond, decode_step=i, decode_idx=idx)[1]
            out.append(logits.reshape(len(codes), -1))
            prev_idx = batch_idx_slice
    return torch.stack(out, 1)


# --------------------------------------------------------------------------- comparison


def diff(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> Row:
    ours, theirs = ours.detach().double(), theirs.detach().double()
    if ours.shape != theirs.shape:
        raise AssertionError(f"{name}: kinema {tuple(ours.shape)} vs official {tuple(theirs.shape)}")
    abs_diff = (ours - theirs).abs().max().item()
    return (name, abs_diff, abs_diff / max(theirs.abs().max().item(), 1e-30), tuple(theirs.shape))


def count(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> Row:
    """Integer outputs: the fraction of differing entries (a relative figure comparable with the others)."""
    wrong = (ours != theirs).sum().item()
    return (f"{name} (differing: {wrong})", float(wrong), wrong / ours.numel(), tuple(theirs.shape))


def run(official: Path, config: str, work: Path, fixture: Path | None, seed: int) -> list[Row]:
    from kinema.api import convert, load
    from kinema.foreign import ConvertOptions  # noqa: F401  (api.convert builds it)

    torch.set_num_threads(1)
    cfg = CONFIGS[config]
    VQVAE, VideoGPT = import_official(official)
    vq_cfg = cfg["vqvae"]
    off_vq, vq_path = build_official_vqvae(VQVAE, vq_cfg, work, seed)
    vq_dir = convert("videogpt_vqvae", vq_path, work / "kinema_vqvae")
    k_vq = load(vq_dir)[0]

    g = torch.Generator().manual_seed(seed + 1)
    b, t, r = cfg["batch"], vq_cfg["sequence_length"], vq_cfg["resolution"]
    pixels = torch.randint(0, 256, (b, 3, t, r, r), generator=g, dtype=torch.uint8)
    video = pixels.float() / 255 - 0.5  # official range, as data.py:80, :104 maps uint8 frames
    rows: list[Row] = []
    with torch.no_grad():
        off_latents = off_vq.pre_vq_conv(off_vq.encoder(video))
        off_codes = off_vq.encode(video)
        off_recon = off_vq.decode(off_codes)
        off_forward = None if cfg.get("light") else off_vq(video)[1]
        k_latents = k_vq.encode_latents(2 * video)
        k_codes = k_vq.encode(2 * video)
        rows += [diff("vqvae pre-quantisation latents", k_latents, off_latents),
                 count("vqvae codes", k_codes, off_codes),
                 diff("vqvae decode(official codes) / 2", k_vq.decode(off_codes) / 2, off_recon)]
        if off_forward is not None:
            rows.append(diff("vqvae forward reconstruction / 2", k_vq(2 * video)["reconstruction"] / 2, off_forward))
    fixture_data = {"pixels": pixels, "codes": off_codes, "latents": off_latents, "reconstruction": off_recon}
    fixture_files = {"official_vqvae.ckpt": vq_path}

    for name, pcfg in cfg["priors"].items():
        off, path = build_official_prior(VideoGPT, pcfg, vq_path, vq_cfg, work, name, seed + 10)
        prior_dir = convert("videogpt_prior", path, work / f"kinema_prior_{name}", first_stage=str(vq_dir))
        k = load(prior_dir)[0]
        n, classes = pcfg["n_cond_frames"], pcfg["n_classes"]
        labels = torch.arange(b) % classes if classes else None
        cond = lambda: ({"class_cond": F.one_hot(labels, classes).float()} if classes else {}) | \
            ({"frame_cond": video[:, :, :n]} if n else {})  # noqa: E731
        frames = 2 * video[:, :, :n] if n else None
        codes = off_codes
        flat = codes.flatten(1)
        with torch.no_grad():
            k_full = k.logits(flat, frames, labels)
            positions = cfg["decode_positions"] or flat.shape[1]
            dec = official_decode_logits(off, codes, cond(), positions)
            rows.append(diff(f"prior {name}: logits, kinema full vs official decoding", k_full[:, :positions], dec))
            caches = k.transformer.new_caches(b)
            onehot, kcond = k._onehot(labels, b), k._cond(frames, b)
            table = k.vqvae.codebook.embeddings
            steps = [k.transformer.step(table[flat[:, p - 1]] if p else None, p, caches, onehot, kcond)
                     for p in range(positions)]
            rows.append(diff(f"prior {name}: logits, kinema KV-cached vs official decoding", torch.stack(steps, 1), dec))
            if pcfg["attn_type"] == "full":
                off_full = off(off_vq.codebook.dictionary_lookup(codes), codes, cond())[1]
                rows.append(diff(f"prior {name}: logits, kinema full vs official full", k_full,
                                 off_full.reshape(b, flat.shape[1], -1)))
            if name in cfg["fixture_priors"]:
                fixture_data[f"logits_{name}"] = off_full.reshape(b, flat.shape[1], -1) \
                    if pcfg["attn_type"] == "full" else dec
        if name in cfg["fixture_priors"]:
            fixture_files[f"official_prior_{name}.ckpt"] = path
            if labels is not None:
                fixture_data[f"labels_{name}"] = labels
    if fixture is not None:
        write_fixture(fixture, fixture_files, fixture_data, config, official, seed)
    return rows


def write_fixture(fixture: Path, files: dict, data: dict, config: str, official: Path, seed: int) -> None:
    import shutil

    from safetensors.torch import save_file

    fixture.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        shutil.copyfile(path, fixture / name)
    save_file({k: v.contiguous() for k, v in data.items()}, fixture / "official_outputs.safetensors")
    print(f"fixture written to {fixture} (config {config}, seed {seed}, official {official_commit(official)})")
