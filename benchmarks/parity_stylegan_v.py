"""StyleGAN-V output parity: the authors' G, G_ema and D (universome/stylegan-v) against kinema's converter.

    OMP_NUM_THREADS=1 SGV_VENV/bin/python benchmarks/parity.py --family stylegan_v \\
        --official /path/to/stylegan-v-checkout [--config tiny|paper] [--fixture tests/fixtures/parity/stylegan_v]

The official networks are built from an unmodified checkout (imported from there, never copied) with the
hyper-parameters ``src/train.py:163-186`` derives from the hydra config, initialised with a seed and then
perturbed (every parameter, and ``w_avg``, gets seeded noise, so zero biases and unit affine biases cannot
hide a mis-mapped tensor; G_ema differs from G as after training). The snapshot is written exactly as
``src/training/training_loop.py:472-501`` writes ``network-snapshot-*.pkl`` (``pickle.dump`` of the dict
training_set_kwargs, G, D, G_ema, augment_pipe, G_opt, D_opt, vis, stats; modules deep-copied, eval,
requires_grad False, CPU) and converted with ``kinema convert stylegan_v``. Both sides then get the same
inputs: content ``z``, the motion noise (passed to the official ``G(..., motion_z=...)``, which otherwise
draws it inside ``MotionMappingNetwork.generate_motion_u_codes``), fractional time points (some beyond
``max_num_frames``), ``noise_mode='const'`` (no noise inputs exist: ``use_noise: false``) and, for D, the
same frames and times.

Outputs compared: the motion codes v(t) of G_ema, the videos of G and of G_ema (truncation psi 1 and 0.7),
and D's logits on the generated clips and on random clips.

Shims (the official code's 2021 pins; each one is only what running on this machine needs):

1. ``omegaconf==2.0.6`` (the version hydra-core 1.0.7 of ``environment.yaml`` pins) in a separate venv;
   hydra itself is not imported: the config is composed as hydra 1.0 composes ``configs/config.yaml``
   (each ``# @package _group_`` file merged under its group key, later files over earlier ones), then the
   size overrides are set on it.
2. ``sys.path`` gets the checkout root and ``src/`` (``python src/train.py`` from the root does the same:
   the code imports both ``src.torch_utils...`` and ``training...``).
3. PyTorch of this machine instead of 1.7.1, on CPU: the custom CUDA ops are not compiled; ``bias_act``,
   ``upfirdn2d`` and ``conv2d_gradfix`` take their own reference PyTorch paths (they do so for any non-CUDA
   tensor: ``bias_act.py:87``, ``upfirdn2d.py:162``, ``conv2d_gradfix.py:47-52``).
4. fp16 layers: the official run builds the 4 highest resolutions in fp16 with ``conv_clamp 256``; both
   models are compared in float32, the official blocks with ``force_fp32=True`` (their own switch); the
   clamp applies in both (kinema: ``model.conv_clamp``).
5. The snapshot's Adam optimisers get ``betas=[0.0, ...]`` instead of ``[0, ...]`` (today's Adam refuses an
   int beta); they are pickled data the converter ignores.

Nothing in the official code is patched.
"""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path

import torch

CONFIGS: dict[str, dict] = {
    # 16x16, D concatenates the frames at 8x8; channels min(64 / r, 8) = 8, 8, 4 (a fixture of a few hundred KB:
    # every module of the snapshot pickles its own copy of the whole hydra config, and the optimisers a copy
    # of the weights)
    "tiny": dict(resolution=16, fmaps=64 / 32768, channel_max=8, z_dim=16, w_dim=16, motion_z_dim=8, motion_v_dim=8,
                 kernel_size=3, time_enc_dim=6, min_period_len=4, max_period_len=32, max_num_frames=16, concat_res=8,
                 mbstd_group_size=2, map_layers=2, fp32=True, batch=2,
                 times=[[0.0, 1.5, 5.0, 9.25], [2.25, 7.0, 15.0, 20.5]], d_times=[[0, 3, 8], [5, 6, 13]]),
    # configs/model/stylegan-v.yaml with the `auto` spec at 256^2 (src/train.py:149-186): fmaps 0.5, 2 mapping
    # layers, fp16 in 4 resolutions with conv_clamp 256; batch 1, a few frames
    "paper": dict(resolution=256, fmaps=0.5, channel_max=512, z_dim=512, w_dim=512, motion_z_dim=512, motion_v_dim=512,
                  kernel_size=11, time_enc_dim=256, min_period_len=16, max_period_len=1024, max_num_frames=1024,
                  concat_res=16, mbstd_group_size=4, map_layers=2, fp32=False, batch=1,
                  times=[[0.0, 7.5, 31.0]], d_times=[[0, 9, 16]]),
}


