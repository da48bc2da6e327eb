"""Equal-compute quality against the reference implementations (issue 31, item 3).

Per family and seed, kinema and the reference train on the same ``bouncing_shapes`` clips (the dataset,
seed and number of clips of kinema's config), in the same batch order (kinema's ``DrawSampler`` stream at
``train.seed``), with the same batch, optimiser (Adam/AdamW, lr, betas, weight decay of kinema's config after
the overrides) and fp32, at the ``*_cpu16`` architecture matched in ``benchmarks/reference.py`` (``FAMILIES``);
both are scored with kinema's quality benchmark (``benchmarks/quality.py``: FVD and KVD with the real I3D, the
oracle's count preserved, physically consistent and speed distance) against the same held-out clips
(``quality.HELD_OUT_SEED``, its on-disk real-feature cache). Three rows per family, mean +- std over seeds:

- kinema at equal steps: kinema trained the reference's number of steps, then sampled;
- kinema at equal wall clock: the same run continued to ``steps / speed_ratio`` steps of its last stage,
  where ``speed_ratio`` is kinema's / the reference's train-step time measured side by side by
  ``benchmarks/reference.py`` (``benchmarks/results/reference_<family>.json``,
  ``train_kinema_cli_over_reference.median``); earlier stages (NÜWA's tokenizer) keep equal steps;
- the reference at equal steps: its own training-loop body and sampler, in its own process
  (``--train-reference``), writing ``samples.pt`` and a record (steps, process CPU seconds, parameters, loss).

The CPU seconds per step of both sides are measured here too (process CPU time of the training calls, one
thread; kinema's include its trainer's start-up, preview samples and checkpoints).

    OMP_NUM_THREADS=1 python benchmarks/equal_compute.py --family vdm --seeds 0,1,2 --clips 96 \\
        --i3d I3D.safetensors --report docs/quality.md
    OMP_NUM_THREADS=1 python benchmarks/equal_compute.py --family nuwa --seeds 0,1,2 --clips 96 \\
        --i3d I3D.safetensors --report docs/quality.md

Contract (shared with ``benchmarks/equal_compute_authors.py``, the authors' repositories' families):

- ``EQUAL_FAMILIES[family] = {"stages": [{"stage", "config", "set", "steps", ["first_stage"]}, ...],
  "batch": int, "speed_ratio": float, "reference": "package or checkout", ["samples": int]}`` -- kinema's
  stages in order (a config name and its ``--set`` overrides; ``first_stage`` names the stage whose run
  becomes ``model.<first_stage>`` of this one), default steps per stage, the last stage's batch and the
  train-step time ratio kinema / reference.
- ``REFERENCE_TRAINERS[family](official: Path | None, batches: Iterator[Tensor], steps: dict[str, int],
  seed: int, work: Path) -> sample(n: int, seed: int) -> Tensor`` -- trains the reference (``official``: a
  checkout, or None for a PyPI package) and returns its sampler, ``(n, 3, T, H, W)`` float in [-1, 1].
  ``batches`` yields the last stage's stream, ``(B, 3, T, H, W)`` float in [-1, 1], the batches kinema's
  trainer draws; ``batches.stage(name)`` gives another stage's stream (a per-frame tokenizer reshapes it
  itself). A trainer may call ``batches.log(stage, step, loss)`` and ``batches.cpu(stage, seconds)`` (the
  training CPU seconds of a stage, default: the whole call) and set ``batches.parameters``.
- If ``benchmarks/equal_compute_authors.py`` exists, its ``AUTHORS_FAMILIES`` and ``REFERENCE_TRAINERS``
  (same shapes) are merged in at import.

References (run from their installed packages, nothing copied into kinema), through
``reference.build_reference`` (its shims: the ``torchvision`` stand-in, NÜWA's text-transformer
``rotary_pos_emb`` keyword):

- ``vdm``: video-diffusion-pytorch ``GaussianDiffusion(Unet3D)`` with 32 timesteps for training and sampling
  (kinema samples ancestrally in 32 steps: the same network evaluations); its loop body (``Trainer.train``:
  loss, backward, Adam step). Its EMA starts at step 2000, so at these budgets it samples its raw weights;
  kinema is set to do the same (``train.ema_decay=0``).
- ``nuwa``: nuwa-pytorch. Stage ``vqgan``: its ``VQGanVAE`` at kinema's ``nuwa_vqgan_cpu16`` widths, built with
  ``use_vgg_and_gan=False`` (its VGG16 weights cannot be downloaded here; kinema's stage adds its GAN loss only
  from step 300 and has no perceptual loss), trained on the frames of the same clips for the same steps with
  kinema's Adam settings. The loss is its L1 reconstruction + its quantiser's commitment loss (weight 0.25 =
  kinema's, EMA codebook decay 0.99 = kinema's): ``VQGanVAE.forward(return_loss=True)`` returns the
  reconstruction loss alone when ``use_vgg_and_gan=False`` (the commitment term is only added on its VGG/GAN
  path), so the loss is assembled from its ``encode`` (which returns the commitment loss) and ``decode``.
  Stage ``transformer``: ``NUWA`` over that tokenizer (its weights loaded into the copy ``NUWA`` keeps),
  ``NUWATrainer.train_step``'s body with condition dropout 0.1, AdamW.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
import reference  # noqa: E402
from trainer_stream import config_stream  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECTION = "## Equal compute against the reference implementations (issue 31)"
LOG_EVERY = 50  # loss records of both sides
ROWS = ("kinema_equal_steps", "reference_equal_steps", "kinema_equal_wall_clock")
ROW_TITLES = {"kinema_equal_steps": "kinema, equal steps", "reference_equal_steps": "reference, equal steps",
              "kinema_equal_wall_clock": "kinema, equal wall clock"}
MEASURE_KEYS = ("fvd", "kvd", "count_preserved", "physically_consistent", "speed_distance")


def speed_ratio(family: str) -> float | None:
    """kinema / reference train-step time measured by ``benchmarks/reference.py`` (None if not measured)."""
    path = RESULTS / f"reference_{family}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["train_kinema_cli_over_reference"]["median"]


EQUAL_FAMILIES: dict[str, dict] = {
    "vdm": {
        "stages": [{"stage": "vdm", "config": reference.FAMILIES["vdm"]["config"],
                    # train.ema_decay=0: kinema samples its raw weights, as the reference does before its EMA
                    # starts (video-diffusion-pytorch Trainer, step_start_ema = 2000; these budgets are shorter).
                    # With vdm_cpu16's EMA (0.995, no warm-up) kinema's samples at 100 steps are 61 % the
                    # initial weights: FVD 5256 against its raw weights' 4020 on seed 0
                    # (benchmarks/results/equal_compute_vdm_ema_check.json).
                    "set": [*reference.FAMILIES["vdm"]["set"], "model.sampling_steps=32", "train.ema_decay=0"],
                    "steps": 100}],
        "batch": reference.FAMILIES["vdm"]["batch"],
        "speed_ratio": speed_ratio("vdm"),
        "reference": "video-diffusion-pytorch",
        "timesteps": 32,  # the reference's diffusion timesteps = kinema's sampling steps
        # kinema's sampler: ancestral over 32 steps, as the reference's p_sample_loop
        "kinema_sample": reference.sample_options("vdm", 32),
    },
    "nuwa": {
        "stages": [
            {"stage": "vqgan", "config": reference.FAMILIES["nuwa"]["vqgan_config"], "set": ["data.workers=0"],
             "steps": 100},
            {"stage": "transformer", "config": reference.FAMILIES["nuwa"]["config"],
             "set": list(reference.FAMILIES["nuwa"]["set"]), "steps": 20, "first_stage": "vqgan"},
        ],
        "batch": reference.FAMILIES["nuwa"]["batch"],
        "speed_ratio": speed_ratio("nuwa"),
        "reference": "nuwa-pytorch",
        "kinema_sample": {},
    },
}


# --------------------------------------------------------------------------- the batches both sides see


def stage_overrides(stage: dict, seed: int, data: str = "bouncing_shapes") -> list[str]:
    """kinema's ``--set`` list of a stage (quality.py's common ones, the stage's, data family, seed)."""
    return [*quality.COMMON_OVERRIDES, *stage["set"], f"data.family={data}", f"train.seed={seed}"]


