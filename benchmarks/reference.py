"""kinema side by side with the reference PyTorch implementations (issue 31): VDM and NÜWA against lucidrains'
packages, VideoGPT, StyleGAN-V, TGANv2 and TGAN-ODE against the authors' repositories (``--official
CHECKOUT``; their side is ``benchmarks/reference_authors.py``, docs/benchmarks.md says what is matched and
which shims are used).

Per family, two kinds of rounds, each side in its own process, alternating one at a time with the order
swapped every round (so drift of a shared machine cancels in the per-round ratio kinema / reference):

1. training: one ``kinema train`` step (the real ``Trainer.fit`` loop, through ``train_speed.py --serve``:
   data, EMA, logging included; the bare objective step is timed too) against one iteration of the
   reference's training loop body (forward + backward + optimiser step on a fixed data tensor);
2. sampling: ``kinema.api.generate`` (the path of ``kinema sample``) against the reference's own sampler, the
   same number of videos per call and of network evaluations per video; seconds per video.

Peak resident set (``VmHWM``, ``train_speed.peak_rss``) is read from each of the four processes after its rounds: kinema's
training process holds the whole trainer (data set, loggers, EMA copy), the reference's only its model,
optimiser and data tensor.

References, installed from PyPI and run unmodified (nothing of them is copied into kinema):

- ``vdm``: lucidrains' ``video-diffusion-pytorch`` (``Unet3D`` + ``GaussianDiffusion``) against kinema's
  ``vdm_cpu16`` with attention at both levels, eps-prediction and no joint image frames (``FAMILIES``).
  The two U-Nets are different designs at the same widths (docs/benchmarks.md lists what differs);
  parameter counts agree within 5%.
- ``nuwa``: lucidrains' ``nuwa-pytorch`` (``NUWA`` with a ``VQGanVAE`` tokenizer) against kinema's
  ``nuwa_cpu16`` (unconditional: the encoder sees one "None" cell; the reference's text encoder gets one
  token) with lucidrains' one-sided causal 3DNA window. kinema needs a trained VQ-GAN run: one step of
  ``nuwa_vqgan_cpu16`` is trained into a temporary folder first (its weights do not change the cost).

Shims for this environment (torch 2.13 CPU), all here: ``torchvision`` is not installed (it would pin its own
torch); both packages import it at module level but use it only for data loading, image saving and VGG
perceptual loss, none of which is timed, so a stand-in module whose members raise when called is installed
before importing them (``install_torchvision_stub``). ``nuwa-pytorch`` needs ``vector-quantize-pytorch``
<= 0.10 (its ``VectorQuantize`` keyword arguments); 0.10.15 is used.

    OMP_NUM_THREADS=1 python benchmarks/reference.py --family vdm --out benchmarks/results/reference_vdm.json
    OMP_NUM_THREADS=1 python benchmarks/reference.py --family nuwa --out benchmarks/results/reference_nuwa.json
    OMP_NUM_THREADS=1 python benchmarks/reference.py --family videogpt --official VIDEOGPT_CHECKOUT \
        --out benchmarks/results/reference_videogpt.json
    OMP_NUM_THREADS=1 python benchmarks/reference.py --family stylegan_v --official STYLEGAN_V_CHECKOUT \
        --official-python SGV_VENV/bin/python --out benchmarks/results/reference_stylegan_v.json
    OMP_NUM_THREADS=1 python benchmarks/reference.py --family tganv2 --official TGAN_ODE_CHECKOUT \
        --out benchmarks/results/reference_tganv2.json
    OMP_NUM_THREADS=1 python benchmarks/reference.py --family tgan_ode --official TGAN_ODE_CHECKOUT \
        --rounds 6 --sample-rounds 3 --out benchmarks/results/reference_tgan_ode.json
    OMP_NUM_THREADS=1 python benchmarks/reference.py --family dvg --official DVG_CHECKOUT \
        --official-python DVG_VENV/bin/python --out benchmarks/results/reference_dvg.json

``tganv2`` and ``tgan_ode`` time kinema against the TGAN-ODE authors' repository
(Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation): their PyTorch TGANv2 port through
``train_speed.py --port``'s machinery (``train_speed.build_port_tganv2``: the port at ``PORT_G`` / ``PORT_D``,
the loop body of ``tganv2 UCF101.py``) and their 64x64 TGAN-ODE with the loop body of ``tgan SVC ODE lin
UCF101.py`` (``reference_authors.build_tgan_ode``).

``dvg`` times kinema's ``dvg_kth_64`` (the paper network) against shgaurav1/DVG's classes built as ``train.py``
does (``parity_dvg_official.build``), their ``train.py`` loop body and ``generate_frames.py``'s ``make_gifs``
rollout re-typed in ``reference_authors.build_dvg`` (``train.py`` is a module-level script); ``DVG_VENV`` has
gpytorch 0.3.6 (``benchmarks/parity_dvg_official.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import (  # noqa: E402
    HALF_WIDTH,
    PORT_D,
    PORT_G,
    alternate_with_kinema,
    ask,
    kinema_server,
    peak_rss,
    quit_servers,
    ratio_stats,
)

ROOT = Path(__file__).resolve().parents[1]

# family -> kinema config and overrides, batch sizes, the reference package and its constructor arguments.
# Overrides say why: each brings kinema's network or objective to the reference's where both can express it.
FAMILIES = {
    "vdm": {
        "package": "video_diffusion_pytorch",
        "config": "vdm_cpu16",
        "set": [
            "model.attention_resolutions=[16,8]",  # the reference has attention at every level and the middle
            "model.embed_channels=64",  # the reference's time embedding is 4 * dim
            'model.parameterization="eps"',  # GaussianDiffusion predicts the noise
            # its GroupNorm runs on the 5-D (B, C, T, H, W) tensor: statistics over the video's frames together
            'model.norm_statistics="video"',
            "objective.joint_image_frames=0",  # the reference trains on videos only
            "data.workers=0",
        ],
        "batch": 8,
        "sample_batch": 4,
        "sample_steps": 32,
        # Unet3D(dim, dim_mults) = kinema's base_channels, channel_mult; 2 heads of 16 channels (kinema: one
        # head per 16 channels, 1 at width 16, 2 at width 32)
        "reference": {"dim": 16, "dim_mults": [1, 2], "attn_heads": 2, "attn_dim_head": 16},
    },
    "nuwa": {
        "package": "nuwa_pytorch",
        "config": "nuwa_cpu16",
        "set": ['model.causal_window="one_sided"', "data.workers=0"],  # lucidrains' causal 3DNA window
        "vqgan_config": "nuwa_vqgan_cpu16",
        "batch": 16,
        "sample_batch": 2,
        "sample_steps": 0,  # token by token: the grid's length
        "reference": {
            "dim": 128, "heads": 4, "dim_head": 32, "enc_depth": 2, "dec_depth": 4, "frames": 16, "kernel": 3,
            # VQGanVAE at kinema's nuwa_vqgan_cpu16 widths: 32x32 frames, 3 stride-2 layers (4x4 tokens)
            "vae": {"dim": 32, "image_size": 32, "num_layers": 3, "layer_mults": [1, 2, 2], "codebook_size": 64},
        },
    },
    # --- the authors' repositories (a checkout given by --official; benchmarks/reference_authors.py)
    "videogpt": {
        "checkout": "wilson1yan/VideoGPT",
        "config": "videogpt_prior_cpu16",  # model.vqvae: the authors' VQ-VAE below, converted (prepare)
        "set": ["data.workers=0"],
        "batch": 8,
        "sample_batch": 4,
        "sample_steps": 0,  # token by token: 4x8x8 = 256
        # kinema's sampler with its key/value caches (the path of `kinema sample`), and without (the whole
        # prefix recomputed per token: model.sample(use_cache=False))
        "kinema_samplers": ["kv_cache", "no_cache"],
        "reference": {
            # VQVAE(args) at videogpt_vqvae_cpu16: 16x32x32 -> 4x8x8 codes of 128, hidden 48, 1 residual layer
            "vqvae": {"embedding_dim": 16, "n_codes": 128, "n_hiddens": 48, "n_res_layers": 1,
                      "downsample": [4, 4, 4], "sequence_length": 16, "resolution": 32},
            # VideoGPT(args) at videogpt_prior_cpu16: 96 wide, 4 heads, 4 layers, no dropout, full attention
            "prior": {"hidden_dim": 96, "heads": 4, "layers": 4, "dropout": 0.0, "attn_dropout": 0.0,
                      "attn_type": "full"},
        },
    },
    "stylegan_v": {
        "checkout": "universome/stylegan-v",
        "config": "stylegan_v_cpu16",
        # the authors' TemporalDifferenceEncoder embeds a time gap in 256 channels (layers.py:262, fixed)
        "set": ["model.dt_embed_dim=256", "data.workers=0"],
        "batch": 16,
        "sample_batch": 4,
        "sample_steps": 0,
        # parity_stylegan_v.compose_config sizes at stylegan_v_cpu16: 32x32, channels min(512 / r, 128), z = w = 64,
        # motion codes 64 every 4 frames (kernel 11), a 16-frequency time encoding (periods 4..64), 64 frames
        # max, frames concatenated in D at 8x8, fp32 (no fp16 layers, no clamp: kinema's conv_clamp = 0)
        "reference": {"resolution": 32, "fmaps": 512 / 32768, "channel_max": 128, "z_dim": 64, "w_dim": 64,
                      "motion_z_dim": 64, "motion_v_dim": 64, "kernel_size": 11, "time_enc_dim": 16,
                      "min_period_len": 4, "max_period_len": 64, "max_num_frames": 64, "concat_res": 8,
                      "mbstd_group_size": 4, "map_layers": 2, "fp32": True},
        "python": "omegaconf==2.0.6 (hydra-core 1.0.7's pin)",
    },
    # The TGAN-ODE authors' repository (Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation):
    # their PyTorch TGANv2 port, through train_speed.py --port's machinery (train_speed.build_port_tganv2)
    "tganv2": {
        "checkout": "Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation",
        "config": "tganv2_ucf101_192",
        # train_speed.DEFAULT_SETS: the half-width network of the port's constructor defaults (PORT_G / PORT_D)
        "set": [*HALF_WIDTH, "data.source=synthetic", "data.workers=0"],
        "batch": 2,  # train_speed.py --port's default (docs/benchmarks.md's port rows)
        "sample_batch": 2,
        "sample_steps": 0,
        "reference": {"gen": PORT_G, "dis": PORT_D},
    },
    # their 64x64 TGAN-ODE ("tgan SVC ODE lin UCF101.py": z through the MLP, then the RK4 ODE; WGAN + SVC)
    "tgan_ode": {
        "checkout": "Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation",
        "config": "tgan_ode",
        "set": ["data.source=synthetic", "data.workers=0"],
        "batch": 32,  # the script's batch; its VideoDiscriminator reshapes to a hard-coded 32
        "sample_batch": 8,
        "sample_steps": 0,
        "reference": {"gen": {"linear": True}, "dis": {}},
    },
    # shgaurav1/DVG: the paper network (dvg_kth_64: 64x64 grey, g_dim 90, nf 64, LSTM 2 x 256, 90 GPs of 40
    # inducing points, 5 + 10 frames) on a smaller batch; the authors' loop body is re-typed in
    # reference_authors.build_dvg with view(g_dim, batch, 1) for their hard-coded view(90, 50, 1)
    "dvg": {
        "checkout": "shgaurav1/DVG",
        "config": "dvg_kth_64",
        "set": ["data.source=synthetic", 'data.family="action_switch_digits"', "data.num_clips=64",
                "data.workers=0"],
        "batch": 8,  # the authors' 50 takes minutes a step on one thread; the view shim makes 8 possible
        "sample_batch": 8,  # = batch: the authors' LSTM is built for one batch size
        "sample_steps": 0,
        "reference": {"g_dim": 90, "rnn_size": 256, "layers": 2, "channels": 1, "inducing": 40, "nf": 64,
                      "n_past": 5, "n_future": 10,
                      # generate_frames.py:47 rolls out 105 frames, a GP draw where i % 15 == 0 (:166-175)
                      "n_eval": 105, "trigger_every": 15},
        "python": "gpytorch==0.3.6 (a venv with --system-site-packages, benchmarks/parity_dvg_official.py)",
    },
}


def install_torchvision_stub() -> None:
    """A stand-in ``torchvision`` (see the module docstring): attributes exist, calling one raises."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return  # the real one, or the stand-in installed already (its __spec__ is None: find_spec would raise)

    class Missing:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __call__(self, *args, **kwargs):
            raise RuntimeError("torchvision is not installed; the benchmark's stand-in was called")

    def member(name: str):
        if name.startswith("__"):  # module machinery (inspect asks for __file__ and the like)
            raise AttributeError(name)
        return Missing

    root = types.ModuleType("torchvision")
    root.__getattr__ = member
    root.__path__ = []  # a package: `import torchvision.transforms as T` and `from torchvision.x import y`
    sys.modules["torchvision"] = root
    for sub in ("transforms", "utils", "models", "datasets"):
        mod = types.ModuleType(f"torchvision.{sub}")
        mod.__getattr__ = member
        sys.modules[f"torchvision.{sub}"] = mod
        setattr(root, sub, mod)