def official_commit(official: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        stamp = official / "COMMIT"
        return stamp.read_text().strip() if stamp.is_file() else "unknown (record it in COMMIT next to the checkout)"


def compose_config(official: Path, size: dict):
    """The root config as hydra 1.0 composes ``configs/config.yaml`` (shim 1), with the size overrides."""
    from omegaconf import OmegaConf

    conf = official / "configs"

    def group(*files):
        return OmegaConf.merge(*[OmegaConf.load(conf / f) for f in files])

    root = OmegaConf.merge(
        OmegaConf.load(conf / "infra.yaml"),
        OmegaConf.create({
            "model": group("model/base.yaml", "model/stylegan-v.yaml"),
            "dataset": group("dataset/base.yaml", "dataset/ffs.yaml"),
            "sampling": group("sampling/base.yaml", "sampling/random.yaml"),
            "env": group("env/base.yaml"),
            "training": group("training/base.yaml"),
        }))
    root.env.project_path = str(official)
    root.dataset.resolution = size["resolution"]
    root.dataset.max_num_frames = size["max_num_frames"]
    gen, disc = root.model.generator, root.model.discriminator
    gen.z_dim, gen.w_dim = size["z_dim"], size["w_dim"]
    gen.motion.z_dim, gen.motion.v_dim = size["motion_z_dim"], size["motion_v_dim"]
    gen.motion.kernel_size = size["kernel_size"]
    gen.time_enc.dim = size["time_enc_dim"]
    gen.time_enc.min_period_len, gen.time_enc.max_period_len = size["min_period_len"], size["max_period_len"]
    disc.concat_res = size["concat_res"]
    disc.mbstd_group_size = size["mbstd_group_size"]
    if size["fmaps"] != 0.5:  # the `auto` spec's fmaps at < 512^2; the configs' own override key otherwise
        gen.fmaps = disc.fmaps = size["fmaps"]
    if size["channel_max"] != 512:
        gen.channel_max = disc.channel_max = size["channel_max"]
    if size["fp32"]:
        gen.fp32 = disc.fp32 = True
    return root


def official_kwargs(cfg, size: dict):
    """G_kwargs / D_kwargs as ``src/train.py:149-186`` builds them (the `auto` spec, 4 GPUs, batch 64)."""
    from src import dnnlib

    gpus, mb = 4, 64
    spec = dnnlib.EasyDict(map=2, fmaps=1 if size["resolution"] >= 512 else 0.5)
    spec.mbstd = min(mb // gpus, cfg.model.discriminator.mbstd_group_size)
    G_kwargs = dnnlib.EasyDict(class_name=f"training.{cfg.model.generator.source}.Generator",
                               w_dim=cfg.model.generator.w_dim, mapping_kwargs=dnnlib.EasyDict(),
                               synthesis_kwargs=dnnlib.EasyDict())
    D_kwargs = dnnlib.EasyDict(class_name=f"training.{cfg.model.discriminator.source}.Discriminator",
                               block_kwargs=dnnlib.EasyDict(), mapping_kwargs=dnnlib.EasyDict(),
                               epilogue_kwargs=dnnlib.EasyDict())
    G_kwargs.synthesis_kwargs.channel_base = int(cfg.model.generator.get("fmaps", spec.fmaps) * 32768)
    D_kwargs.channel_base = int(cfg.model.discriminator.get("fmaps", spec.fmaps) * 32768)
    G_kwargs.synthesis_kwargs.channel_max = cfg.model.generator.get("channel_max", 512)
    D_kwargs.channel_max = cfg.model.discriminator.get("channel_max", 512)
    G_kwargs.mapping_kwargs.num_layers = cfg.model.generator.get("mapping_net_n_layers", spec.map)
    G_kwargs.mapping_kwargs.cfg = cfg.model.generator
    G_kwargs.synthesis_kwargs.num_fp16_res = D_kwargs.num_fp16_res = 4
    G_kwargs.synthesis_kwargs.conv_clamp = D_kwargs.conv_clamp = 256
    G_kwargs.cfg = cfg.model.generator
    D_kwargs.epilogue_kwargs.mbstd_group_size = spec.mbstd
    D_kwargs.cfg = cfg.model.discriminator
    D_kwargs.mapping_kwargs.num_layers = 2
    if cfg.model.generator.get("fp32", False):
        G_kwargs.synthesis_kwargs.num_fp16_res = 0
        G_kwargs.synthesis_kwargs.conv_clamp = None
    if cfg.model.discriminator.get("fp32", False):
        D_kwargs.num_fp16_res = 0
        D_kwargs.conv_clamp = None
    training_set_kwargs = dnnlib.EasyDict(class_name="training.dataset.VideoFramesFolderDataset",
                                          path=cfg.training.data, cfg=cfg.dataset, use_labels=True, max_size=None,
                                          xflip=False)
    return G_kwargs, D_kwargs, training_set_kwargs


def perturb(module: torch.nn.Module, gen: torch.Generator, scale: float) -> None:
    """Seeded noise on every parameter and on ``w_avg`` (trained-like values; nothing is left at 0 or 1)."""
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + [(n, b) for n, b in module.named_buffers()
                                                                 if n.endswith("w_avg")]:
            tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)


def build_official(official: Path, size: dict, seed: int, snapshot: Path) -> tuple:
    """Build G, D, G_ema as ``training_loop.py:160-165`` does and write the snapshot as ``:472-501`` does."""
    for p in (str(official), str(official / "src")):  # shim 2
        if p not in sys.path:
            sys.path.insert(0, p)
    from src import dnnlib

    cfg = compose_config(official, size)
    G_kwargs, D_kwargs, training_set_kwargs = official_kwargs(cfg, size)
    common_kwargs = dict(c_dim=0, img_resolution=size["resolution"], img_channels=3)
    torch.manual_seed(seed)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed + 1)
    perturb(G, gen, 0.1)
    perturb(D, gen, 0.1)
    G_ema = copy.deepcopy(G).eval()
    perturb(G_ema, gen, 0.02)
    augment_pipe = dnnlib.util.construct_class_by_name(
        class_name="training.augment.AugmentPipe", xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
        brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1).train().requires_grad_(False)  # --augpipe bgc
    augment_pipe.p.copy_(torch.as_tensor(0.0))
    # train.py:188-193 (betas [0, 0.99]) with the lazy-regularisation correction of training_loop.py:245-252;
    # shim 5: betas as floats (the current Adam refuses an int beta)
    G_opt = torch.optim.Adam(G.parameters(), lr=0.0025 * 4 / 5, betas=[0.0, 0.99 ** (4 / 5)], eps=1e-8)
    D_opt = torch.optim.Adam(D.parameters(), lr=0.0025 * 16 / 17, betas=[0.0, 0.99 ** (16 / 17)], eps=1e-8)
    vis = {"grid_size": (2, 2), "grid_z": [torch.randn(2, G.z_dim, generator=gen)]}
    snapshot_modules = [("G", G), ("D", D), ("G_ema", G_ema), ("augment_pipe", augment_pipe), ("G_opt", G_opt),
                        ("D_opt", D_opt), ("vis", vis), ("stats", {"cur_nimg": 0, "cur_tick": 0, "batch_idx": 0})]
    snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
    for name, module in snapshot_modules:
        if isinstance(module, torch.nn.Module):
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        else:
            module = copy.deepcopy(module)
        snapshot_data[name] = module
    with open(snapshot, "wb") as f:
        pickle.dump(snapshot_data, f)
    return G, D, G_ema, cfg


