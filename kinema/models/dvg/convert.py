"""``kinema convert dvg model.pth OUT``: the official DVG checkpoint -> a kinema checkpoint folder.

The official training script saves (train.py:380-388 of github.com/shgaurav1/DVG at e882473)::

    torch.save({'encoder': encoder, 'decoder': decoder, 'frame_predictor': frame_predictor,
                'likelihood': likelihood.state_dict(), 'gp_layer': gp_layer.state_dict(),
                'gp_layer_optimizer': optimizer.state_dict(), 'opt': opt}, 'model.pth')

-- whole pickled modules of its own classes (``models.dcgan_64.encoder``, ``models.lstm.lstm``), gpytorch
0.3 state dicts, and the argparse options. :func:`kinema.foreign.load_foreign` reads them as data (the
classes below become inert records; nothing of the file is imported or run). The model config comes from
the file: ``opt`` and the modules' own sizes. Card: docs/models/dvg.md.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kinema.errors import CheckpointError
from kinema.foreign import Converted, Inert, load_foreign, module_state_dict
from kinema.models.dvg.model import DVGConfig

# Classes the official model.pth pickles: its own networks (imported by train.py as models.dcgan_64 and
# models.lstm), torch's layers, and the argparse options.
INERT = ("models.dcgan_64.*", "models.lstm.*", "torch.nn.modules.*", "argparse.Namespace")
# opt keys that shape the model, mapped to DVGConfig fields.
MODEL_OPTS = {"n_past": "n_past", "n_future": "n_future", "g_dim": "g_dim", "rnn_size": "rnn_size",
              "predictor_rnn_layers": "rnn_layers", "channels": "channels", "image_width": "resolution",
              "last_frame_skip": "last_frame_skip"}
# opt keys of training, data and logging: recorded in converted.json, not part of the model.
OTHER_OPTS = {"lr", "beta1", "batch_size", "log_dir", "model_dir", "name", "output_path", "data_root", "optimizer",
              "niter", "seed", "epoch_size", "dataset", "ft", "n_eval", "z_dim", "data_threads", "model",
              "gp_trigger_flag"}
# gpytorch 0.3 GP names -> gpytorch >= 1.0 names inside kinema's GPTemporal.
GP_NAMES = {
    "variational_strategy.inducing_points": "gp.gp.variational_strategy.inducing_points",
    "variational_strategy.variational_params_initialized": "gp.gp.variational_strategy.variational_params_initialized",
    "variational_strategy.variational_distribution.variational_mean":
        "gp.gp.variational_strategy._variational_distribution.variational_mean",
    "variational_strategy.variational_distribution.chol_variational_covar":
        "gp.gp.variational_strategy._variational_distribution.chol_variational_covar",
    "mean_module.constant": "gp.gp.mean_module.raw_constant",
    "covar_module.raw_outputscale": "gp.gp.covar_module.raw_outputscale",
    "covar_module.base_kernel.raw_lengthscale": "gp.gp.covar_module.base_kernel.raw_lengthscale",
}
LIKELIHOOD_NAMES = {"noise_covar.raw_noise": "gp.likelihood.noise_covar.raw_noise"}


def _encoder_state(record: Inert, levels: int) -> dict[str, torch.Tensor]:
    """Official encoder (c1..c4 = dcgan_conv(main = conv, BN, LeakyReLU), c5 = conv, BN, tanh) -> FrameEncoder."""
    state = module_state_dict(record)
    out = {}
    for key, value in state.items():
        block, rest = key.split(".", 1)
        if block == "c5":
            out[f"head.{rest}"] = value
        else:
            index = int(block[1:]) - 1
            if index >= levels:
                raise CheckpointError(f"DVG encoder block {block} beyond the {levels} levels of a 64x64 dcgan_64")
            out[f"blocks.{index}.{rest.removeprefix('main.')}"] = value
    return {f"encoder.{k}": v for k, v in out.items()}


def _decoder_state(record: Inert) -> dict[str, torch.Tensor]:
    """Official decoder (upc1 = stem, upc2..upc4 = dcgan_upconv, upc5 = ConvTranspose + tanh) -> FrameDecoder."""
    out = {}
    for key, value in module_state_dict(record).items():
        block, rest = key.split(".", 1)
        number = int(block[3:])
        if number == 1:
            out[f"stem.{rest}"] = value
        elif number == 5:
            out[f"out.{rest.removeprefix('0.')}"] = value
        else:
            out[f"blocks.{number - 2}.{rest.removeprefix('main.')}"] = value
    return {f"decoder.{k}": v for k, v in out.items()}


def _predictor_state(record: Inert) -> dict[str, torch.Tensor]:
    """Official ``lstm`` (embed, lstm.i LSTMCells, output.0 Linear) -> LatentLSTM (embed, cells.i, output.0)."""
    return {"predictor." + (k.replace("lstm.", "cells.", 1) if k.startswith("lstm.") else k): v
            for k, v in module_state_dict(record).items()}


def _check_known(state: dict, names: dict[str, str], what: str) -> None:
    unknown = sorted(set(state) - set(names))
    if unknown:
        raise CheckpointError(f"DVG {what} state has {unknown[0]!r}, which the gpytorch-0.3 layout of the official "
                              f"GPRegressionLayer1 does not have; known: {', '.join(names)}")


def _renamed(state: dict, names: dict[str, str], what: str) -> dict[str, torch.Tensor]:
    _check_known(state, names, what)
    return {names[k]: v for k, v in state.items()}


def whitened_variational_parameters(gp_state: dict, jitter: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gpytorch 0.3's ``WhitenedVariationalStrategy`` parameters -> gpytorch >= 1.0 ``VariationalStrategy`` ones
    that give the same q(u), hence the same predictive distribution and the same KL.

    gpytorch 0.3 (whitened_variational_strategy.py) holds ``m`` and ``C`` with q(u) = N(m, K S K), S = C Cᵀ
    (its predictive mean is mu_x + K_xu K⁻¹ (m - mu_u), its covariance K_xu S K_ux + K_xx - K_xu K⁻¹ K_ux);
    gpytorch >= 1.0 whitens with L = chol(K): q(u) = N(mu_u + L m', L S' Lᵀ). Equal when m' = L⁻¹ (m - mu_u)
    and S' = Lᵀ S L. K is the scaled-RBF covariance of the inducing points plus ``jitter`` on the diagonal,
    as both versions build it. Returns ``(variational_mean (g, M), chol_variational_covar (g, M, M))``."""
    f = torch.nn.functional.softplus  # both versions' Positive() constraint on raw parameters
    points = gp_state["variational_strategy.inducing_points"].double()  # (g, M, 1)
    lengthscale = f(gp_state["covar_module.base_kernel.raw_lengthscale"].double())  # (g, 1, 1)
    outputscale = f(gp_state["covar_module.raw_outputscale"].double())  # (g,)
    scaled = points / lengthscale
    k = outputscale[:, None, None] * torch.exp(-0.5 * (scaled - scaled.transpose(-1, -2)) ** 2)
    k = k + jitter * torch.eye(k.shape[-1], dtype=k.dtype)
    chol_k = torch.linalg.cholesky(k)
    mean = gp_state["variational_strategy.variational_distribution.variational_mean"].double()
    prior_mean = gp_state["mean_module.constant"].double().reshape(-1, 1)
    new_mean = torch.linalg.solve_triangular(chol_k, (mean - prior_mean)[..., None], upper=False)[..., 0]
    c = torch.tril(gp_state["variational_strategy.variational_distribution.chol_variational_covar"].double())
    lt_c = chol_k.transpose(-1, -2) @ c  # S' = Lᵀ C Cᵀ L = (Lᵀ C)(Lᵀ C)ᵀ: its Cholesky factor from a QR
    r = torch.linalg.qr(lt_c.transpose(-1, -2), mode="r")[1]  # lt_cᵀ = Q R  ->  lt_c lt_cᵀ = Rᵀ R
    new_chol = r.transpose(-1, -2) * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    return new_mean.float(), new_chol.float()


