"""Measurements of NÜWA's tasks on captioned_shapes (the numbers of docs/models/nuwa.md), and frame strips.

``python benchmarks/nuwa_measure.py text RUN`` -- text-to-video: videos for captions covering every
colour x direction pair; the generated object's colour (the palette colour nearest to the mean of its
bright pixels) and direction (the sign of its centre-of-mass displacement along the larger axis) are
compared with the caption's. Chance is 1/4 for each. The same reader on real clips is the reader's ceiling.
``... sketch RUN``: videos for held-out sketches; IoU of the generated object (bright pixels) with the
given mask, vs with the mask of another clip. ``... predict RUN``: PSNR of the frames predicted from the
model's given frames (``cond_frames``, at least 1) of held-out clips vs copying the last given frame -- also
for a frame-conditional VideoGPT prior (``videogpt_prior`` with ``model.cond_frames``)
(``--future N`` scores the next N frames only; ``--futures K`` adds best-of-K). ``... nll RUN``: held-out next-token cross-entropy (nats per token,
teacher forcing, no sampling noise) for each task of the model, over all target tokens and over the tokens after
the given frames. ``... tokenizer RUN``: held-out reconstruction PSNR vs the
per-pixel mean frame of training clips (both: ``--family`` picks the synthetic data, default captioned_shapes). ``--strip PNG`` writes frame strips (rows = videos, columns =
frames) to look at. Held-out clips use seed 999 (training uses 0).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter

import numpy as np
import torch

from kinema.data.captioned import COLOURS, DIRECTIONS, SHAPES, CaptionedShapes

PALETTE = torch.tensor(list(COLOURS.values()))  # (4, 3) in [-1, 1]


def object_mask(video: torch.Tensor) -> torch.Tensor:
    """``(3, T, H, W)`` -> ``(T, H, W)`` bool: pixels whose brightest channel is > 0 (the background is
    below -0.75 in every channel, the objects have a channel at 1)."""
    return video.max(0).values > 0


def read_colour(video: torch.Tensor) -> str | None:
    """The palette colour nearest to the mean of the object's pixels (None: no object pixels)."""
    m = object_mask(video)
    if m.sum() < 4:
        return None
    mean = video[:, m].mean(1)
    return list(COLOURS)[int(((PALETTE - mean) ** 2).sum(1).argmin())]


def read_direction(video: torch.Tensor) -> str | None:
    """left/right/up/down from the object's centre of mass, first to last frame with object pixels."""
    m = object_mask(video).float()
    t, h, w = m.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    area = m.sum((1, 2))
    ok = area >= 2
    if ok.sum() < 2:
        return None
    com = torch.stack([(m * ys).sum((1, 2)) / area.clamp(min=1), (m * xs).sum((1, 2)) / area.clamp(min=1)], 1)
    idx = ok.nonzero().flatten()
    dy, dx = (com[idx[-1]] - com[idx[0]]).tolist()
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) / 2).pow(2).mean()))