def stage_config(stage: dict, seed: int, data: str = "bouncing_shapes"):
    """kinema's config of ``stage`` at ``train.seed = seed`` (the first stage's run left out: not needed for the
    data, the shapes or the optimiser)."""
    from kinema.registry import load_config

    return load_config(stage["config"], [s for s in stage_overrides(stage, seed, data) if not s.startswith("model.vq")])


def stage_stream(stage: dict, seed: int, data: str = "bouncing_shapes") -> Iterator[torch.Tensor]:
    """The batches kinema's trainer draws for ``stage`` at ``train.seed = seed`` (``trainer_stream.config_stream``)."""
    return config_stream(stage_config(stage, seed, data))


class Batches:
    """What a reference trainer gets: iterating gives the last stage's stream; ``stage(name)`` another's.
    Also collects the trainer's loss log, CPU seconds per stage and parameter count."""

    def __init__(self, family: str, seed: int, data: str = "bouncing_shapes") -> None:
        self.stages = {s["stage"]: s for s in EQUAL_FAMILIES[family]["stages"]}
        self.seed, self.data = seed, data
        self.last = stage_stream(list(self.stages.values())[-1], seed, data)
        self.losses: dict[str, list] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.parameters = None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        return next(self.last)

    def stage(self, name: str) -> Iterator[torch.Tensor]:
        return stage_stream(self.stages[name], self.seed, self.data)

    def log(self, stage: str, step: int, loss: float) -> None:
        self.losses.setdefault(stage, []).append([step, float(loss)])

    def cpu(self, stage: str, seconds: float) -> None:
        self.cpu_seconds[stage] = seconds


# --------------------------------------------------------------------------- reference trainers


def _loss_hook(module: torch.nn.Module, store: list) -> None:
    """Keep the last forward output of ``module`` (the reference's loss) without touching its code."""
    module.register_forward_hook(lambda m, i, out: store.__setitem__(slice(None), [out]))


