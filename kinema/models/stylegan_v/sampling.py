"""``kinema sample`` for StyleGAN-V: any time points (the continuous-time flags), any length, and the
content / motion decomposition (``--motion-seed``: the videos of ``--seed`` with the motion of another seed)."""

from __future__ import annotations

import torch

from kinema.errors import SamplingError
from kinema.sampling import ContinuousTimeSampler, SampleOption


class StyleGANVSampler(ContinuousTimeSampler):
    """Continuous-time sampling whose noise covers the requested times: the motion noise is drawn for
    ``max(t)`` (it extends the default noise, so shared times give the same frames at any length)."""

    options = ContinuousTimeSampler.options + (
        SampleOption("motion_seed", "StyleGAN-V: keep each video's content (w from --seed) and draw its motion "
                                    "noise from this seed instead", int, metavar="S"),
        SampleOption("truncation_psi", "StyleGAN-V: truncation of w towards its average (1 = none)", float),
    )

    def __init__(self) -> None:
        super().__init__()

    def frame_rate_scale(self, model, motion_seed=None, truncation_psi=None, **options) -> float:
        return super().frame_rate_scale(model, **options)

    def run(self, model, num, seed, batch_size, progress, motion_seed=None, truncation_psi=None, **options):
        if num <= 0 or batch_size <= 0:
            raise SamplingError(f"--num and --batch-size must be > 0, got {num}, {batch_size}")
        times = self.times(model, **options)
        if times is None:
            times = torch.arange(model.video_shape[1], dtype=torch.float32)
        t_max = float(times.max())
        noise = model.sample_noise(num, torch.Generator().manual_seed(seed), model.device, t_max=t_max)
        if motion_seed is not None:
            other = model.sample_noise(num, torch.Generator().manual_seed(motion_seed), model.device, t_max=t_max)
            noise = model.join_noise(model.split_noise(noise)[0], model.split_noise(other)[1])
        psi = 1.0 if truncation_psi is None else truncation_psi
        with torch.no_grad():
            return torch.cat([model.sample(chunk, times=times, truncation_psi=psi).cpu()
                              for chunk in noise.split(batch_size)])