def reference_available(family: str, official: str | None = None) -> bool:
    """The PyPI package is importable, or (the authors' repositories) ``official`` is a folder."""
    fam = FAMILIES[family]
    if "checkout" in fam:
        return official is not None and Path(official).is_dir()
    return importlib.util.find_spec(fam["package"]) is not None


def official_commit(official: str | Path) -> str | None:
    """The checkout's commit (``git rev-parse HEAD``), or a ``COMMIT`` file beside an archive, else None."""
    try:
        out = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True)
        if out.returncode == 0 and Path(official, ".git").exists():
            return out.stdout.strip()
    except FileNotFoundError:
        pass
    stamp = Path(official, "COMMIT")
    return stamp.read_text().strip() if stamp.is_file() else None


# --------------------------------------------------------------------------- reference servers


def build_reference(family: str, spec: dict, steps: int, frames: int, size: int, lr: float, betas, weight_decay: float):
    """``(model, step(x) -> None, sample(n) -> videos, parameters)`` of the reference at ``spec``.

    ``step`` is the body of the reference's own training loop (video-diffusion-pytorch ``Trainer.train``:
    loss, backward, optimiser step, zero_grad; its EMA starts at step 2000, so none here; nuwa-pytorch
    ``NUWATrainer.train_step``: the same with its condition dropout)."""
    install_torchvision_stub()
    if family == "vdm":
        from video_diffusion_pytorch import GaussianDiffusion, Unet3D

        unet = Unet3D(dim=spec["dim"], dim_mults=tuple(spec["dim_mults"]), attn_heads=spec["attn_heads"],
                      attn_dim_head=spec["attn_dim_head"])
        model = GaussianDiffusion(unet, image_size=size, num_frames=frames, timesteps=steps, loss_type="l2")
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)

        def step(x):
            loss = model((x + 1) / 2)  # GaussianDiffusion takes videos in [0, 1] and maps them to [-1, 1]
            loss.backward()
            opt.step()
            opt.zero_grad()

        return model, step, lambda n: model.sample(batch_size=n), sum(p.numel() for p in unet.parameters())

    from nuwa_pytorch import NUWA, VQGanVAE

    v = spec["vae"]
    vae = VQGanVAE(dim=v["dim"], image_size=v["image_size"], num_layers=v["num_layers"],
                   layer_mults=tuple(v["layer_mults"]), vq_codebook_size=v["codebook_size"],
                   # generate() decodes codebook vectors without the quantiser's output projection, so the
                   # codebook must be as wide as the encoder's last layer
                   vq_codebook_dim=v["dim"] * v["layer_mults"][-1],
                   vq_kmeans_init=False, vq_use_cosine_sim=False,  # kinema's codebook: data init, Euclidean
                   num_resnet_blocks=1, use_attn=False, resnet_groups=8,  # kinema's VQ-GAN has no attention
                   use_vgg_and_gan=False)  # only the tokenizer is used (its VGG would be downloaded)
    model = NUWA(dim=spec["dim"], vae=vae, max_video_frames=spec["frames"],
                 text_num_tokens=2, text_max_seq_len=1,  # one condition token: kinema's single "None" cell
                 text_enc_depth=spec["enc_depth"], text_enc_heads=spec["heads"], text_enc_dim_head=spec["dim_head"],
                 dec_depth=spec["dec_depth"], dec_heads=spec["heads"], dec_dim_head=spec["dim_head"],
                 sparse_3dna_kernel_size=spec["kernel"],
                 shift_video_tokens=False)  # a reference extra kinema has no counterpart for
    # Shim: NUWA.embed_text calls its text Transformer with rotary_pos_emb=..., which Transformer.forward
    # (0.7.8) does not take, so NUWA.forward and generate raise TypeError. Dropped here: the text Transformer
    # never applied it, and on the one condition token used here a rotary embedding is the identity anyway.
    text_forward = model.text_transformer.forward
    model.text_transformer.forward = lambda x, rotary_pos_emb=None, **kwargs: text_forward(x, **kwargs)
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("vae.")], lr=lr,
                            betas=betas, weight_decay=weight_decay)

    def step(x):
        video = x.permute(0, 2, 1, 3, 4)  # (B, C, T, H, W) -> the reference's (B, T, C, H, W)
        text = torch.ones(len(x), 1, dtype=torch.long)
        loss = model(text=text, video=video, return_loss=True, cond_dropout_prob=0.1)  # kinema's cond_drop_prob
        loss.backward()
        opt.step()
        opt.zero_grad()

    def sample(n):
        # no guidance, no top-k: kinema's nuwa_cpu16 defaults (guidance 1, top_k 0)
        return model.generate(text=torch.ones(n, 1, dtype=torch.long), filter_thres=0.0, temperature=1.0,
                              cond_scale=1.0, num_frames=spec["frames"])

    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("vae."))
    return model, step, sample, params


