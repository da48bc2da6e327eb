"""DVG parity: the official code (github.com/shgaurav1/DVG) vs kinema, same weights, same inputs.

    python benchmarks/parity.py --family dvg --official /path/to/DVG --official-python /path/to/venv03/bin/python

The official side runs in its own venv (gpytorch 0.3.6, see benchmarks/parity_dvg_official.py for the venv
and the shims) and saves ``model.pth`` as train.py does; ``kinema convert dvg`` converts it; both compute the
encoder's latent and skip maps, the decoder's frame, the GP predictive mean and variance (observation noise
included) and the trigger statistic, the negative ELBO, and the deterministic LSTM rollout of
generate_frames.py's make_gifs. The rollout is compared as kinema returns video: frames in [-1, 1], clamped
(the official tanh decoder can leave [0, 1]; kinema clamps the returned video, not what it feeds back).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
CONFIGS = {"tiny": {}, "paper": {}}  # sizes: parity_dvg_official.CONFIGS


def official_outputs(official: Path, config: str, seed: int, work: Path) -> Path:
    python = os.environ.get("PARITY_OFFICIAL_PYTHON", sys.executable)
    subprocess.run([python, str(HERE / "parity_dvg_official.py"), str(official), config, str(seed), str(work)],
                   check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return work


def kinema_outputs(checkpoint: Path, inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The same outputs from the converted checkpoint, through kinema's public model API."""
    import gpytorch

    import kinema

    model, _ = kinema.load(checkpoint)
    x = torch.from_numpy(inputs["x"])  # (T, B, 1, 64, 64) in [0, 1]
    target = torch.from_numpy(inputs["target"])
    n_past, n_future = model.config.n_past, x.shape[0] - model.config.n_past
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        h, skips = model.encoder(x[0])
        out["encoder_h"] = h
        out.update({f"encoder_skip{i}": s for i, s in enumerate(skips)})
        out["decoder"] = model.decoder(h, skips)
        mean, var = model.gp.predictive(h)
        out["gp_mean"], out["gp_variance"], out["gp_variance_norm"] = mean, var, var.norm(dim=1)
        clips = (x.permute(1, 2, 0, 3, 4) * 2 - 1).expand(-1, 3, -1, -1, -1)  # (B, 3, T, H, W) in [-1, 1]
        video = model.sample(torch.zeros(x.shape[1], dtype=torch.long), frames=clips[:, :, :n_past],
                             n_future=n_future, trigger="never")
        out["rollout"] = video[:, 0].permute(1, 0, 2, 3)[:, :, None]  # (T, B, 1, H, W) in [-1, 1]
    model.gp.train()
    with torch.no_grad():
        out["neg_elbo"] = model.gp.neg_elbo(model.gp.posterior(h), target, num_data=x.shape[1])[None]
    model.gp.double().eval()  # float64: see parity_dvg_official.py
    with torch.no_grad():
        gp64 = model.gp.likelihood(model.gp.gp(h.double().transpose(0, 1).unsqueeze(-1)))
        out["gp_mean_float64"], out["gp_variance_float64"] = gp64.mean.transpose(0, 1), gp64.variance.transpose(0, 1)
        model.gp.train()
        mll = gpytorch.mlls.VariationalELBO(model.gp.likelihood, model.gp.gp, num_data=x.shape[1])
        f = model.gp.gp(h.double().transpose(0, 1).unsqueeze(-1))
        out["neg_elbo_float64"] = -mll(f, target.double().transpose(0, 1)).sum()[None]
    model.gp.float().eval()
    return out


def compare(official: dict[str, np.ndarray], ours: dict[str, torch.Tensor]) -> list[tuple]:
    rows = []
    for name, value in ours.items():
        reference = torch.from_numpy(official[name]).to(torch.float64)
        if name == "rollout":
            reference = (reference * 2 - 1).clamp(-1, 1)
        diff = (value.to(torch.float64) - reference).abs().max().item()
        rows.append((name, diff, diff / max(reference.abs().max().item(), 1e-30), tuple(reference.shape)))
    for name in ("gp_mean", "gp_variance"):  # the official code's own float32 rounding, for scale
        own = np.abs(official[name].astype(np.float64) - official[f"{name}_float64"]).max()
        rows.append((f"({name}: official f32 vs its own f64)", own, own / np.abs(official[f"{name}_float64"]).max(),
                     official[name].shape))
    return rows


def run(official: Path, config: str, work: Path, fixture: Path | None, seed: int) -> list[tuple]:
    from kinema.api import convert

    official_outputs(official, config, seed, work)
    checkpoint = convert("dvg", work / "model.pth", work / "kinema")
    reference = dict(np.load(work / "official.npz"))
    rows = compare(reference, kinema_outputs(checkpoint, reference))
    if fixture is not None:
        fixture.mkdir(parents=True, exist_ok=True)
        (fixture / "model.pth").write_bytes((work / "model.pth").read_bytes())
        np.savez_compressed(fixture / "official.npz", **reference)
    return rows
