"""DVG's GP temporal model: ``g_dim`` independent sparse variational GPs, one per latent dimension.

The official ``GPRegressionLayer1`` (models/gp_models.py:10-24 of github.com/shgaurav1/DVG at e882473)
written against the current gpytorch API (the official one, ``AbstractVariationalGP`` with
``batch_size=``, was removed in gpytorch 0.4): an :class:`gpytorch.models.ApproximateGP` with
``batch_shape = [g_dim]``, a Cholesky variational distribution over ``inducing`` learnable inducing
points per dimension, the whitened :class:`~gpytorch.variational.VariationalStrategy` (the official
``WhitenedVariationalStrategy``; whitening is the default now), a constant mean and a scaled RBF kernel;
with a batched Gaussian likelihood (train.py:102) and the variational ELBO (train.py:112).

GP ``d`` maps the scalar ``h_t[d]`` to ``h_{t+1}[d]``: the input is the current frame's latent only.
gpytorch is an optional dependency (``pip install 'kinema[dvg]'``); this module imports it, the rest
of kinema does not.
"""

from __future__ import annotations

import gpytorch
import torch
from torch import nn


class InducingJitterStrategy(gpytorch.variational.VariationalStrategy):
    """The whitened strategy with the jitter on the inducing covariance K_uu only, as the official gpytorch 0.3
    ``WhitenedVariationalStrategy`` adds it; gpytorch >= 1.0 also adds it to the test covariance K_xx, which
    would raise every predictive variance by the jitter (1e-3 with the official value)."""

    def forward(self, x, inducing_points, inducing_values, variational_inducing_covar=None, **kwargs):
        out = super().forward(x, inducing_points, inducing_values, variational_inducing_covar, **kwargs)
        return gpytorch.distributions.MultivariateNormal(out.mean, out.lazy_covariance_matrix.add_jitter(-self.jitter_val))


class LatentGP(gpytorch.models.ApproximateGP):
    """``g_dim`` batched SVGPs. Input ``(g_dim, N, 1)``; output a batch of ``g_dim`` MVNs over N points."""

    def __init__(self, g_dim: int, inducing: int, inducing_range: tuple[float, float], jitter: float) -> None:
        lo, hi = inducing_range
        # official: torch.rand(num_dims, num_inducing_points, 1), i.e. uniform on [0, 1) (gp_models.py:13)
        points = lo + (hi - lo) * torch.rand(g_dim, inducing, 1)
        dist = gpytorch.variational.CholeskyVariationalDistribution(inducing, batch_shape=torch.Size([g_dim]))
        # jitter on K_uu: the official gpytorch 0.3 adds LazyTensor.add_jitter()'s 1e-3 (whitened_variational_
        # strategy.py); gpytorch >= 1.9 would add 1e-4 in float32 unless told (model.gp_jitter)
        strategy = InducingJitterStrategy(self, points, dist, learn_inducing_locations=True, jitter_val=jitter)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=torch.Size([g_dim]))
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(batch_shape=torch.Size([g_dim])),
                                                         batch_shape=torch.Size([g_dim]))

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class GPTemporal(nn.Module):
    """The GP layer and its likelihood as one module (one parameter group, one state dict)."""

    def __init__(self, g_dim: int, inducing: int, inducing_range: tuple[float, float], jitter: float = 1e-3) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.gp = LatentGP(g_dim, inducing, inducing_range, jitter)
        self.likelihood = gpytorch.likelihoods.GaussianLikelihood(batch_shape=torch.Size([g_dim]))
        # The constraints' bounds are constants of the construction (a positive constraint's upper bound is
        # inf): keep them out of the state dict, which holds learnt and finite values only.
        for module in self.modules():
            if isinstance(module, gpytorch.constraints.Interval):
                module._non_persistent_buffers_set.update({"lower_bound", "upper_bound"})

    @staticmethod
    def _inputs(h: torch.Tensor) -> torch.Tensor:  # (B, g_dim) -> (g_dim, B, 1), official .transpose(0,1).view(90,B,1)
        return h.float().transpose(0, 1).unsqueeze(-1)

    def posterior(self, h: torch.Tensor):
        """q(f(h)) for latents ``(B, g_dim)``: a batch of ``g_dim`` MVNs over the B inputs."""
        return self.gp(self._inputs(h))

    def neg_elbo(self, f_dist, target: torch.Tensor, num_data: int) -> torch.Tensor:
        """``-ELBO`` summed over the ``g_dim`` GPs (official: ``max_ll -= mll(...)``, then ``.sum()``,
        train.py:226,239), with ``num_data`` = the batch size (train.py:112)."""
        mll = gpytorch.mlls.VariationalELBO(self.likelihood, self.gp, num_data=num_data)
        return -mll(f_dist, target.float().transpose(0, 1)).sum()

    def predictive(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, g_dim)`` of the posterior predictive ``p(h_{t+1} | h_t)`` per sample
        and dimension, observation noise included (official ``likelihood(gp_layer(h))``,
        generate_frames.py:229-230). Marginal per input: each sample's own predictive."""
        with torch.autocast(h.device.type, enabled=False):
            pred = self.likelihood(self.posterior(h))
            return pred.mean.transpose(0, 1), pred.variance.transpose(0, 1)
