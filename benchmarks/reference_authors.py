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


def official_videogpt(official: Path, spec: dict, work: Path, seed: int = 0):
    """``VideoGPT(args)`` as ``scripts/train_videogpt.py`` builds it (its argument parser, ``--vqvae`` the
    checkpoint ``work / "official_vqvae.ckpt"``) under ``torch.manual_seed(seed)``, and the module's own
    ``configure_optimizers``: ``(model, optimizer, scheduler dict)``."""
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
    torch.manual_seed(seed)
    model = VideoGPT(args)
    (opt,), (sched,) = model.configure_optimizers()
    return model, opt, sched


def build_videogpt(official: Path, spec: dict, work: Path, x: torch.Tensor):
    """``VideoGPT(args)`` of :func:`official_videogpt` (the VQ-VAE of :func:`prepare_videogpt`), stepped as
    Lightning 1.3.3 runs ``training_step`` with the module's own ``configure_optimizers`` (Adam 3e-4, a
    per-step cosine schedule): loss, backward, optimiser step, zero_grad, scheduler step. ``step(x)`` trains on
    another batch than ``x``. Sampling: ``VideoGPT.sample(n)`` (its cached fast decoding)."""
    model, opt, sched = official_videogpt(official, spec, work)
    batch = {"video": x / 2}  # the authors' range [-0.5, 0.5] (data.py)

    def step(x_new: torch.Tensor | None = None):
        loss = model.training_step(batch if x_new is None else {"video": x_new / 2}, 0)
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


# ------------------------------------------- TGANv2 and TGAN-ODE (Zasder3/Latent-Neural-Differential-Equations-...)


def build_tganv2(official: Path, spec: dict, work: Path, x: torch.Tensor):
    """The TGAN-ODE authors' TGANv2 port (``models/tganv2_gen.py``, ``models/tganv2_dis.py``) at
    ``train_speed.PORT_G`` / ``PORT_D`` and its ``tganv2 UCF101.py`` loop body, both from
    ``train_speed.build_port_tganv2`` (the machinery of ``train_speed.py --port``), on the data tensor ``x``
    (their layout (N, T, C, H, W)). Sampling: ``gen(z, test=True)`` under ``no_grad`` as the script's
    ``genSamples`` calls it (the generator left in train mode, z uniform in [-1, 1]^256): every frame dense."""
    import train_speed

    gen, dis, step_timed, counts = train_speed.build_port_tganv2(official, x.shape[0], torch.device("cpu"),
                                                                 real=x.transpose(1, 2).contiguous())

    @torch.no_grad()
    def sample(n):
        return gen(torch.rand((n, 256)) * 2 - 1, test=True)

    return gen, lambda: step_timed(), sample, {"G": counts[0], "D": counts[1]}


def build_tgan_ode(official: Path, spec: dict, work: Path, x: torch.Tensor):
    """The 64x64 TGAN-ODE of ``tgan SVC ODE lin UCF101.py`` (``models/tgan_ode.VideoGenerator(linear=True)``:
    z through the 4-layer MLP, then ``odeint_adjoint(rk4)`` of ``tanh(Linear(100, 100))``; kinema's ODE
    generator is this "lin" variant) and ``models/tgan.VideoDiscriminator``, and the script's loop body
    (lines 79-114): RMSprop 5e-5 both, a WGAN critic step on a no-grad fake, a G step on a fresh draw, and on
    every 5th iteration the singular value clipping of every D conv weight and the BN gain clamp. Its epoch
    counter starts at 1 here, so the clips fall after iterations 5, 10, ... as kinema's ``clip_every = 5`` does
    (the script clips after 0, 5, ...). ``x``: kinema's (N, C, T, H, W) is the script's ``real.transpose(1, 2)``
    already. Sampling: ``gen(z)`` in eval mode under ``no_grad`` (the script's ``genSamples``)."""
    import numpy as np
    from torch import nn

    for p in (str(official),):
        if p not in sys.path:
            sys.path.insert(0, p)
    import models.tgan as tgan
    import models.tgan_ode as tgan_ode

    torch.manual_seed(0)
    np.random.seed(0)
    batch = x.shape[0]
    dis = tgan.VideoDiscriminator()
    gen = tgan_ode.VideoGenerator(linear=True)
    dis_opt = torch.optim.RMSprop(dis.parameters(), lr=5e-5)
    gen_opt = torch.optim.RMSprop(gen.parameters(), lr=5e-5)
    real_x = x.float()
    state = {"epoch": 1}

    def singular_value_clip(w):  # the script's lines 19-26
        with torch.no_grad():
            dim = w.shape
            if len(dim) > 2:
                w = w.reshape(dim[0], -1)
            u, s, v = torch.linalg.svd(w, full_matrices=False)
            s[s > 1] = 1
            return (u @ torch.diag(s) @ v).view(dim)

    def step():
        dis_opt.zero_grad()
        pr = dis(real_x)
        with torch.no_grad():
            fake = gen(torch.rand((batch, 100)) * 2 - 1)
        pf = dis(fake)
        dis_loss = torch.mean(-pr) + torch.mean(pf)
        dis_loss.backward()
        dis_opt.step()
        gen_opt.zero_grad()
        fake = gen(torch.rand((batch, 100)) * 2 - 1)
        pf = dis(fake)
        gen_loss = torch.mean(-pf)
        gen_loss.backward()
        gen_opt.step()
        if state["epoch"] % 5 == 0:
            for module in list(dis.model3d.children()) + [dis.conv2d]:
                if type(module) == nn.Conv3d or type(module) == nn.Conv2d:  # noqa: E721 (the script's test)
                    module.weight.data = singular_value_clip(module.weight)
                elif type(module) == nn.BatchNorm3d:  # noqa: E721
                    with torch.no_grad():
                        gamma = module.weight.data
                        std = torch.sqrt(module.running_var)
                        gamma[gamma > std] = std[gamma > std]
                        gamma[gamma < 0.01 * std] = 0.01 * std[gamma < 0.01 * std]
                        module.weight.data = gamma
        state["epoch"] += 1

    @torch.no_grad()
    def sample(n):
        gen.eval()
        try:
            return gen(torch.rand((n, 100)) * 2 - 1)
        finally:
            gen.train()

    params = {"G": sum(p.numel() for p in gen.parameters()), "D": sum(p.numel() for p in dis.parameters())}
    return gen, step, sample, params


