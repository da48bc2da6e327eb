"""The official side of the DVG parity check (benchmarks/parity_dvg.py runs this file).

Run with the Python of a venv that has gpytorch 0.3.6 (the last release with the API the official code
calls: AbstractVariationalGP, WhitenedVariationalStrategy, ``batch_size=``) on top of the main torch:

    python -m venv --system-site-packages DVG_VENV && DVG_VENV/bin/pip install --no-deps gpytorch==0.3.6
    DVG_VENV/bin/python benchmarks/parity_dvg_official.py OFFICIAL_CHECKOUT CONFIG SEED OUT_DIR

It imports the official modules from the checkout (models/dcgan_64.py, models/lstm.py, models/gp_models.py,
utils.init_weights), builds and seeds them, saves ``model.pth`` exactly as train.py:380-388 does, and writes
the inputs and the official outputs to ``OUT_DIR/official.npz``.

Shims (none edits the official files):
1. ``torch.distributions.Distribution.set_default_validate_args(False)``: gpytorch 0.3 builds a
   MultivariateNormal from a non-symmetric-looking covariance; torch < 1.8 did not validate by default.
2. Stand-in modules for imports of utils.py that only its plotting and data code uses and that are not
   installable with this torch (torchvision, imageio, progressbar, skimage.measure.compare_psnr/ssim,
   scipy.misc): utils.init_weights, the one function used, needs none of them.
3. ``torch.Tensor.cuda`` -> identity: models/lstm.py allocates its hidden state with ``.cuda()``.
4. The tiny config builds the official classes with narrower widths (nf = 8 instead of the hard-coded 64)
   by constructing their child blocks (the official dcgan_conv / dcgan_upconv) directly; their forward code
   is the official one. The paper config uses the official constructors unchanged.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch

CONFIGS = {  # g_dim, rnn_size, layers, channels, inducing, nf, batch, n_past, n_future
    "tiny": dict(g_dim=6, rnn_size=16, layers=2, channels=1, inducing=5, nf=4, batch=2, n_past=3, n_future=2),
    "paper": dict(g_dim=90, rnn_size=256, layers=2, channels=1, inducing=40, nf=64, batch=2, n_past=5, n_future=10),
}


def shim_imports() -> None:
    torch.distributions.Distribution.set_default_validate_args(False)
    torch.Tensor.cuda = lambda self, *a, **k: self
    for name in ("torchvision", "imageio", "progressbar"):
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            module.datasets = module.transforms = types.SimpleNamespace()
            sys.modules[name] = module
    try:
        from skimage.measure import compare_psnr  # noqa: F401
    except ImportError:
        measure = types.ModuleType("skimage.measure")
        measure.compare_psnr = measure.compare_ssim = None
        sys.modules["skimage"] = types.ModuleType("skimage")
        sys.modules["skimage.measure"] = measure
    try:
        import scipy.misc  # noqa: F401
    except ImportError:
        sys.modules["scipy.misc"] = types.ModuleType("scipy.misc")


def build(official: Path, cfg: dict, seed: int):
    sys.path[:0] = [str(official), str(official / "models")]
    shim_imports()
    import gpytorch
    import models.dcgan_64 as model
    import models.lstm as lstm_models
    import utils
    from gp_models import GPRegressionLayer1

    torch.manual_seed(seed)
    g, c, nf = cfg["g_dim"], cfg["channels"], cfg["nf"]
    if nf == 64:  # the official constructors (train.py:74-79)
        encoder, decoder = model.encoder(g, c), model.decoder(g, c)
    else:  # same classes and forward code, narrower blocks (shim 4)
        nn = torch.nn
        encoder = model.encoder.__new__(model.encoder)
        nn.Module.__init__(encoder)
        encoder.dim = g
        encoder.c1, encoder.c2 = model.dcgan_conv(c, nf), model.dcgan_conv(nf, nf * 2)
        encoder.c3, encoder.c4 = model.dcgan_conv(nf * 2, nf * 4), model.dcgan_conv(nf * 4, nf * 8)
        encoder.c5 = nn.Sequential(nn.Conv2d(nf * 8, g, 4, 1, 0), nn.BatchNorm2d(g), nn.Tanh())
        decoder = model.decoder.__new__(model.decoder)
        nn.Module.__init__(decoder)
        decoder.dim = g
        decoder.upc1 = nn.Sequential(nn.ConvTranspose2d(g, nf * 8, 4, 1, 0), nn.BatchNorm2d(nf * 8),
                                     nn.LeakyReLU(0.2, inplace=True))
        decoder.upc2 = model.dcgan_upconv(nf * 8 * 2, nf * 4)
        decoder.upc3 = model.dcgan_upconv(nf * 4 * 2, nf * 2)
        decoder.upc4 = model.dcgan_upconv(nf * 2 * 2, nf)
        decoder.upc5 = nn.Sequential(nn.ConvTranspose2d(nf * 2, c, 4, 2, 1), nn.Tanh())
    encoder.apply(utils.init_weights)
    decoder.apply(utils.init_weights)
    predictor = lstm_models.lstm(g, g, cfg["rnn_size"], cfg["layers"], cfg["batch"])
    predictor.apply(utils.init_weights)
    gp_layer = GPRegressionLayer1(num_dims=g, num_inducing_points=cfg["inducing"])
    likelihood = gpytorch.likelihoods.GaussianLikelihood(batch_size=g)
    # Trained-looking statistics: BN running stats and every GP parameter moved off their initial values.
    for module in (*encoder.modules(), *decoder.modules()):
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    x0 = torch.rand(g, cfg["batch"], 1)
    gp_layer.train()
    gp_layer(x0)  # initialises the variational parameters (WhitenedVariationalStrategy)
    with torch.no_grad():
        for name, p in [*gp_layer.named_parameters(), *likelihood.named_parameters()]:
            p.add_(0.1 * torch.randn_like(p))
        chol = gp_layer.variational_strategy.variational_distribution.chol_variational_covar
        chol.copy_(torch.tril(chol))
    opt = argparse.Namespace(lr=0.002, beta1=0.9, batch_size=cfg["batch"], log_dir="logs", model_dir="", name="",
                             output_path=".", data_root="data", optimizer="adam", niter=601, seed=seed,
                             epoch_size=300, image_width=64, channels=c, dataset="kth", n_past=cfg["n_past"],
                             ft=True, n_future=cfg["n_future"], n_eval=cfg["n_past"] + cfg["n_future"],
                             rnn_size=cfg["rnn_size"], predictor_rnn_layers=cfg["layers"], z_dim=10, g_dim=g,
                             model="dcgan", data_threads=5, last_frame_skip=False)
    optimizer = torch.optim.Adam([{"params": gp_layer.parameters()}, {"params": likelihood.parameters()}], lr=0.002)
    return encoder, decoder, predictor, gp_layer, likelihood, optimizer, opt, gpytorch


def main() -> None:
    official, config, seed, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    cfg = CONFIGS[config]
    encoder, decoder, predictor, gp_layer, likelihood, optimizer, opt, gpytorch = build(official, cfg, seed)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder": encoder, "decoder": decoder, "frame_predictor": predictor,  # train.py:380-388
                "likelihood": likelihood.state_dict(), "gp_layer": gp_layer.state_dict(),
                "gp_layer_optimizer": optimizer.state_dict(), "opt": opt}, out / "model.pth")
    b, g, n_past, n_eval = cfg["batch"], cfg["g_dim"], cfg["n_past"], cfg["n_past"] + cfg["n_future"]
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n_eval, b, cfg["channels"], 64, 64, generator=gen)  # frames in [0, 1] (T, B, C, H, W)
    target = torch.rand(b, g, generator=gen) * 2 - 1
    results = {"x": x, "target": target}
    for m in (encoder, decoder, predictor):
        m.eval()
    gp_layer.eval()
    likelihood.eval()
    with torch.no_grad():
        h, skip = encoder(x[0])
        results["encoder_h"] = h
        for i, s in enumerate(skip):
            results[f"encoder_skip{i}"] = s
        results["decoder"] = decoder([h, skip])
        pred = likelihood(gp_layer(h.transpose(0, 1).view(g, b, 1)))  # generate_frames.py:229-230
        results["gp_mean"], results["gp_variance"] = pred.mean.transpose(0, 1), pred.variance.transpose(0, 1)
        results["gp_variance_norm"] = torch.from_numpy(  # the trigger statistic, generate_frames.py:230
            np.linalg.norm(pred.variance.numpy().transpose(), axis=1))
        # The deterministic rollout of make_gifs (generate_frames.py:139-170) for n_eval < 15 (no GP draw).
        predictor.hidden = predictor.init_hidden()
        x_in, frames = x[0], [x[0]]
        for i in range(1, n_eval):
            hh = encoder(x_in)
            if opt.last_frame_skip or i < opt.n_past:
                hh, skip = hh
            else:
                hh, _ = hh
            if i < opt.n_past:
                predictor(hh)
                x_in = x[i]
            else:
                x_in = decoder([predictor(hh), skip])
            frames.append(x_in)
        results["rollout"] = torch.stack(frames)
    gp_layer.train()
    likelihood.train()
    mll = gpytorch.mlls.VariationalELBO(likelihood, gp_layer, num_data=b, combine_terms=True)  # train.py:112
    with torch.no_grad():
        results["neg_elbo"] = -mll(gp_layer(h.transpose(0, 1).view(g, b, 1)), target.transpose(0, 1)).sum()[None]
    # The GP again in float64: the two gpytorch versions compute q(f) by different linear algebra (CG/Cholesky
    # on a jittered K_uu whose condition number amplifies float32 rounding), so float64 shows whether the maths agree.
    gp_layer.double().eval()
    likelihood.double().eval()
    h64 = h.double()
    with torch.no_grad():
        pred = likelihood(gp_layer(h64.transpose(0, 1).view(g, b, 1)))
        results["gp_mean_float64"], results["gp_variance_float64"] = pred.mean.transpose(0, 1), pred.variance.transpose(0, 1)
    gp_layer.train()
    likelihood.train()
    with torch.no_grad():
        results["neg_elbo_float64"] = -mll(gp_layer(h64.transpose(0, 1).view(g, b, 1)),
                                           target.double().transpose(0, 1)).sum()[None]
    np.savez(out / "official.npz", **{k: v.detach().numpy() for k, v in results.items()})
    print(f"wrote {out / 'model.pth'} and {out / 'official.npz'}")


if __name__ == "__main__":
    main()