def convert_dvg(src: Path, options=None) -> Converted:
    """Read the official ``model.pth``; returns the kinema DVG config and weights (official output
    activation tanh, dcgan_64.py:77; inducing points as saved)."""
    data = load_foreign(src, inert=INERT)
    expected = {"encoder", "decoder", "frame_predictor", "likelihood", "gp_layer", "opt"}
    if not isinstance(data, dict) or not expected <= set(data):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{src} is not an official DVG model.pth: expected the keys {sorted(expected)} that "
                              f"train.py:380-388 saves, found {found}")
    for key in ("encoder", "decoder", "frame_predictor"):
        record = data[key]
        wanted = {"encoder": "models.dcgan_64.encoder", "decoder": "models.dcgan_64.decoder",
                  "frame_predictor": "models.lstm.lstm"}[key]
        if not isinstance(record, Inert) or record.class_path != wanted:
            found = record.class_path if isinstance(record, Inert) else type(record).__name__
            raise CheckpointError(f"{src}: {key} is {found}, expected {wanted} (the 64x64 DCGAN model of the "
                                  "official train.py; the vgg and 128x128 variants are not supported)")
    opt = data["opt"].attributes if isinstance(data["opt"], Inert) else {}
    unknown = sorted(set(opt) - set(MODEL_OPTS) - OTHER_OPTS)
    if unknown:
        raise CheckpointError(f"{src}: option --{unknown[0]} is unknown to the converter (known: "
                              f"{', '.join(sorted(set(MODEL_OPTS) | OTHER_OPTS))}); it may change the model")
    if opt.get("model", "dcgan") != "dcgan":
        raise CheckpointError(f"{src}: --model {opt['model']!r}; only the official dcgan (dcgan_64) model converts")
    encoder = data["encoder"].attributes
    predictor = data["frame_predictor"].attributes
    enc_state = module_state_dict(data["encoder"])
    nf = enc_state["c1.main.0.weight"].shape[0]
    values = {field: opt[key] for key, field in MODEL_OPTS.items() if key in opt}
    values.update(g_dim=int(encoder["dim"]), channels=int(enc_state["c1.main.0.weight"].shape[1]), nf=int(nf),
                  rnn_size=int(predictor["hidden_size"]), rnn_layers=int(predictor["n_layers"]),
                  output_activation="tanh")
    gp_state = data["gp_layer"]
    values["gp_inducing"] = int(gp_state["variational_strategy.inducing_points"].shape[1])
    values["gp_inducing_range"] = [0.0, 1.0]  # official initialisation, torch.rand (gp_models.py:13)
    config = DVGConfig(**values)
    if config.resolution != 64:
        raise CheckpointError(f"{src}: --image_width {config.resolution}; the official dcgan_64 model is 64x64")
    config.validate()
    gp_state = dict(gp_state)
    _check_known(gp_state, GP_NAMES, "gp_layer")  # before the maths below reads it by the official names
    mean, chol = whitened_variational_parameters(gp_state, config.gp_jitter)
    gp_state["variational_strategy.variational_distribution.variational_mean"] = mean
    gp_state["variational_strategy.variational_distribution.chol_variational_covar"] = chol
    state = {**_encoder_state(data["encoder"], config.levels), **_decoder_state(data["decoder"]),
             **_predictor_state(data["frame_predictor"]),
             **_renamed(dict(gp_state), GP_NAMES, "gp_layer"), **_renamed(dict(data["likelihood"]), LIKELIHOOD_NAMES,
                                                                          "likelihood")}
    # gpytorch >= 1.0's ConstantMean holds a (g_dim,) constant; gpytorch 0.3's batch_size=g_dim one is (g_dim, 1)
    state["gp.gp.mean_module.raw_constant"] = state["gp.gp.mean_module.raw_constant"].reshape(-1)
    state["gp.gp.variational_strategy.updated_strategy"] = torch.tensor(True)
    provenance = {"format": "official DVG model.pth (train.py:380-388, github.com/shgaurav1/DVG e882473)",
                  "options": {k: v for k, v in opt.items() if isinstance(v, (int, float, str, bool))}}
    return Converted(model=config, state=state, provenance=provenance)