def _train_loop(stream, stage: str, steps: int, step_fn, losses: list, log, reshape=None) -> float:
    """``steps`` calls of ``step_fn(x)`` on ``stream``'s batches; ``log(stage, step, loss)`` every LOG_EVERY
    steps (``losses[0]``: the last loss, kept by a hook); returns the CPU seconds of the calls."""
    cpu = 0.0
    for i in range(steps):
        x = next(stream)
        if reshape is not None:
            x = reshape(x)
        c0 = time.process_time()
        step_fn(x)
        cpu += time.process_time() - c0
        if losses and (i % LOG_EVERY == 0 or i == steps - 1):
            loss = losses[0]
            log(stage, i + 1, float(loss.detach() if torch.is_tensor(loss) else loss))
    return cpu


def _train_reference(model: torch.nn.Module, batches, stage: str, steps: int, step_fn, frozen=()) -> None:
    """A reference model built by ``reference.build_reference`` trained ``steps`` steps of ``step_fn`` on the
    driver's ``batches``: its loss logged (``_loss_hook``), training mode (``frozen`` submodules in eval mode),
    the CPU seconds recorded for ``stage``, then eval mode for sampling."""
    losses: list = []
    _loss_hook(model, losses)
    model.train()
    for module in frozen:
        module.eval()
    batches.cpu(stage, _train_loop(batches, stage, steps, step_fn, losses, batches.log))
    model.eval()


def _optim(stage: dict, seed: int) -> tuple[float, tuple, float, str]:
    t = stage_config(stage, seed).train
    return t.lr, tuple(t.betas), t.weight_decay, t.optimizer


def trained_reference_vdm(batches, steps: int, seed: int):
    """video-diffusion-pytorch's ``GaussianDiffusion(Unet3D)`` at the spec, built under ``torch.manual_seed(seed)``
    and trained ``steps`` steps of its loop body on ``batches``: ``(model, sample(n) -> videos in [0, 1])``."""
    fam = EQUAL_FAMILIES["vdm"]
    stage = fam["stages"][0]
    lr, betas, wd, opt = _optim(stage, seed)
    assert opt == "adam" and wd == 0.0, "video-diffusion-pytorch's Trainer uses Adam without weight decay"
    m = stage_config(stage, seed).model
    torch.manual_seed(seed)
    model, step, sample, params = reference.build_reference("vdm", reference.FAMILIES["vdm"]["reference"],
                                                            fam["timesteps"], m.frames, m.resolution, lr, betas, wd)
    batches.parameters = params
    _train_reference(model, batches, "vdm", steps, step)
    return model, sample


def train_vdm(official, batches, steps, seed, work) -> Callable[[int, int], torch.Tensor]:
    _, sample = trained_reference_vdm(batches, steps["vdm"], seed)

    def draw(n: int, s: int) -> torch.Tensor:
        torch.manual_seed(s)
        with torch.no_grad():
            return (sample(n).float() * 2 - 1).clamp(-1, 1)  # GaussianDiffusion.sample gives [0, 1]

    return draw


def train_nuwa(official, batches, steps, seed, work) -> Callable[[int, int], torch.Tensor]:
    reference.install_torchvision_stub()
    from nuwa_pytorch import VQGanVAE

    fam = EQUAL_FAMILIES["nuwa"]
    vq_stage, tr_stage = fam["stages"]
    spec = reference.FAMILIES["nuwa"]["reference"]
    v = spec["vae"]
    # stage 1: the tokenizer on the frames of the vqgan stage's clips
    lr, betas, wd, opt = _optim(vq_stage, seed)
    torch.manual_seed(seed)
    vae = VQGanVAE(dim=v["dim"], image_size=v["image_size"], num_layers=v["num_layers"],
                   layer_mults=tuple(v["layer_mults"]), vq_codebook_size=v["codebook_size"],
                   vq_codebook_dim=v["dim"] * v["layer_mults"][-1], vq_kmeans_init=False, vq_use_cosine_sim=False,
                   num_resnet_blocks=1, use_attn=False, resnet_groups=8, use_vgg_and_gan=False,
                   vq_decay=0.99, vq_commitment_weight=0.25)  # kinema's codebook EMA and commitment weight
    optim = (torch.optim.Adam if opt == "adam" else torch.optim.AdamW)(vae.parameters(), lr=lr, betas=betas,
                                                                     weight_decay=wd)
    vq_losses: list = []

    def vq_step(frames: torch.Tensor) -> None:
        fmap, _, commit = vae.encode(frames)
        loss = vae.recon_loss_fn(vae.decode(fmap), frames) + commit.sum()
        vq_losses[:] = [loss]
        loss.backward()
        optim.step()
        optim.zero_grad()

    vae.train()
    frames_of = lambda x: x.permute(0, 2, 1, 3, 4).reshape(-1, *x.shape[1:2], *x.shape[3:])  # noqa: E731
    cpu_vq = _train_loop(batches.stage("vqgan"), "vqgan", steps["vqgan"], vq_step, vq_losses, batches.log,
                         frames_of)
    batches.cpu("vqgan", cpu_vq)
    vae.eval()
    # stage 2: NUWA over it (build_reference's model and loop body; its VAE copy gets the trained weights)
    lr, betas, wd, _ = _optim(tr_stage, seed)
    m = stage_config(tr_stage, seed).model
    torch.manual_seed(seed)
    model, step, sample, params = reference.build_reference("nuwa", spec, 0, m.frames, m.resolution, lr, betas, wd)
    missing, unexpected = model.vae.load_state_dict(vae.state_dict(), strict=False)
    assert not [k for k in missing if "vgg" not in k and "discr" not in k] and not unexpected, (missing, unexpected)
    batches.parameters = {"transformer": params, "vqgan": sum(p.numel() for p in vae.parameters())}
    _train_reference(model, batches, "transformer", steps["transformer"], step, frozen=[model.vae])

    def draw(n: int, s: int) -> torch.Tensor:
        torch.manual_seed(s)
        with torch.no_grad():
            video = sample(n)  # (n, T, C, H, W), decoded from the VAE trained on [-1, 1]
        return video.permute(0, 2, 1, 3, 4).float().clamp(-1, 1)

    return draw