# --------------------------------------------------------------------------- DVG (shgaurav1/DVG)


def build_dvg(official: Path, spec: dict, work: Path, x: torch.Tensor):
    """The authors' encoder / decoder (``models/dcgan_64.py``), LSTM (``models/lstm.py``), one SVGP per latent
    dimension (``models/gp_models.GPRegressionLayer1``) and Gaussian likelihood, built and initialised as
    ``train.py:75-105`` does through ``parity_dvg_official.build`` (its import shims; nf 64: the authors'
    constructors unchanged), with the three Adam optimisers of ``train.py:95-97`` (lr 0.002, the GP one is
    ``build``'s, ``train.py:105``) and ``mll`` of ``train.py:112``.

    ``step()``: one iteration of ``train.py:354-361`` under ``max_cg_iterations(45)`` (``train.py:340``):
    ``train_model`` (``train.py:200-248``), then ``finetune_temporal_encoders`` (``train.py:250-253``:
    ``train_frame_predictor`` :175-198, ``train_GP_Frame_predictor`` :146-172), re-typed here. Shim: the
    authors hard-code ``view(90, 50, 1)`` (``train.py:164``; ``:225`` has ``view(90, opt.batch_size, 1)``), i.e.
    g_dim 90 and batch 50; here ``view(g_dim, batch, 1)``, the same at their settings. Not timed: the
    per-epoch ``MultiStepLR`` step (``train.py:106, :347``) and the loss read-backs (``.data.cpu().numpy()``).

    ``x``: kinema's ``(B, C, T, H, W)`` in [-1, 1] -> the authors' ``(T, B, 1, H, W)`` in [0, 1] (RGB averaged
    to grey as kinema's ``DVG.to_frames`` does; ``utils.normalize_data`` gives ``(T, B, C, H, W)``).

    ``sample(n)``: one draw of ``generate_frames.py``'s ``make_gifs`` sample loop (``:143-175``) for ``n``
    videos (``n`` = the LSTM's batch): ``n_eval`` frames (``spec["n_eval"]``, ``generate_frames.py:47``: 105),
    the first ``n_past`` teacher-forced, the GP's ``rsample`` replacing the LSTM's latent when ``i % 15 == 0``
    (same ``view`` shim), under ``no_grad``, models in eval mode; the SSIM/PSNR scoring and GIF writing are
    not timed. The context frames are the data tensor's first ``n_past`` frames."""
    import parity_dvg_official as po

    batch = x.shape[0]
    cfg = {"g_dim": spec["g_dim"], "rnn_size": spec["rnn_size"], "layers": spec["layers"],
           "channels": spec["channels"], "inducing": spec["inducing"], "nf": spec["nf"], "batch": batch,
           "n_past": spec["n_past"], "n_future": spec["n_future"]}
    encoder, decoder, frame_predictor, gp_layer, likelihood, optimizer, opt, gpytorch = po.build(official, cfg, 0)
    g = cfg["g_dim"]
    n_past, n_future = cfg["n_past"], cfg["n_future"]
    frame_predictor_optimizer = torch.optim.Adam(frame_predictor.parameters(), lr=0.002)  # train.py:95-97
    encoder_optimizer = torch.optim.Adam(encoder.parameters(), lr=0.002)
    decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=0.002)
    mll = gpytorch.mlls.VariationalELBO(likelihood, gp_layer, num_data=batch, combine_terms=True)  # :112
    mse_criterion = torch.nn.MSELoss()  # train.py:117-118
    mse_latent_criterion = torch.nn.MSELoss()
    frames = ((x.float().mean(1, keepdim=True) + 1) / 2).permute(2, 0, 1, 3, 4).contiguous()  # (T, B, 1, H, W)

    def train_gp_frame_predictor(x):  # train.py:146-172
        optimizer.zero_grad()
        with gpytorch.settings.use_toeplitz(False):
            frame_predictor.hidden = frame_predictor.init_hidden()
            max_ll = 0
            for i in range(1, n_past + n_future):
                h = encoder(x[i - 1])
                h_target = encoder(x[i])[0].detach()
                if opt.last_frame_skip or i < n_past:
                    h, skip = h
                else:
                    h = h[0]
                    h.detach()
                h_pred = gp_layer(h.transpose(0, 1).view(g, batch, 1))  # shim: view(90, 50, 1) in :164
                max_ll -= mll(h_pred, h_target.transpose(0, 1))
            loss = max_ll.sum()
        loss.backward()
        optimizer.step()

    def train_frame_predictor(x):  # train.py:175-198
        frame_predictor.zero_grad()
        frame_predictor.hidden = frame_predictor.init_hidden()
        mse_latent = 0
        for i in range(1, n_past + n_future):
            h = encoder(x[i - 1])
            h_target = encoder(x[i])[0]
            if opt.last_frame_skip or i < n_past:
                h, skip = h
            else:
                h = h[0]
            h_pred = frame_predictor(h)
            mse_latent += mse_latent_criterion(h_pred, h_target)
        loss = mse_latent
        loss.backward()
        frame_predictor_optimizer.step()

    def train_model(x):  # train.py:200-248
        encoder.zero_grad()
        decoder.zero_grad()
        frame_predictor.zero_grad()
        frame_predictor.hidden = frame_predictor.init_hidden()
        mse = mse_latent = mse_gp = max_ll = ae_mse = 0
        for i in range(1, n_past + n_future):
            h = encoder(x[i - 1])
            h_target = encoder(x[i])[0]
            if opt.last_frame_skip or i < n_past:
                h, skip = h
            else:
                h = h[0]
            h_pred = frame_predictor(h)
            mse_latent += mse_latent_criterion(h_pred, h_target)
            gp_pred = gp_layer(h.transpose(0, 1).view(g, batch, 1))
            max_ll -= mll(gp_pred, h_target.transpose(0, 1))
            x_pred = decoder([h_pred, skip])
            x_target_pred = decoder([h_target, skip])
            ae_mse += mse_latent_criterion(x_target_pred, x[i])
            x_pred_gp = decoder([gp_pred.mean.transpose(0, 1), skip])
            mse += mse_criterion(x_pred, x[i])
            mse_gp += mse_latent_criterion(x_pred_gp, x[i])
        loss = 1000 * ae_mse + 0.001 * mse + 0.01 * mse_latent + 0.001 * mse_gp + 0.0001 * max_ll.sum()
        loss.backward()
        frame_predictor_optimizer.step()
        encoder_optimizer.step()
        decoder_optimizer.step()
        optimizer.step()

    def step():  # train.py:340-361 (opt.ft True)
        for m in (gp_layer, likelihood, frame_predictor, encoder, decoder):
            m.train()
        with gpytorch.settings.max_cg_iterations(45):
            train_model(frames)
            train_frame_predictor(frames)
            train_gp_frame_predictor(frames)

    @torch.no_grad()
    def sample(n):  # generate_frames.py:143-175, one of its nsample draws
        if n != batch:
            raise ValueError(f"DVG reference: the authors' LSTM holds a batch of {batch}; sample {batch} videos")
        for m in (gp_layer, likelihood, frame_predictor, encoder, decoder):
            m.eval()
        x_ctx = frames
        frame_predictor.hidden = frame_predictor.init_hidden()
        x_in = x_ctx[0]
        gen = [x_in]
        for i in range(1, spec["n_eval"]):
            h = encoder(x_in)
            if opt.last_frame_skip or i < n_past:
                h, skip = h
            else:
                h, _ = h
            h = h.detach()
            if i < n_past:
                h_target = encoder(x_ctx[i])
                h_target = h_target[0].detach()
                frame_predictor(h)
                x_in = x_ctx[i]
            else:
                h_pred = frame_predictor(h).detach()
                if i % 15 == 0:
                    final_hpred = likelihood(gp_layer(h.transpose(0, 1).view(g, batch, 1)))  # shim as above
                    x_in = decoder([final_hpred.rsample().transpose(0, 1), skip]).detach()
                else:
                    x_in = decoder([h_pred, skip]).detach()
            gen.append(x_in)
        return torch.stack(gen)

    modules = (encoder, decoder, frame_predictor, gp_layer, likelihood)
    params = sum(p.numel() for m in modules for p in m.parameters())
    return encoder, step, sample, params