def serve_reference(args) -> None:
    """Server: ``step`` (one training iteration on the data tensor ``args.data``) or ``sample`` (seconds per
    video of one call for ``args.sample_batch`` videos), and ``rss``; the first line gives the parameters."""
    fam = FAMILIES[args.family]
    x = torch.load(args.data)
    torch.manual_seed(0)
    if "checkout" in fam:
        import reference_authors

        build = getattr(reference_authors, f"build_{args.family}")
        model, step_once, sample, params = build(Path(args.official), fam["reference"], Path(args.work), x)
        step = lambda _x: step_once()  # noqa: E731  (the builder holds the data tensor in its own layout)
    else:
        model, step, sample, params = build_reference(args.family, fam["reference"], args.sample_steps, x.shape[2],
                                                      x.shape[-1], args.lr, tuple(args.betas), args.weight_decay)
    model.train(args.serve_reference == "train")
    print(json.dumps({"parameters": params}), flush=True)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    while True:
        line = sys.stdin.readline().strip()
        if line == "step":
            print(json.dumps({"s": timed(lambda: step(x))}), flush=True)
        elif line == "sample":
            print(json.dumps({"s": timed(lambda: sample(args.sample_batch)) / args.sample_batch}), flush=True)
        elif line == "rss":
            print(json.dumps({"rss": peak_rss()}), flush=True)
        else:
            return