REFERENCE_TRAINERS: dict[str, Callable] = {"vdm": train_vdm, "nuwa": train_nuwa}

# the authors' repositories (another module, same contract)
if (Path(__file__).resolve().parent / "equal_compute_authors.py").is_file():
    import equal_compute_authors  # noqa: E402

    EQUAL_FAMILIES.update(getattr(equal_compute_authors, "AUTHORS_FAMILIES", {}))
    REFERENCE_TRAINERS.update(getattr(equal_compute_authors, "REFERENCE_TRAINERS", {}))


# --------------------------------------------------------------------------- the two sides of one seed


def run_reference_child(args) -> None:
    """``--train-reference``: train the reference of ``--family`` at ``--seed`` for ``--stage-steps`` and write
    ``samples.pt`` and ``reference.json`` into ``--work``."""
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    steps = json.loads(args.stage_steps)
    batches = Batches(args.family, args.seed, args.data)
    c0, t0 = time.process_time(), time.perf_counter()
    train = REFERENCE_TRAINERS[args.family]
    draw = train(Path(args.official) if args.official else None, batches, steps, args.seed, work)
    cpu_total = time.process_time() - c0
    wall = time.perf_counter() - t0
    s0 = time.perf_counter()
    chunks = [draw(min(args.sample_batch, args.samples - i), args.seed * 1000 + i)
              for i in range(0, args.samples, args.sample_batch)]
    videos = torch.cat(chunks)[: args.samples]
    sample_s = (time.perf_counter() - s0) / args.samples
    assert videos.dim() == 5 and videos.shape[1] == 3, videos.shape
    torch.save(videos.float().clamp(-1, 1), work / "samples.pt")
    cpu = batches.cpu_seconds or {list(steps)[-1]: cpu_total}
    record = {"steps": steps, "cpu_seconds": cpu, "cpu_seconds_total": cpu_total, "wall_seconds": wall,
              "cpu_s_per_step": {k: cpu[k] / steps[k] for k in cpu if steps.get(k)},
              "parameters": batches.parameters, "loss": batches.losses, "seconds_per_video": sample_s,
              "threads": torch.get_num_threads()}
    (work / "reference.json").write_text(json.dumps(record, indent=1) + "\n")


def train_kinema(family: str, steps: dict[str, int], wall_steps: int, seed: int, work: Path, n: int,
                 sample_batch: int, data: str, threads: int, log=print, official: Path | None = None) -> dict:
    """kinema's stages; the last one sampled at ``steps[last]`` (equal steps) and at ``wall_steps`` (continued
    with resume: equal wall clock). Returns per point its samples, steps, CPU seconds; per stage its record.
    A family whose spec says ``kinema_init = "reference"`` starts from the reference's initial weights of the
    seed (``equal_compute_authors.kinema_start``; ``official``: its checkout)."""
    from kinema import api

    fam = EQUAL_FAMILIES[family]
    runs: dict[str, Path] = {}
    stages, points = [], {}
    start_from = []
    if fam.get("kinema_init") == "reference":
        import equal_compute_authors

        start_from = equal_compute_authors.kinema_start(family, seed, work, official)
    for i, stage in enumerate(fam["stages"]):
        overrides = stage_overrides(stage, seed, data) + ([f"train.threads={threads}"] if threads else [])
        overrides += start_from if i == 0 else []
        if "first_stage" in stage:
            overrides.append(f"model.{stage['first_stage']}={runs[stage['first_stage']]}")
        out = work / stage["stage"]
        last = i == len(fam["stages"]) - 1
        targets = [steps[stage["stage"]]] + ([wall_steps] if last and wall_steps > steps[stage["stage"]] else [])
        done, cpu, record = 0, 0.0, {"stage": stage["stage"], "config": stage["config"], "chunks": []}
        for target in targets:
            log(f"  kinema {family} {stage['stage']}: training to step {target}")
            c0 = time.process_time()
            ckpt = Path(api.train(stage["config"], out, overrides=overrides, steps=target, device="cpu",
                                  progress=False, resume=done > 0))
            if threads:
                torch.set_num_threads(threads)
            took = time.process_time() - c0
            cpu += took
            record["chunks"].append({"to_step": target, "cpu_seconds": took})
            done = target
            if last:
                model, _ = api.load(ckpt)
                s0 = time.perf_counter()
                videos = api.generate(model, n, seed=seed, batch_size=sample_batch, **fam.get("kinema_sample", {}))
                spv = (time.perf_counter() - s0) / n
                name = "kinema_equal_steps" if target == targets[0] else "kinema_equal_wall_clock"
                points[name] = {"videos": videos.float(), "steps": target, "cpu_seconds": cpu,
                                "seconds_per_video": spv}
                del model
        record.update(steps=done, cpu_seconds=cpu, cpu_s_per_step=record["chunks"][0]["cpu_seconds"] / targets[0])
        stages.append(record)
        runs[stage["stage"]] = out
    if "kinema_equal_wall_clock" not in points:  # ratio >= 1: the equal-steps point is the wall-clock one
        points["kinema_equal_wall_clock"] = points["kinema_equal_steps"]
    return {"points": points, "stages": stages}


