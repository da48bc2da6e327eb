"""Named evaluation protocols: which network, how many clips, how many frames, which statistic.

A protocol name fixes everything that moves the number, so results under one name are comparable:

- ``fvd2048_16f`` / ``fvd2048_128f``: Fréchet distance of I3D (Kinetics-400) logits, 2,048 real vs
  2,048 generated clips of 16 / 128 frames, generated videos quantised to uint8 first, frames resized
  to 224x224 with TF1 bilinear resizing, TF-Hub I3D weights, covariance with N - 1. Real clips: one per
  video, from its first frame, of 2,048 videos in a seeded order. The names are StyleGAN-V's metric names
  but the protocols are kinema's own: StyleGAN-V takes each real clip at a random offset, from the first
  2,048 videos, through its own TorchScript I3D, covariance with N (docs/metrics.md lists the differences).
- ``kvd2048_16f``: unbiased MMD² with the cubic polynomial kernel on the same I3D logits, all pairs.
- ``fid_frames50k``: frame FID, Inception-v3 (TF FID graph) pool3 features of 50,000 individual frames
  (all 16 frames of 3,125 clips) of real and generated videos, generated videos quantised to uint8.
- ``is2048_c3d_tganv2``: Inception Score of the UCF-101 C3D, 2,048 generated clips of 16 frames,
  TGANv2's preprocessing, one split, repeated 10 times with fresh samples -> mean ± std.
- ``motion256``: the oracle motion measures of :mod:`kinema.metrics.oracle` (no network, no weights) on 256
  generated vs 256 real clips at the model's frame count; the value is the fraction of physically
  consistent clips (higher is better), the other measures come with it. Meaningful only for the
  synthetic families with bright objects on a dark background (docs/oracle.md).
- ``bestof100_ssim_psnr``: prediction models (``capabilities.conditions`` has ``"frames"``): 100 sampled
  futures of each of 256 held-out clips' contexts, best-of-100 SSIM and PSNR per predicted frame (the
  future with the best mean over frames; SVG's and DVG's protocol), :mod:`kinema.metrics.prediction`.
  The value is the mean best SSIM; the per-frame curves and the copy-last-frame baseline come with it.
- ``modes_diversity10``: prediction models on synthetic data with ground-truth motion modes
  (``action_switch_digits``): the fraction of 10 sampled futures per clip (256 clips) that change motion
  mode (:func:`kinema.metrics.prediction.diversity_score`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Protocol:
    name: str
    network: Literal["i3d", "c3d", "inception", "none"]
    statistic: Literal["fvd", "kvd", "is", "fid", "oracle", "best_of_n", "diversity"]
    num_samples: int  # clips, or frames for the frame-level FID
    frames: int  # 0: the model's own frame count
    repeats: int = 1  # IS: independent sample sets, reported as mean ± std
    c3d_preprocessing: str = "tganv2"
    futures: int = 1  # prediction protocols: sampled futures per real clip

    @property
    def needs_real(self) -> bool:
        return self.statistic in ("fvd", "kvd", "fid", "oracle", "best_of_n", "diversity")

    def clips_for(self, count: int) -> int:
        """Clips to draw for ``count`` samples (FID counts frames: every frame of a clip is one)."""
        return -(-count // self.frames) if self.statistic == "fid" else count


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("fvd2048_16f", "i3d", "fvd", 2048, 16),
        Protocol("fvd2048_128f", "i3d", "fvd", 2048, 128),
        Protocol("kvd2048_16f", "i3d", "kvd", 2048, 16),
        Protocol("fid_frames50k", "inception", "fid", 50_000, 16),
        Protocol("is2048_c3d_tganv2", "c3d", "is", 2048, 16, repeats=10, c3d_preprocessing="tganv2"),
        Protocol("motion256", "none", "oracle", 256, 0),
        Protocol("bestof100_ssim_psnr", "none", "best_of_n", 256, 0, futures=100),
        Protocol("modes_diversity10", "none", "diversity", 256, 0, futures=10),
    )
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