# --------------------------------------------------------------------------- kinema sampling server


def sample_options(family: str, steps: int, data: str | None = None) -> dict:
    # the reference's sampler: ancestral DDPM over all its timesteps (VDM); NÜWA: the config's. DVG: the
    # futures of the data tensor's clips (`kinema sample --condition`'s path with the clips as a tensor), as
    # many frames as generate_frames.py rolls out, a GP draw every 15th frame index as its make_gifs
    if family == "vdm":
        return {"sampler": "ancestral", "steps": steps}
    if family == "dvg":
        ref = FAMILIES["dvg"]["reference"]
        return {"context": torch.load(data), "frames": ref["n_eval"] - ref["n_past"], "trigger": "every_k",
                "trigger_every": ref["trigger_every"]}
    return {}


def kinema_samplers(family: str, model, steps: int, data: str | None = None) -> dict:
    """name -> ``fn(n)`` sampling ``n`` videos. The first is ``kinema.api.generate`` (what ``kinema sample``
    runs); VideoGPT adds its prior without key/value caches."""
    from kinema import api

    options = sample_options(family, steps, data)
    out = {"kinema": lambda n: api.generate(model, n, seed=0, batch_size=n, **options)}
    if "no_cache" in FAMILIES[family].get("kinema_samplers", []):
        out["kinema_no_cache"] = lambda n: model.sample(model.sample_noise(n, torch.Generator().manual_seed(0)),
                                                        use_cache=False)
    return out