def loss_log(run: Path) -> list:
    """kinema's logged training losses of a run (metrics.jsonl, every ``train.log_every`` steps): ``loss``, or a
    tokenizer's reconstruction + commitment (NÜWA's VQ-GAN logs its terms)."""
    path = run / "metrics.jsonl"
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            loss = r.get("loss")
            if loss is None and "reconstruction" in r:
                loss = r["reconstruction"] + r.get("commitment", 0.0)
            if r.get("step") is not None and loss is not None:
                out.append([r["step"], loss])
    return out


# --------------------------------------------------------------------------- scoring and the report


def held_out(size: int, clips: int, data: str, weights_sha: str | None) -> tuple[torch.Tensor, str, dict]:
    """quality.py's held-out real set and its in-run / on-disk feature keys (the same as quality.py's run)."""
    disk_key = {"network": "i3d", "frames": quality.FRAMES, "num": clips, "seed": quality.HELD_OUT_SEED,
                "data": {"source": "synthetic", "family": data, "size": [quality.FRAMES, size, size],
                         "seed": quality.HELD_OUT_SEED, "set": "benchmarks/quality.py"},
                "weights_sha256": weights_sha}
    return (quality.real_clips(data, quality.HELD_OUT_SEED, clips, size),
            f"real/{data}/{size}/{quality.HELD_OUT_SEED}", disk_key)


def summarise(per_seed: list[dict]) -> dict:
    """Per row: mean and std over seeds of every measure, steps and CPU seconds per step."""
    out = {}
    for row in ROWS:
        rs = [s[row] for s in per_seed if row in s]
        if not rs:
            continue
        agg = {"seeds": len(rs)}
        for key in (*MEASURE_KEYS, "temporal_pixel_std_ratio", "seconds_per_video", "train_cpu_seconds"):
            vals = [r[key] for r in rs if r.get(key) is not None and math.isfinite(r[key])]
            if vals:
                agg[key], agg[f"{key}_std"] = quality.mean_std(vals)
        agg["steps"] = rs[0]["steps"]
        cps = [r["cpu_s_per_step"] for r in rs if r.get("cpu_s_per_step") is not None]
        if cps:  # per stage for multi-stage families
            agg["cpu_s_per_step"] = ({k: statistics.median(c[k] for c in cps) for k in cps[0]}
                                     if isinstance(cps[0], dict) else statistics.median(cps))
        out[row] = agg
    return out


def _cell(agg: dict, key: str, fmt: str) -> str:
    if key not in agg:
        return "–"
    std = agg.get(f"{key}_std")
    return format(agg[key], fmt) + (f" ± {format(std, fmt)}" if std is not None and math.isfinite(std) else "")


def target_reading(summary: dict) -> list[str]:
    """Is kinema at least as good as the reference at equal steps (within the seed spread: the difference of
    means no worse than the larger of the two stds) and better at equal wall clock (better mean)?"""
    better = {"fvd": "lower", "kvd": "lower", "speed_distance": "lower", "count_preserved": "higher",
              "physically_consistent": "higher"}
    ref = summary.get("reference_equal_steps", {})
    out = []
    for row, rule in (("kinema_equal_steps", "as_good"), ("kinema_equal_wall_clock", "better")):
        kin = summary.get(row, {})
        verdicts = []
        for key, way in better.items():
            if key not in kin or key not in ref:
                continue
            sign = 1 if way == "lower" else -1
            diff = sign * (kin[key] - ref[key])  # < 0: kinema better
            stds = [r.get(f"{key}_std") for r in (kin, ref)]
            spread = max([v for v in stds if v is not None and math.isfinite(v)], default=0.0)
            ok = diff <= spread if rule == "as_good" else diff < 0
            verdicts.append((key, ok))
        met = all(ok for _, ok in verdicts)
        out.append({"row": row, "rule": rule, "met": met, "per_measure": dict(verdicts)})
    return out


