"""The authors' side of ``benchmarks/reference.py`` for the families whose reference is the authors' own
repository (VideoGPT, StyleGAN-V, DVG, ...): each model is built from an unmodified checkout with the
loading code and shims of the family's parity script (``benchmarks/parity_<family>*.py``, imported here, not
duplicated), and timed through the body of the training loop its repository runs.

Per family two functions:

- ``prepare_<family>(official, spec, work) -> list[str]``: runs once in the driver process before the
  servers start; writes whatever both sides need into ``work`` (e.g. the authors' VQ-VAE checkpoint and its
  ``kinema convert`` output) and returns extra kinema config overrides;
- ``build_<family>(official, spec, work, x) -> (model, step, sample, parameters)`` in the reference server:
  ``step()`` one training iteration on the data tensor ``x`` (kinema's ``(B, C, T, H, W)`` in [-1, 1], mapped
  to the authors' layout and range here), ``sample(n)`` ``n`` videos by the authors' sampler.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


# --------------------------------------------------------------------------- VideoGPT (wilson1yan/VideoGPT)


def prepare_videogpt(official: Path, spec: dict, work: Path) -> list[str]:
    """The authors' VQ-VAE (``parity_videogpt.build_official_vqvae``: built as ``scripts/train_vqvae.py`` does,
    data-dependent codebook initialisation, saved as Lightning 1.3.3 saves it) and its ``kinema convert``:
    both priors train on, and decode with, the same first stage."""
    import parity_videogpt as pv

    from kinema.api import convert

    VQVAE, _ = pv.import_official(official)
    _, path = pv.build_official_vqvae(VQVAE, spec["vqvae"], work, seed=0)
    converted = convert("videogpt_vqvae", path, work / "kinema_vqvae")
    return [f'model.vqvae="{converted}"']


def build_videogpt(official: Path, spec: dict, work: Path, x: torch.Tensor):
    """``VideoGPT(args)`` as ``scripts/train_videogpt.py`` builds it (its argument parser, ``--vqvae`` the
    checkpoint of :func:`prepare_videogpt`), stepped as Lightning 1.3.3 runs ``training_step`` with the
    module's own ``configure_optimizers`` (Adam 3e-4, a per-step cosine schedule): loss, backward, optimiser
    step, zero_grad, scheduler step. Sampling: ``VideoGPT.sample(n)`` (its cached fast decoding)."""
    import parity_videogpt as pv

    _, VideoGPT = pv.import_official(official)
    vq, p = spec["vqvae"], spec["prior"]
    extra = ["--vqvae", str(work / "official_vqvae.ckpt"), "--hidden_dim", str(p["hidden_dim"]),
             "--heads", str(p["heads"]), "--layers", str(p["layers"]), "--dropout", str(p["dropout"]),
             "--attn_dropout", str(p["attn_dropout"]), "--attn_type", p["attn_type"], "--n_cond_frames", "0",
             "--max_steps", "200000", "--sequence_length", str(vq["sequence_length"]),
             "--resolution", str(vq["resolution"])]
    args = pv.script_args(VideoGPT, extra, {"data_path": "", "resolution": 128, "sequence_length": 16,
                                            "batch_size": 8, "num_workers": 8})  # train_videogpt.py:14-19
    args.max_steps = int(args.max_steps)
    args.class_cond_dim = None  # train_videogpt.py:25, unconditional
    torch.manual_seed(0)
    model = VideoGPT(args)
    (opt,), (sched,) = model.configure_optimizers()
    batch = {"video": x / 2}  # the authors' range [-0.5, 0.5] (data.py)

    def step():
        loss = model.training_step(batch, 0)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched["scheduler"].step()  # interval "step"

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, step, lambda n: model.sample(n), params


# --------------------------------------------------------------------------- StyleGAN-V (universome/stylegan-v)


def build_stylegan_v(official: Path, spec: dict, work: Path, x: torch.Tensor):
    """G, D, G_ema as ``src/training/training_loop.py:160-165`` builds them, with the hyper-parameters
    ``src/train.py`` derives from the hydra config (``parity_stylegan_v.compose_config`` / ``official_kwargs``:
    the authors' config composed as hydra 1.0 does, the sizes of ``spec``, fp32), and one iteration of the
    training loop's body (``training_loop.py:300-403``) per step: the four phases Gmain, Greg (every 4 steps),
    Dmain, Dreg (every 16) through the authors' ``StyleGAN2Loss.accumulate_gradients`` (zero_grad,
    requires_grad, accumulate, ``nan_to_num`` of the gradients, Adam step, with the lazy-regularisation
    corrections of lr and betas), then the G_ema update. The generated clips' times are drawn by the
    authors' ``sample_frames`` (fractional), the real clips' by the same function on the 16-frame data
    tensor, as their data set does. No augmentation (kinema's config has ``augment_p = 0``: the authors'
    ``--aug=noaug``); style mixing and path-length regularisation are 0 in the authors' StyleGAN-V config.

    Sampling: ``G_ema(z, c, t)`` for the frames 0..T-1 of each video (``noise_mode='const'``), T = the data's
    frames (kinema's default sample length for this config)."""
    import copy

    import numpy as np
    import parity_stylegan_v as ps

    ps.build_official  # noqa: B018  (the shims: sys.path gets the checkout root and src/)
    for p in (str(official), str(official / "src")):
        if p not in sys.path:
            sys.path.insert(0, p)
    from src import dnnlib
    from training.layers import sample_frames

    size = dict(spec)
    cfg = ps.compose_config(official, size)
    G_kwargs, D_kwargs, _ = ps.official_kwargs(cfg, size)
    batch, frames = x.shape[0], x.shape[2]
    common = dict(c_dim=0, img_resolution=size["resolution"], img_channels=3)
    torch.manual_seed(0)
    np.random.seed(0)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    # src/train.py: r1_gamma and the EMA half-life of the `auto` spec at this batch (no ramp-up)
    r1_gamma = 0.0002 * size["resolution"] ** 2 / batch
    ema_kimg = batch * 10 / 32
    loss = dnnlib.util.construct_class_by_name(
        class_name=f"training.loss.{cfg.model.loss_kwargs.source}", device=torch.device("cpu"),
        G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, augment_pipe=None, r1_gamma=r1_gamma, cfg=cfg,
        style_mixing_prob=cfg.model.loss_kwargs.style_mixing_prob, pl_weight=cfg.model.loss_kwargs.pl_weight)
    phases = []
    for name, module, reg_interval in (("G", G, 4), ("D", D, 16)):  # training_loop.py:116-117, :239-252
        ratio = reg_interval / (reg_interval + 1)
        opt = torch.optim.Adam(module.parameters(), lr=0.0025 * ratio, betas=[0.0, 0.99 ** ratio], eps=1e-8)
        phases += [dnnlib.EasyDict(name=name + "main", module=module, opt=opt, interval=1),
                   dnnlib.EasyDict(name=name + "reg", module=module, opt=opt, interval=reg_interval)]
    from src.torch_utils import misc

    sampling = G.sampling_dict
    state = {"batch_idx": 0, "cur_nimg": 0}
    c0 = torch.zeros(batch, 0)

    def step():
        # data fetch (training_loop.py:303-318): the real clips' 3 frames and times as the data set draws them
        real_t = np.stack([sample_frames(sampling, total_video_len=frames) for _ in range(batch)])
        real_img = torch.stack([x[i][:, real_t[i]].transpose(0, 1) for i in range(batch)])  # (B, 3, C, H, W)
        real_t = torch.from_numpy(real_t)
        all_gen_z = torch.randn([len(phases) * batch, G.z_dim]).split(batch)
        all_gen_t = np.stack([sample_frames(sampling, use_fractional_t=True,
                                            total_video_len=min(frames, sampling["max_num_frames"]))
                              for _ in range(len(phases) * batch)])
        all_gen_t = torch.from_numpy(all_gen_t).split(batch)
        for phase, gen_z, gen_t in zip(phases, all_gen_z, all_gen_t):
            if state["batch_idx"] % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            phase.module.train()
            loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=c0, real_t=real_t, gen_z=gen_z,
                                      gen_c=c0, gen_t=gen_t, sync=True, gain=phase.interval)
            phase.module.requires_grad_(False)
            for param in phase.module.parameters():
                if param.grad is not None:
                    misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
            phase.opt.step()
        with torch.no_grad():  # G_ema (training_loop.py:391-399; the loop runs under no_grad there by
            ema_beta = 0.5 ** (batch / max(ema_kimg * 1000, 1e-8))  # requires_grad_(False))
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, ema_beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        state["cur_nimg"] += batch * sampling["num_frames_per_video"]
        state["batch_idx"] += 1

    @torch.no_grad()
    def sample(n):
        z = torch.randn(n, G.z_dim)
        t = torch.arange(frames).unsqueeze(0).repeat(n, 1)
        return G_ema(z, torch.zeros(n, 0), t, noise_mode="const")  # (n * T, C, H, W)

    params = {"G": sum(p.numel() for p in G.parameters()), "D": sum(p.numel() for p in D.parameters())}
    return G, step, sample, params