def serve_kinema_sample(args) -> None:
    """Server: ``sample`` -> seconds per video of ``kinema.api.generate`` for ``args.sample_batch`` videos."""
    from kinema.registry import build_model, load_config

    cfg = load_config(args.config, args.set)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).eval()
    counts = model.parameter_counts()
    trained = counts.get("transformer (trained)", counts.get("total"))
    if {"generator", "discriminator"} <= set(counts):  # GANs: per network, named as the reference's
        trained = {"G": counts["generator"], "D": counts["discriminator"]}
    samplers = kinema_samplers(args.family, model, args.sample_steps, args.data)
    print(json.dumps({"parameters": trained, "counts": counts, "samplers": list(samplers)}), flush=True)
    n = args.sample_batch
    while True:
        words = sys.stdin.readline().split()
        line = words[0] if words else ""
        if line == "sample":
            t = time.perf_counter()
            samplers[words[1] if len(words) > 1 else "kinema"](n)
            print(json.dumps({"s": (time.perf_counter() - t) / n}), flush=True)
        elif line == "rss":
            print(json.dumps({"rss": peak_rss()}), flush=True)
        else:
            return


# --------------------------------------------------------------------------- the run


def prepare(args, work: Path) -> Path:
    """kinema's overrides completed (NÜWA: a one-step VQ-GAN run) and the reference's data tensor: the first
    batch of the config's synthetic clips, ``(B, C, T, H, W)`` in [-1, 1], saved for the reference server."""
    from kinema.data import Draws, build_dataset
    from kinema.registry import load_config

    fam = FAMILIES[args.family]
    if "checkout" in fam:
        import reference_authors

        prepare_family = getattr(reference_authors, f"prepare_{args.family}", None)
        if prepare_family is not None:
            args.set.extend(prepare_family(Path(args.official), fam["reference"], work))
    if "vqgan_config" in fam:
        vq = work / "vqgan"
        cmd = [sys.executable, "-m", "kinema", "--threads", "1", "train", "--config", fam["vqgan_config"], "--out",
               str(vq), "--steps", "1", "--no-progress", "--set", "data.workers=0", "--set", "train.num_samples=1"]
        subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL)
        args.set.append(f'model.vqgan="{vq}"')
    cfg = load_config(args.config, args.set)
    m = cfg.model
    draws = Draws(build_dataset(cfg.data, frames=m.frames, height=m.resolution, width=m.resolution, seed=0))
    x = torch.stack([draws[i] for i in range(args.batch)])
    path = work / "data.pt"
    torch.save(x, path)
    return path