def render(record: dict, image_rel: str | None) -> str:
    fam, s = record["family"], record["summary"]
    lines = [f"<!-- equal_compute:{fam}:begin -->", "", f"### {fam} against {record['reference']}", "",
             "```bash", record["command"], "```", "",
             f"torch {record['torch']}, {record['threads']} CPU thread, seeds {', '.join(map(str, record['seeds']))}, "
             f"{record['samples']} samples per row against {record['clips']} held-out real clips (seed "
             f"{quality.HELD_OUT_SEED}), {record['data']} {quality.FRAMES} × {record['size']} × {record['size']}; "
             f"speed ratio kinema / reference {record['speed_ratio']:.3f} (benchmarks/results/reference_{fam}.json); "
             f"total {record['wall_seconds'] / 60:.1f} min.", "",
             "| row | steps | CPU-s/step | FVD | KVD | count preserved | physically consistent | speed distance |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in ROWS:
        agg = s.get(row)
        if not agg:
            continue
        steps = agg["steps"]
        steps = "+".join(f"{v}" for v in steps.values()) if isinstance(steps, dict) else str(steps)
        cps = agg.get("cpu_s_per_step")
        cps = "+".join(f"{v:.2f}" for v in cps.values()) if isinstance(cps, dict) else (
            "–" if cps is None else f"{cps:.2f}")
        lines.append(f"| {ROW_TITLES[row]} | {steps} | {cps} | {_cell(agg, 'fvd', '.1f')} | {_cell(agg, 'kvd', '.3f')} | "
                     f"{_cell(agg, 'count_preserved', '.3f')} | {_cell(agg, 'physically_consistent', '.3f')} | "
                     f"{_cell(agg, 'speed_distance', '.3f')} |")
    if len(record["stage_names"]) > 1:
        lines += ["", f"Steps and CPU-s/step per stage ({' + '.join(record['stage_names'])})."]
    lines += ["", "Mean ± std over seeds. CPU-s/step: median over seeds of the process CPU seconds of training "
              "per step (kinema's include its trainer's start-up, preview samples and checkpoints; the "
              "reference's only its loop body)."]
    verdict = {r["row"]: r for r in record["target"]}
    lines += ["", "Target (kinema at least as good as the reference within the seed spread at equal steps, better "
              "at equal wall clock) per measure:", ""]
    for row, r in verdict.items():
        per = ", ".join(f"{k} {'yes' if ok else 'no'}" for k, ok in r["per_measure"].items())
        lines.append(f"- {ROW_TITLES[row]}: {'met' if r['met'] else 'not met'} ({per})")
    if image_rel and record.get("image"):
        lines += ["", f"Samples, seed {record['seeds'][0]} (rows: the first 4 samples of each side; columns: frames "
                  "0, 3, 7, 11, 15). Left: kinema at equal steps; middle: the reference at equal steps; right: kinema "
                  "at equal wall clock.", "", f"![{fam}: kinema and the reference]({image_rel}/{Path(record['image']).name})"]
    if record.get("notes"):
        lines += ["", *record["notes"]]
    lines += ["", f"<!-- equal_compute:{fam}:end -->"]
    return "\n".join(lines) + "\n"


def write_report(path: Path, block: str, family: str) -> None:
    """Put ``block`` under the section at the end of ``path`` (replacing the family's earlier block)."""
    import re

    text = path.read_text() if path.is_file() else "# Generated video quality\n"
    begin, end = f"<!-- equal_compute:{family}:begin -->", f"<!-- equal_compute:{family}:end -->"
    match = re.search(rf"^{re.escape(begin)}[ \t]*$.*?^{re.escape(end)}[ \t]*\n?", text, re.M | re.S)
    if match:
        text = text[:match.start()] + block + text[match.end():]
    else:
        if SECTION not in text:
            text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + (
                "Generated by `benchmarks/equal_compute.py` (one block per family between its "
                "`equal_compute:<family>` markers, rewritten on each run): kinema and the reference trained on the "
                "same clips, batches, optimiser and steps at the `*_cpu16` architectures matched in "
                "`benchmarks/reference.py`, scored as above against the same held-out clips; the module's "
                "docstring lists what differs per family.\n")
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def side_by_side(grids: list[torch.Tensor], path: Path, num: int = 4) -> Path:
    """The first ``num`` samples of each set, as quality.save_sample_png grids, side by side (white gap)."""
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        images = [np.asarray(Image.open(quality.save_sample_png(v, Path(tmp) / f"{i}.png", num=num)))
                  for i, v in enumerate(grids)]
    h = max(im.shape[0] for im in images)
    gap = np.full((h, 8, 3), 255, np.uint8)
    parts = []
    for im in images:
        pad = np.full((h - im.shape[0], im.shape[1], 3), 255, np.uint8)
        parts += [np.concatenate([im, pad]), gap]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(parts[:-1], axis=1)).save(path)
    return path


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/equal_compute.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:3]))
    p.add_argument("--family", required=True, help=f"model family: {', '.join(EQUAL_FAMILIES)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated train.seed values; each trains both sides "
                                                    "(dataset, batch order, init and sampling seed) (default 0,1,2)")
    p.add_argument("--steps", help="training steps at equal steps: N (the last stage; earlier stages keep their "
                                   "defaults) or STAGE=N,... (default: the family's, EQUAL_FAMILIES)")
    p.add_argument("--clips", type=int, default=96, help="held-out real clips scored against (default 96)")
    p.add_argument("--samples", type=int, help="samples per row and seed (default: --clips)")
    p.add_argument("--data", default="bouncing_shapes", choices=quality.DATA_FAMILIES,
                   help="synthetic data family of training and held-out clips (default bouncing_shapes)")
    p.add_argument("--i3d", default=os.environ.get("KINEMA_I3D_WEIGHTS"),
                   help="converted I3D weights for FVD/KVD (default $KINEMA_I3D_WEIGHTS)")
    p.add_argument("--official", help="a checkout of the authors' repository (families of "
                                      "equal_compute_authors.py); the PyPI references need none")
    p.add_argument("--out", help="JSON record (default benchmarks/results/equal_compute_<family>.json)")
    p.add_argument("--images", help="folder for the side-by-side grid (default: images/ next to --report; "
                                    "none without either)")
    p.add_argument("--report", help="markdown file whose equal-compute section gets this family's block "
                                    "(e.g. docs/quality.md)")
    p.add_argument("--workdir", help="folder for the runs and samples (default: a temporary folder, deleted)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every process (default 1)")
    p.add_argument("--sample-batch", type=int, default=16, help="sampling batch of both sides (default 16)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the real-set I3D feature cache")
    # the reference's child process
    p.add_argument("--train-reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--stage-steps", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    return p


PLACEHOLDERS = {"--i3d": "I3D.safetensors", "--workdir": "WORKDIR", "--official": "CHECKOUT"}


def public_argv(argv: list[str]) -> list[str]:
    """``argv`` without machine paths: paths inside the repository relative to it, others a placeholder."""
    out, flag = [], None
    for a in argv:
        if flag in PLACEHOLDERS:
            a = PLACEHOLDERS[flag]
        elif flag is not None and os.path.isabs(a):
            p = Path(a).resolve()
            a = str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else flag.strip("-").upper()
        out.append(a)
        flag = a if a.startswith("--") else None
    return out


def stage_steps(family: str, text: str | None) -> dict[str, int]:
    stages = EQUAL_FAMILIES[family]["stages"]
    steps = {s["stage"]: int(s["steps"]) for s in stages}
    if text:
        if "=" in text:
            for item in text.split(","):
                name, _, n = item.partition("=")
                if name.strip() not in steps:
                    raise SystemExit(f"--steps {text!r}: {family} has the stages {', '.join(steps)}")
                steps[name.strip()] = int(n)
        else:
            steps[stages[-1]["stage"]] = int(text)
    if any(n < 1 for n in steps.values()):
        raise SystemExit(f"--steps {text!r}: every stage needs at least 1 step")
    return steps


def run(argv=None, feature_fn=None, log=print) -> dict:
    """The benchmark; ``feature_fn`` replaces I3D (tests: no disk cache then)."""
    args = build_parser().parse_args(argv)
    if args.family not in EQUAL_FAMILIES:
        raise SystemExit(f"unknown --family {args.family!r}; choose from {', '.join(EQUAL_FAMILIES)}")
    args.samples = args.samples or args.clips
    if args.train_reference:
        run_reference_child(args)
        return {}
    fam = EQUAL_FAMILIES[args.family]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    steps = stage_steps(args.family, args.steps)
    last = fam["stages"][-1]["stage"]
    ratio = fam["speed_ratio"]
    if ratio is None:
        raise SystemExit(f"no speed ratio for {args.family}: run benchmarks/reference.py --family {args.family} "
                         f"--out benchmarks/results/reference_{args.family}.json first")
    wall_steps = max(steps[last], round(steps[last] / ratio))
    torch.set_num_threads(args.threads)
    weights_sha, cache_dir = None, None
    if feature_fn is None:
        from kinema.files import file_sha256
        from kinema.metrics.evaluate import default_cache_dir

        weights = quality.check_i3d(args.i3d)
        feature_fn = quality.i3d_feature_fn(weights, "cpu")
        weights_sha = file_sha256(weights)
        cache_dir = None if args.no_cache else default_cache_dir()
    features = quality.Features(feature_fn, log, cache_dir)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "OMP_NUM_THREADS=1 " + " ".join(["python", "benchmarks/equal_compute.py",
                                                *map(shlex.quote, public_argv(argv_list))])
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kinema_equal_"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    per_seed, grid_sets, size = [], None, None

    def finish() -> dict:
        """The record, grid and report of the seeds done so far (written after every seed)."""
        summary = summarise(per_seed)
        record = {"family": args.family, "reference": fam["reference"], "reference_version": None,
                  "stage_names": list(steps), "stages": [{k: v for k, v in s.items()} for s in fam["stages"]],
                  "seeds": [r["seed"] for r in per_seed], "clips": args.clips, "samples": args.samples, "data": args.data, "size": size,
                  "speed_ratio": ratio, "equal_steps": steps, "wall_clock_steps": {**steps, last: wall_steps},
                  "threads": args.threads, "torch": torch.__version__, "held_out_seed": quality.HELD_OUT_SEED,
                  "summary": summary, "per_seed": per_seed, "command": command,
                  "wall_seconds": time.perf_counter() - t_start}
        pkg = {"vdm": "video-diffusion-pytorch", "nuwa": "nuwa-pytorch"}.get(args.family)
        if pkg:
            record["reference_version"] = reference._version(pkg)
        record["target"] = target_reading(summary)
        images = Path(args.images) if args.images else (Path(args.report).parent / "images" if args.report else None)
        if images is not None and grid_sets is not None:
            record["image"] = str(side_by_side(grid_sets, images / f"equal_compute_{args.family}.png"))
        out = Path(args.out) if args.out else RESULTS / f"equal_compute_{args.family}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        saved = {**record, "image": Path(record["image"]).name if record.get("image") else None}
        out.write_text(json.dumps(saved, indent=1, default=str) + "\n")
        if args.report:
            rel = os.path.relpath(images, Path(args.report).parent) if images is not None else None
            write_report(Path(args.report), render(record, rel), args.family)
            log(f"report: {args.report}")
        log(json.dumps(summary, indent=1))
        log(f"record: {out}")
        return record

    try:
        for seed in seeds:
            log(f"seed {seed}: kinema")
            kin = train_kinema(args.family, steps, wall_steps, seed, work / f"kinema_{seed}", args.samples,
                               args.sample_batch, args.data, args.threads, log,
                               Path(args.official) if args.official else None)
            log(f"seed {seed}: reference ({fam['reference']}), its own process")
            ref_dir = work / f"reference_{seed}"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--train-reference", "--family", args.family,
                   "--seed", str(seed), "--stage-steps", json.dumps(steps), "--work", str(ref_dir),
                   "--samples", str(args.samples), "--sample-batch", str(args.sample_batch),
                   "--threads", str(args.threads), "--data", args.data, "--clips", str(args.clips)]
            if args.official:
                cmd += ["--official", str(args.official)]
            subprocess.run(cmd, check=True, env=dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS=str(args.threads)))
            ref_rec = json.loads((ref_dir / "reference.json").read_text())
            ref_videos = torch.load(ref_dir / "samples.pt")
            size = ref_videos.shape[-1]
            real, ref_key, disk_key = held_out(size, args.clips, args.data, weights_sha)
            log(f"seed {seed}: scoring")
            rows = {}
            kin_stage_cps = {s["stage"]: s["cpu_s_per_step"] for s in kin["stages"]}
            for name, videos, extra in (
                ("kinema_equal_steps", kin["points"]["kinema_equal_steps"]["videos"], kin["points"]["kinema_equal_steps"]),
                ("reference_equal_steps", ref_videos, None),
                ("kinema_equal_wall_clock", kin["points"]["kinema_equal_wall_clock"]["videos"],
                 kin["points"]["kinema_equal_wall_clock"]),
            ):
                scored = quality.flat(quality.score(videos, real, features, ref_key, ref_disk_key=disk_key))
                row = {k: v for k, v in scored.items() if isinstance(v, (int, float))}
                if extra is not None:
                    st = {**steps, last: extra["steps"]}
                    row.update(steps=st if len(st) > 1 else st[last], seconds_per_video=extra["seconds_per_video"],
                               cpu_s_per_step=kin_stage_cps if len(kin_stage_cps) > 1 else kin_stage_cps[last],
                               train_cpu_seconds=sum(s["cpu_seconds"] for s in kin["stages"][:-1]) + extra["cpu_seconds"])
                else:
                    cps = ref_rec["cpu_s_per_step"]
                    row.update(steps=steps if len(steps) > 1 else steps[last],
                               seconds_per_video=ref_rec["seconds_per_video"],
                               cpu_s_per_step=cps if len(cps) > 1 else cps.get(last),
                               train_cpu_seconds=sum(ref_rec["cpu_seconds"].values()), parameters=ref_rec["parameters"],
                               loss=ref_rec["loss"])
                rows[name] = row
                log(f"  {ROW_TITLES[name]}: FVD {row['fvd']:.1f}, KVD {row['kvd']:.3f}, count preserved "
                    f"{row['count_preserved']:.3f}, physically consistent {row['physically_consistent']:.3f}, "
                    f"speed distance {row['speed_distance']:.3f}")
            rows["kinema_loss"] = {s["stage"]: loss_log(work / f"kinema_{seed}" / s["stage"]) for s in fam["stages"]}
            rows["kinema_stages"] = kin["stages"]
            rows["seed"] = seed
            per_seed.append(rows)
            if grid_sets is None:
                grid_sets = [kin["points"]["kinema_equal_steps"]["videos"], ref_videos,
                             kin["points"]["kinema_equal_wall_clock"]["videos"]]
            del kin
            finish()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return finish()


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