def inputs(size: dict, seed: int, num_codes: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 2)
    b = size["batch"]
    return {
        "z": torch.randn(b, size["z_dim"], generator=gen),
        "motion_z": torch.randn(b, num_codes, size["motion_z_dim"], generator=gen),
        "t": torch.tensor(size["times"], dtype=torch.float32),
        "d_t": torch.tensor(size["d_times"], dtype=torch.float32),
        "d_random": torch.randn(b, 3, 3, size["resolution"], size["resolution"], generator=gen).clamp(-1, 1),
    }


@torch.no_grad()
def official_outputs(G, D, G_ema, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official forwards: G(z, c, t, motion_z=..., noise_mode='const', force_fp32=True) -> (B*T, C, H, W)."""
    b, n = x["t"].shape
    c = torch.zeros(b, 0)
    out = {}
    out["motion_v"] = G_ema.synthesis.motion_encoder(c, x["t"], motion_z=x["motion_z"])["motion_v"]

    def video(g, psi):
        img = g(x["z"], c, x["t"], truncation_psi=psi, motion_z=x["motion_z"], noise_mode="const", force_fp32=True)
        return img.reshape(b, n, *img.shape[1:]).transpose(1, 2)  # (B, C, T, H, W)

    out["video_G"] = video(G, 1.0)
    out["video_G_ema"] = video(G_ema, 1.0)
    out["video_G_ema_psi0.7"] = video(G_ema, 0.7)
    d_t = x["d_t"]
    clips = G_ema(x["z"], c, d_t, motion_z=x["motion_z"], noise_mode="const", force_fp32=True)  # (B*3, C, H, W)
    out["d_clips"] = clips.reshape(b, 3, *clips.shape[1:]).transpose(1, 2)
    out["D_logits_fake"] = D(clips, c, d_t, force_fp32=True)["image_logits"]
    rnd = x["d_random"].transpose(1, 2).reshape(b * 3, *x["d_random"].shape[-3:])
    out["D_logits_random"] = D(rnd, c, d_t, force_fp32=True)["image_logits"]
    return out


@torch.no_grad()
def kinema_outputs(model_G, model_Gema, x: dict[str, torch.Tensor], d_clips: torch.Tensor) -> dict[str, torch.Tensor]:
    z, motion_z, t = x["z"], x["motion_z"], x["t"]
    noise = model_Gema.join_noise(z, motion_z)
    out = {}
    out["motion_v"] = model_Gema.generator.motion(motion_z, t)
    out["video_G"] = model_G.synthesize(noise, t)
    out["video_G_ema"] = model_Gema.synthesize(noise, t)
    out["video_G_ema_psi0.7"] = model_Gema.synthesize(noise, t, truncation_psi=0.7)
    out["d_clips"] = model_Gema.synthesize(noise, x["d_t"])
    out["D_logits_fake"] = model_Gema.discriminator(d_clips, x["d_t"])  # the official clips: D alone
    out["D_logits_random"] = model_Gema.discriminator(x["d_random"], x["d_t"])
    return out


def compare(ours: dict, theirs: dict) -> list[tuple]:
    rows = []
    for name, ref in theirs.items():
        a, b = ours[name].double(), ref.double()
        if a.shape != b.shape:
            raise SystemExit(f"{name}: kinema {tuple(a.shape)} vs official {tuple(b.shape)}")
        diff = float((a - b).abs().max())
        rows.append((name, diff, diff / max(float(b.abs().max()), 1e-30), tuple(b.shape)))
    return rows


def run(official: Path, config: str, work: Path, fixture: Path | None, seed: int) -> list[tuple]:
    import kinema
    from kinema.foreign import ConvertOptions
    from kinema.registry import convert

    torch.set_grad_enabled(False)
    size = CONFIGS[config]
    snapshot = work / "network-snapshot-000000.pkl"
    G, D, G_ema, _ = build_official(official, size, seed, snapshot)
    out = work / "converted"
    convert("stylegan_v", snapshot, out, ConvertOptions())
    model_G, _ = kinema.load(out, ema=False)
    model_Gema, _ = kinema.load(out, ema=True)
    t_max = float(torch.tensor(size["times"]).max())
    x = inputs(size, seed, model_Gema.num_motion_codes(t_max))
    theirs = official_outputs(G, D, G_ema, x)
    ours = kinema_outputs(model_G, model_Gema, x, theirs["d_clips"].contiguous())
    rows = compare(ours, theirs)
    if fixture is not None:
        write_fixture(fixture, snapshot, x, theirs, official, config, seed)
    return rows


def write_fixture(fixture: Path, snapshot: Path, x: dict, theirs: dict, official: Path, config: str, seed: int) -> None:
    """The CI fixture: the snapshot gzipped (the pickle bytes as training_loop.py wrote them; gzip only for the
    repository's size, the test unpacks it), the inputs and the official outputs."""
    import gzip

    from safetensors.torch import save_file

    fixture.mkdir(parents=True, exist_ok=True)
    packed = fixture / "network-snapshot-000000.pkl.gz"
    with open(snapshot, "rb") as f_in, gzip.GzipFile(packed, "wb", mtime=0) as f_out:
        f_out.write(f_in.read())
    save_file({k: v.contiguous() for k, v in x.items()}, fixture / "inputs.safetensors")
    save_file({k: v.contiguous() for k, v in theirs.items()}, fixture / "outputs.safetensors")
    (fixture / "official.json").write_text(json.dumps({"repository": "universome/stylegan-v",
                                                        "commit": official_commit(official),
                                                        "config": config, "seed": seed,
                                                        "size": CONFIGS[config]}, indent=2) + "\n")