def reference_server(args, mode: str, data: Path) -> tuple[subprocess.Popen, dict]:
    here = Path(__file__).resolve()
    python = args.official_python or sys.executable
    cmd = [python, str(here), "--serve-reference", mode, "--family", args.family, "--data", str(data),
           "--threads", str(args.threads), "--sample-batch", str(args.sample_batch),
           "--sample-steps", str(args.sample_steps), "--lr", str(args.lr), "--weight-decay", str(args.weight_decay),
           "--betas", *map(str, args.betas), "--work", str(data.parent)]
    if args.official:
        cmd += ["--official", str(args.official)]
    # PYTHONPATH left as it is: the reference process imports nothing of kinema. tqdm reads TQDM_DISABLE when
    # it is imported (torch may import it first): the references' sampling loops draw progress bars.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, TQDM_DISABLE="1"))
    return proc, json.loads(proc.stdout.readline())


def kinema_sample_server(args, data: Path) -> tuple[subprocess.Popen, dict]:
    here = Path(__file__).resolve()
    cmd = [sys.executable, str(here), "--serve-kinema-sample", "--family", args.family, "--config", args.config,
           "--threads", str(args.threads), "--sample-batch", str(args.sample_batch),
           "--sample-steps", str(args.sample_steps), "--data", str(data)]
    for s in args.set:
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return proc, json.loads(proc.stdout.readline())