def strip(videos: torch.Tensor, path: str, scale: int = 2) -> None:
    """Rows = videos ``(N, 3, T, H, W)``, columns = frames, 1-pixel gaps; PNG upscaled ``scale`` times."""
    from PIL import Image

    n, _, t, h, w = videos.shape
    canvas = np.full((n * (h + 1) - 1, t * (w + 1) - 1, 3), 255, dtype=np.uint8)
    u8 = ((videos.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1).numpy()
    for i in range(n):
        for j in range(t):
            canvas[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = u8[i, j]
    Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST).save(path)


def held_out(model, n: int, seed: int = 999) -> CaptionedShapes:
    cfg = model.config
    return CaptionedShapes(num_clips=n, frames=cfg.frames, height=cfg.resolution, width=cfg.resolution, seed=seed)


def clips_of(model, family: str, n: int, seed: int) -> torch.Tensor:
    """``(n, 3, T, H, W)``: the first ``n`` clips of a synthetic family (items may be tensors or Batches)."""
    from kinema.data import SYNTHETIC_FAMILIES

    cfg = model.config
    ds = SYNTHETIC_FAMILIES[family](num_clips=n, frames=cfg.frames, height=cfg.resolution, width=cfg.resolution,
                                    seed=seed)
    return torch.stack([getattr(ds[i], "clips", ds[i]) for i in range(n)])


def measure_text(model, num: int, guidance: float, top_k: int, strip_path: str | None) -> dict:
    pairs = [(c, d) for c in COLOURS for d in DIRECTIONS]
    captions = [f"a {c} {SHAPES[i % 2]} moves {d}" for i, (c, d) in
                enumerate(pairs[k % len(pairs)] for k in range(num))]
    seeds = torch.arange(num) + 1000
    videos = model.sample(seeds, text=captions, guidance=guidance, top_k=top_k)
    colour = [read_colour(v) for v in videos]
    direction = [read_direction(v) for v in videos]
    want = [(c.split()[1], c.split()[-1]) for c in captions]
    real = held_out(model, 64)
    real_ok = [(read_colour(real.item(i).clips), read_direction(real.item(i).clips)) ==
               (real.ground_truth(i)["colour"], real.ground_truth(i)["direction"]) for i in range(64)]
    uncond = model.sample(seeds, top_k=top_k)
    u_colour = [read_colour(v) for v in uncond]
    u_direction = [read_direction(v) for v in uncond]
    if strip_path:
        strip(videos[:8], strip_path)
    return {
        "num": num, "guidance": guidance, "top_k": top_k,
        "colour_agreement": float(np.mean([c == w[0] for c, w in zip(colour, want)])),
        "direction_agreement": float(np.mean([d == w[1] for d, w in zip(direction, want)])),
        "both_agreement": float(np.mean([(c, d) == w for c, d, w in zip(colour, direction, want)])),
        "unconditional_vs_same_captions_colour": float(np.mean([c == w[0] for c, w in zip(u_colour, want)])),
        "unconditional_vs_same_captions_direction": float(np.mean([d == w[1] for d, w in zip(u_direction, want)])),
        "no_object_read": int(sum(c is None for c in colour)),
        # which colours are missed, and as what: "wanted->read" counts (None: no object read)
        "colour_misses": dict(Counter(f"{w[0]}->{c}" for c, w in zip(colour, want) if c != w[0])),
        "reader_on_real_clips": float(np.mean(real_ok)),
        "chance": 0.25, "captions_of_strip": captions[:8],
    }


def measure_sketch(model, num: int, guidance: float, top_k: int, strip_path: str | None) -> dict:
    data = held_out(model, num + 1)
    masks = torch.stack([data.item(i).masks for i in range(num + 1)]).long()
    videos = model.sample(torch.arange(num) + 1000, masks=masks[:num], guidance=guidance, top_k=top_k)

    def iou(a, b):
        return float((a & b).sum() / (a | b).sum().clamp(min=1))

    own = [iou(object_mask(v), masks[i] > 0) for i, v in enumerate(videos)]
    other = [iou(object_mask(v), masks[i + 1] > 0) for i, v in enumerate(videos)]
    if strip_path:
        sketches = (masks[:4, None].float() > 0).expand(-1, 3, -1, -1, -1) * 2.0 - 1
        rows = torch.stack([x for pair in zip(sketches, videos[:4]) for x in pair])
        strip(rows, strip_path)
    return {"num": num, "guidance": guidance, "top_k": top_k, "iou_with_its_sketch": float(np.mean(own)),
            "iou_with_another_clip's_sketch": float(np.mean(other))}


def measure_predict(model, num: int, top_k: int, strip_path: str | None, family: str, future: int = 0,
                    futures: int = 1) -> dict:
    """Held-out clips continued from their first ``k = cond_frames`` frames (at least 1) by a NÜWA or a
    frame-conditional VideoGPT prior (both ``model.sample(seeds, frames=..., top_k=...)``): PSNR (of the mean
    MSE, pixels in [0, 1]) over the next ``future`` frames (0: all the rest) against copying the last given
    frame, issue 30's frame-conditional protocol. ``futures > 1`` draws that many futures per clip (seeds
    1000 + clip + num * j) and adds the best-of-``futures`` PSNR (the future nearest each clip, per clip) and
    the futures' pairwise RMS distance (how different the draws are; pixels in [-1, 1])."""
    clips = clips_of(model, family, num, 999)
    k = max(model.config.cond_frames, 1)
    stop = clips.shape[2] if future <= 0 else min(k + future, clips.shape[2])
    draws = [model.sample(torch.arange(num) + 1000 + num * j, frames=clips[:, :, :k], top_k=top_k)
             for j in range(futures)]
    pred = draws[0]
    copy = clips[:, :, k - 1:k].expand_as(clips)
    if hasattr(model, "vqgan"):  # NÜWA: its VQ-GAN's tokens of the clips
        recon = model.vqgan.decode(model.encode(clips)).clamp(-1, 1)
    else:  # a VideoGPT prior: its VQ-VAE's codes
        recon = model.vqvae.decode(model.vqvae.encode(clips)).clamp(-1, 1)
    if strip_path:
        strip(torch.stack([x for pair in zip(clips[:4], pred[:4]) for x in pair]), strip_path)
    target = clips[:, :, k:stop]
    out = {"num": num, "top_k": top_k, "given_frames": k, "scored_frames": [k, stop - 1],
           "psnr_predicted_frames": psnr(pred[:, :, k:stop], target),
           "psnr_copy_last_given_frame": psnr(copy[:, :, k:stop], target),
           "psnr_tokenizer_reconstruction_same_frames": psnr(recon[:, :, k:stop], target)}
    out["gain_over_copy_db"] = out["psnr_predicted_frames"] - out["psnr_copy_last_given_frame"]
    if futures > 1:
        stack = torch.stack([d[:, :, k:stop] for d in draws])  # (futures, num, 3, F, H, W)
        mse = ((stack - target) / 2).pow(2).flatten(2).mean(2)  # (futures, num)
        out["futures"] = futures
        out["psnr_best_of_futures"] = float(-10 * torch.log10(mse.min(0).values.mean()))
        pairs = [(a, b) for a in range(futures) for b in range(a + 1, futures)]
        out["futures_pairwise_rms"] = float(np.mean([(stack[a] - stack[b]).pow(2).mean().sqrt() for a, b in pairs]))
    return out


def measure_nll(model, num: int, family: str, batch: int = 16) -> dict:
    """Held-out cross-entropy (nats/token) per task: all target tokens, and the tokens after the first
    ``cond_frames`` frames (what a prediction model predicts). Text and sketch read the clips' captions and
    masks (captioned_shapes)."""
    import torch.nn.functional as F

    cfg = model.config
    data = held_out(model, num) if family == "captioned_shapes" else None
    clips = clips_of(model, family, num, 999)
    per_frame = math.prod(model.token_grid[1:])
    skip = max(cfg.cond_frames, 1) * per_frame
    out = {"num": num, "family": family}
    for task in model.tasks:
        if task in ("text", "sketch") and data is None:
            continue
        total = after = 0.0
        for s in range(0, num, batch):
            rows = range(s, min(s + batch, num))
            codes = model.encode(clips[s : s + batch])
            text = [data.item(i).text for i in rows] if data is not None else None
            masks = torch.stack([data.item(i).masks for i in rows]).long() if data is not None else None
            logits = model.logits(codes, task=task, text=text, masks=masks).float()
            ce = F.cross_entropy(logits.transpose(1, 2), codes.flatten(1), reduction="none")  # (b, L)
            total += float(ce.mean(1).sum())
            after += float(ce[:, skip:].mean(1).sum())
        out[f"nll_{task}"] = total / num
        out[f"nll_{task}_after_frame_{skip // per_frame}"] = after / num
    return out


def measure_tokenizer(model, num: int, strip_path: str | None, family: str) -> dict:
    mean = clips_of(model, family, 256, 0).mean((0, 2), keepdim=True)[0]  # (3, 1, H, W)
    clips = clips_of(model, family, num, 999)
    with torch.no_grad():
        codes = model.encode(clips)
        recon = model.decode(codes).clamp(-1, 1)
        used = codes.unique().numel()
    if strip_path:
        strip(torch.stack([x for pair in zip(clips[:4], recon[:4]) for x in pair]), strip_path)
    out = {"num": num, "psnr_reconstruction": psnr(recon, clips),
           "psnr_mean_frame": psnr(mean[None].expand_as(clips), clips), "codes_used": used}
    if family == "captioned_shapes":
        # The tokenizer's ceiling for text-to-video: the caption reader on its reconstructions of held-out clips.
        # A transformer that predicts these codes perfectly scores this, no more.
        data = held_out(model, num)
        truth = [data.ground_truth(i) for i in range(num)]
        colour = [read_colour(v) for v in recon]
        direction = [read_direction(v) for v in recon]
        out["reconstruction_colour_agreement"] = float(np.mean([c == g["colour"] for c, g in zip(colour, truth)]))
        out["reconstruction_direction_agreement"] = float(np.mean([d == g["direction"]
                                                                   for d, g in zip(direction, truth)]))
        out["reconstruction_colour_misses"] = dict(Counter(f"{g['colour']}->{c}" for c, g in zip(colour, truth)
                                                           if c != g["colour"]))
    return out


def main(argv=None) -> None:
    from kinema.api import load

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["text", "sketch", "predict", "nll", "tokenizer", "speed"])
    p.add_argument("run")
    p.add_argument("--num", type=int, default=32)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--strip", default=None)
    p.add_argument("--family", default="captioned_shapes", help="predict / tokenizer: the synthetic family")
    p.add_argument("--future", type=int, default=0,
                   help="predict: frames after the given ones to score (default 0: all the rest)")
    p.add_argument("--futures", type=int, default=1,
                   help="predict: futures drawn per clip; > 1 adds best-of-N PSNR and their pairwise RMS")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load(args.run)
    model.eval()
    with torch.no_grad():
        if args.what == "text":
            out = measure_text(model, args.num, args.guidance, args.top_k, args.strip)
        elif args.what == "sketch":
            out = measure_sketch(model, args.num, args.guidance, args.top_k, args.strip)
        elif args.what == "predict":
            out = measure_predict(model, args.num, args.top_k, args.strip, args.family, args.future, args.futures)
        elif args.what == "nll":
            out = measure_nll(model, args.num, args.family)
        elif args.what == "tokenizer":
            out = measure_tokenizer(model, args.num, args.strip, args.family)
        else:
            noise = torch.arange(4)
            out = {}
            for cache in (True, False):
                start = time.perf_counter()
                model.sample_codes(noise, text="a red square moves left" if "text" in model.tasks else None,
                                   use_cache=cache)
                out[f"seconds_cache_{cache}"] = time.perf_counter() - start
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