def alternate(fns: dict, rounds: int) -> list[dict]:
    """``rounds`` rounds of every ``fns[name]()`` (seconds), in the dict's order in even rounds and the reverse
    order in odd ones."""
    out = []
    for r in range(rounds):
        got = {}
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            got[name] = fns[name]()
        print(f"sampling round {r}: " + ", ".join(f"{k} {v:.3f}" for k, v in got.items()) + " s/video",
              file=sys.stderr)
        out.append(got)
    return out


def run(args) -> dict:
    fam = FAMILIES[args.family]
    if not reference_available(args.family, args.official):
        if "checkout" in fam:
            raise SystemExit(f"--official: a checkout of github.com/{fam['checkout']} is needed (got {args.official})")
        raise SystemExit(f"the reference package {fam['package']} is not installed: pip install --no-deps "
                         f"{fam['package'].replace('_', '-')} (docs/benchmarks.md lists its dependencies)")
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(args, Path(tmp))
        # training: kinema's trainer loop against the reference's loop body
        ref, ref_info = reference_server(args, "train", data)
        print("reference", ref_info, file=sys.stderr)
        kin = kinema_server(args)
        rounds = alternate_with_kinema(kin, "reference", lambda: ask(ref, "step")["s"], args.warmup + args.rounds)
        train = {k: [got[k] for got in rounds[args.warmup:]] for k in ("kinema_bare", "kinema_cli", "reference")}
        train_rss = {"kinema": ask(kin, "rss")["rss"], "reference": ask(ref, "rss")["rss"]}
        quit_servers(kin, ref)
        # sampling: kinema.api.generate against the reference's sampler, fresh processes
        ref, _ = reference_server(args, "sample", data)
        kin, kin_info = kinema_sample_server(args, data)
        fns = {name: (lambda name=name: ask(kin, f"sample {name}")["s"]) for name in kin_info["samplers"]}
        fns["reference"] = lambda: ask(ref, "sample")["s"]
        sample_rounds = alternate(fns, args.sample_warmup + args.sample_rounds)[args.sample_warmup:]
        sample_rss = {"kinema": ask(kin, "rss")["rss"], "reference": ask(ref, "rss")["rss"]}
        quit_servers(kin, ref)
    kin_sample = [got["kinema"] for got in sample_rounds]
    ref_sample = [got["reference"] for got in sample_rounds]
    params = {"kinema": kin_info["parameters"], "reference": ref_info["parameters"]}
    if isinstance(params["reference"], dict):  # GANs: per network
        ratio = {k: params["kinema"][k] / v for k, v in params["reference"].items()}
    else:
        ratio = params["kinema"] / params["reference"]
    if "checkout" in fam:
        origin = {"reference_repository": fam["checkout"], "reference_commit": official_commit(args.official),
                  "reference_python": args.official_python or sys.executable}
    else:
        origin = {"reference_package": fam["package"], "reference_version": _version(fam["package"])}
    record = {
        "family": args.family, **origin, "config": args.config,
        "set": [v.replace(tmp, "<work>") for v in args.set],  # the run's temporary folder
        "reference_args": fam["reference"], "batch": args.batch, "threads": args.threads, "torch": torch.__version__,
        "parameters": params, "parameter_ratio": ratio,
        "kinema_parameter_counts": kin_info["counts"],
        "rounds": args.rounds, "warmup": args.warmup, "sample_rounds": args.sample_rounds,
        "sample_batch": args.sample_batch, "sample_steps": args.sample_steps or None,
        "train_kinema_cli_s": train["kinema_cli"], "train_kinema_bare_s": train["kinema_bare"],
        "train_reference_s": train["reference"],
        "train_kinema_cli_over_reference": ratio_stats([a / b for a, b in zip(train["kinema_cli"], train["reference"])]),
        "train_kinema_bare_over_reference": ratio_stats([a / b for a, b in zip(train["kinema_bare"],
                                                                               train["reference"])]),
        "sample_kinema_s_per_video": kin_sample, "sample_reference_s_per_video": ref_sample,
        "sample_kinema_over_reference": ratio_stats([a / b for a, b in zip(kin_sample, ref_sample)]),
        **{f"sample_{name}_s_per_video": [got[name] for got in sample_rounds]
           for name in kin_info["samplers"] if name != "kinema"},
        **{f"sample_{name}_over_reference": ratio_stats([got[name] / got["reference"] for got in sample_rounds])
           for name in kin_info["samplers"] if name != "kinema"},
        "peak_rss_bytes": {"train": train_rss, "sample": sample_rss},
        "command": "python benchmarks/reference.py " + " ".join(args.argv),
    }
    for k, v in (("train_kinema_cli", train["kinema_cli"]), ("train_kinema_bare", train["kinema_bare"]),
                 ("train_reference", train["reference"]), ("sample_kinema", kin_sample),
                 ("sample_reference", ref_sample)):
        record[f"{k}_median_s"] = statistics.median(v)
    return record


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return None


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(FAMILIES), required=True)
    ap.add_argument("--rounds", type=int, default=6, help="timed training rounds (default 6)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed training rounds first (default 1)")
    ap.add_argument("--sample-rounds", type=int, default=3, help="timed sampling rounds (default 3)")
    ap.add_argument("--sample-warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, help="training batch (default: the family's)")
    ap.add_argument("--sample-batch", type=int, help="videos per sampling call (default: the family's)")
    ap.add_argument("--sample-steps", type=int,
                    help="VDM: denoising steps of both samplers = the reference's timesteps (default 32)")
    ap.add_argument("--set", action="append", default=[], help="extra kinema config override (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every process (default 1)")
    ap.add_argument("--out", help="write the JSON record here")
    ap.add_argument("--official", help="the authors' repositories (videogpt, stylegan_v, tganv2, tgan_ode, dvg): a "
                    "checkout of it, run unmodified")
    ap.add_argument("--official-python",
                    help="the Python that runs the authors' code (a venv with its old pins); default: this one")
    # for the servers
    ap.add_argument("--serve-reference", choices=["train", "sample"], help=argparse.SUPPRESS)
    ap.add_argument("--serve-kinema-sample", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--betas", type=float, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--weight-decay", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    fam = FAMILIES[args.family]
    args.config = args.config or fam["config"]
    args.batch = args.batch or fam["batch"]
    args.sample_batch = args.sample_batch or fam["sample_batch"]
    args.sample_steps = fam["sample_steps"] if args.sample_steps is None else args.sample_steps
    if not (args.serve_reference or args.serve_kinema_sample):
        args.set = [*fam["set"], *args.set]
    # what train_speed's kinema server reads
    args.device, args.precision = "cpu", "fp32"
    if args.family == "vdm" and not (args.serve_reference or args.serve_kinema_sample):
        args.set.append(f"model.sampling_steps={args.sample_steps}")
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.serve_reference:
        serve_reference(args)
        return None
    if args.serve_kinema_sample:
        serve_kinema_sample(args)
        return None
    if args.lr is None:  # the reference trains with kinema's optimiser settings
        from kinema.registry import load_config

        train = load_config(args.config, args.set).train
        args.lr, args.betas, args.weight_decay = train.lr, list(train.betas), train.weight_decay
    record = run(args)
    print(json.dumps(record, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
