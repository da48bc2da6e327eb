"""Gaussian diffusion in continuous time: schedule, parameterisations, samplers and guidance.

Follows "Video Diffusion Models" (Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet; NeurIPS 2022,
arXiv 2204.03458), Section 2-3, which uses the continuous-time formulation of Kingma et al. (2021):

* forward process ``q(z_t | x) = N(alpha_t x, sigma_t^2 I)``, ``alpha_t^2 + sigma_t^2 = 1``, log-SNR
  ``lambda_t = log(alpha_t^2 / sigma_t^2)`` decreasing in ``t in [0, 1]``;
* the cosine schedule ``alpha_t = cos(pi t / 2)`` written as ``lambda_t = -2 log tan(pi t / 2)`` and
  clipped to ``[logsnr_min, logsnr_max]`` (default [-20, 20]) by shifting and scaling ``t``, so both
  endpoints are finite;
* the network predicts ``eps`` (``x_hat = (z - sigma eps_hat) / alpha``) or ``v = alpha eps - sigma x``
  (Salimans & Ho 2022; ``x_hat = alpha z - sigma v_hat``);
* ancestral sampling with the variance interpolated between the posterior's and the forward
  process's, ``(sigma~^2_{s|t})^(1-gamma) (sigma^2_{t|s})^gamma`` (paper eq. 5), and DDIM (Song et
  al. 2021) with ``eta``;
* classifier-free guidance ``(1 + w) f(z, c) - w f(z)`` (Ho & Salimans 2021);
* reconstruction guidance ``x~_b = x_hat_b - (w_r alpha_t / 2) grad_{z_b} ||x_a - x_hat_a(z_t)||^2``
  (paper eq. 7) for temporal extension and, with a down-sampling observation, spatial
  super-resolution; and the "replacement" method it is compared with.

Everything here works on plain tensors and a denoising callable; it knows nothing of a network.
Videos are ``(B, C, T, H, W)`` in ``[-1, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from kinema.nn.noise import draw_noise
from kinema.progress import steps as progress_steps

Parameterization = Literal["eps", "v"]
SAMPLERS = ("ancestral", "ddim")
PARAMETERIZATIONS = ("eps", "v")
GUIDANCE_METHODS = ("reconstruction", "replacement")
MAX_GUIDANCE_WEIGHT = 100.0

# x0_fn(z, t) -> x_hat: the denoised prediction at continuous time t (0-d or (B,) tensor).
X0Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- schedule


def cosine_logsnr(t: torch.Tensor, logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> torch.Tensor:
    """Log-SNR of the cosine schedule at ``t in [0, 1]``, clipped to ``[logsnr_min, logsnr_max]``.

    ``lambda(t) = -2 log tan(a t + b)`` with ``b = atan(exp(-logsnr_max / 2))`` and
    ``a = atan(exp(-logsnr_min / 2)) - b``: exactly ``logsnr_max`` at ``t = 0`` and ``logsnr_min`` at
    ``t = 1``, and ``alpha_t = cos(pi t / 2)`` up to that shift (Kingma et al. 2021; Salimans & Ho 2022).
    """
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * t.double() + b)).to(t.dtype if t.is_floating_point() else torch.float32)


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha, sigma)`` from the log-SNR: ``alpha^2 = sigmoid(lambda)``, ``sigma^2 = sigmoid(-lambda)``."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar or per-sample ``(B,)`` tensor shaped to broadcast against ``like (B, ...)``."""
    v = v.to(like.device, like.dtype)
    return v.reshape(-1, *([1] * (like.ndim - 1))) if v.ndim else v


# --------------------------------------------------------------------------- parameterisations


def x0_from_output(out: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                   parameterization: str) -> torch.Tensor:
    """The denoised ``x_hat`` from a network output: ``eps``: ``(z - sigma out) / alpha``; ``v``: ``alpha z - sigma out``."""
    alpha, sigma = broadcast(alpha, z), broadcast(sigma, z)
    if parameterization == "eps":
        return (z - sigma * out) / alpha
    if parameterization == "v":
        return alpha * z - sigma * out
    raise ValueError(f"unknown parameterization {parameterization!r}; use one of {PARAMETERIZATIONS}")


def eps_from_x0(x0: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``eps_hat = (z - alpha x_hat) / sigma``."""
    return (z - broadcast(alpha, z) * x0) / broadcast(sigma, z)


def training_target(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                    parameterization: str) -> torch.Tensor:
    """What the network regresses: ``eps``, or ``v = alpha eps - sigma x``."""
    if parameterization == "eps":
        return eps
    if parameterization == "v":
        return broadcast(alpha, x) * eps - broadcast(sigma, x) * x
    raise ValueError(f"unknown parameterization {parameterization!r}; use one of {PARAMETERIZATIONS}")


# --------------------------------------------------------------------------- samplers


def _gaussian(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return draw_noise("normal", like.shape, generator, dtype=torch.float32).to(like.device, like.dtype)


def check_sampler(sampler: str, steps: int, eta: float = 0.0, gamma: float = 0.0) -> None:
    """Raise ``ValueError`` naming the bad sampler setting and the allowed values."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"sampling steps must be an integer >= 1, got {steps!r}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must be in [0, 1] (0 deterministic, 1 ancestral), got {eta}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"log-variance interpolation gamma must be in [0, 1], got {gamma}")


@torch.no_grad()
def sample_loop(
    x0_fn: X0Fn,
    noise: torch.Tensor,
    steps: int,
    sampler: str = "ancestral",
    *,
    logsnr_fn: Callable[[torch.Tensor], torch.Tensor] = cosine_logsnr,
    eta: float = 0.0,
    gamma: float = 0.1,
    clip: bool = True,
    generator: torch.Generator | None = None,
    project: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the reverse process from ``z_1 = noise`` on the uniform grid ``t_i = i / steps``.

    Each step from ``t`` to ``s < t`` takes ``x_hat = x0_fn(z_t, t)`` (clipped to [-1, 1] when ``clip``)
    and ``eps_hat = (z_t - alpha_t x_hat) / sigma_t``, then:

    * ``ancestral``: ``z_s = mu~_{s|t} + sqrt((sigma~^2_{s|t})^(1-gamma) (sigma^2_{t|s})^gamma) xi`` with the
      posterior mean ``mu~ = e^(l_t - l_s) (alpha_s / alpha_t) z_t + (1 - e^(l_t - l_s)) alpha_s x_hat``,
      posterior variance ``sigma~^2_{s|t} = (1 - e^(l_t - l_s)) sigma_s^2`` and forward variance
      ``sigma^2_{t|s} = (1 - e^(l_t - l_s)) sigma_t^2`` (paper eq. 5; gamma = 0 is DDPM's posterior);
    * ``ddim``: ``z_s = alpha_s x_hat + sqrt(sigma_s^2 - c^2) eps_hat + c xi``, ``c = eta sigma~_{s|t}``
      (eta = 0 is deterministic; eta = 1 equals ancestral with gamma = 0).

    The last step returns ``x_hat`` at ``t = 1 / steps`` (no noise is added). ``project(z_s, s)``, if
    given, rewrites ``z_s`` after every step (the replacement method). ``xi`` comes from ``generator``.
    """
    check_sampler(sampler, steps, eta, gamma)
    z = noise
    batch = z.shape[0]
    x0 = z
    for i in progress_steps(range(steps, 0, -1), steps, "denoising"):
        t = torch.full((batch,), i / steps, device=z.device)
        s = torch.full((batch,), (i - 1) / steps, device=z.device)
        x0 = x0_fn(z, t)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        if i == 1:
            break
        lt, ls = logsnr_fn(t), logsnr_fn(s)
        a_t, s_t = alpha_sigma(lt)
        a_s, s_s = alpha_sigma(ls)
        ratio = torch.exp(lt - ls)  # SNR_t / SNR_s < 1
        var_post = (1 - ratio) * s_s**2
        xi = _gaussian(z, generator)
        if sampler == "ancestral":
            mean = broadcast(ratio * a_s / a_t, z) * z + broadcast((1 - ratio) * a_s, z) * x0
            var_fwd = (1 - ratio) * s_t**2
            std = (var_post.log() * (1 - gamma) + var_fwd.log() * gamma).mul(0.5).exp()
            z = mean + broadcast(std, z) * xi
        else:
            eps = eps_from_x0(x0, z, a_t, s_t)
            c2 = eta**2 * var_post
            z = broadcast(a_s, z) * x0 + broadcast((s_s**2 - c2).clamp_min(0).sqrt(), z) * eps + broadcast(c2.sqrt(), z) * xi
        if project is not None:
            z = project(z, s)
    return x0


def classifier_free(out_cond: torch.Tensor, out_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``(1 + w) f(z, c) - w f(z)``: linear, so the same on eps, v or x_hat (for a fixed z)."""
    return (1 + scale) * out_cond - scale * out_uncond


# --------------------------------------------------------------------------- conditional sampling


def check_guidance(method: str, weight: float) -> None:
    if method not in GUIDANCE_METHODS:
        raise ValueError(f"unknown conditioning method {method!r}; choose one of {', '.join(GUIDANCE_METHODS)}")
    if not (math.isfinite(weight) and 0.0 <= weight <= MAX_GUIDANCE_WEIGHT):
        raise ValueError(
            f"guidance weight w_r must be in [0, {MAX_GUIDANCE_WEIGHT:g}] (0 = no gradient guidance; the paper "
            f"finds w_r > 1 helps, e.g. 2-10), got {weight}"
        )


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Spatial box down-sampling of ``(B, C, T, H, W)`` by an integer ``factor`` (the SR observation)."""
    return x if factor == 1 else F.avg_pool3d(x, (1, factor, factor))


def upsample_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x if factor == 1 else F.interpolate(x, scale_factor=(1, factor, factor), mode="nearest")


def guided_x0_fn(
    x0_fn: X0Fn,
    x_a: torch.Tensor,
    observe: Callable[[torch.Tensor], torch.Tensor],
    weight: float,
    grad_mask: torch.Tensor | None = None,
    logsnr_fn: Callable[[torch.Tensor], torch.Tensor] = cosine_logsnr,
    trace: list[float] | None = None,
) -> X0Fn:
    """Wrap ``x0_fn`` with reconstruction guidance (paper eq. 7).

    ``x~ = x_hat - (w_r alpha_t / 2) grad_z ||x_a - observe(x_hat(z_t))||^2`` (sum over pixels, per
    sample). ``grad_mask`` (broadcastable to ``z``, 1 where the gradient is kept) restricts the
    gradient to ``z_b``, the frames being generated, as in the paper's temporal extension;
    super-resolution keeps all of ``z``. ``trace`` collects the mean squared reconstruction error
    ``||x_a - observe(x_hat)||^2`` per step (before guidance), for diagnostics and tests.
    """

    def fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z_in = z.detach().requires_grad_(weight > 0)
            x0 = x0_fn(z_in, t)
            err = (x_a - observe(x0)).pow(2)
            if trace is not None:
                trace.append(float(err.detach().mean()))
            if weight == 0:
                return x0.detach()
            (grad,) = torch.autograd.grad(err.sum(), z_in)
        if grad_mask is not None:
            grad = grad * grad_mask
        alpha, _ = alpha_sigma(logsnr_fn(t))
        return x0.detach() - broadcast(weight * alpha / 2, z) * grad

    return fn


def noised(x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None,
           logsnr_fn: Callable[[torch.Tensor], torch.Tensor] = cosine_logsnr) -> torch.Tensor:
    """A sample of ``q(z_t | x) = N(alpha_t x, sigma_t^2 I)``."""
    alpha, sigma = alpha_sigma(logsnr_fn(t))
    return broadcast(alpha, x) * x + broadcast(sigma, x) * _gaussian(x, generator)


def sample_extension(
    x0_fn: X0Fn,
    x_a: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    sampler: str = "ancestral",
    *,
    method: str = "reconstruction",
    weight: float = 2.0,
    generator: torch.Generator | None = None,
    trace: list[float] | None = None,
    **loop_kwargs,
) -> torch.Tensor:
    """Sample one window ``(B, C, T, H, W)`` whose first ``T_a`` frames are conditioned on ``x_a``.

    ``x_a (B, C, T_a, H, W)``, ``noise (B, C, T, H, W)`` with ``T_a < T``. Both methods set the
    conditioning part of the latent to a fresh sample of ``q(z_a_t | x_a)`` before every denoising
    step (the replacement method); ``reconstruction`` also corrects ``x_hat_b`` with the gradient of
    ``||x_a - x_hat_a(z_t)||^2`` with respect to ``z_b`` (eq. 7). Returns the window's ``x_hat``; its
    last ``T - T_a`` frames are the new ones.
    """
    check_guidance(method, weight)
    t_a = x_a.shape[2]
    if not 0 < t_a < noise.shape[2]:
        raise ValueError(f"conditioning frames must be between 1 and {noise.shape[2] - 1}, got {t_a}")
    logsnr_fn = loop_kwargs.get("logsnr_fn", cosine_logsnr)

    def with_conditioning(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, :, :t_a] = noised(x_a, t, generator, logsnr_fn)
        return z

    mask = torch.zeros(1, 1, noise.shape[2], 1, 1, device=noise.device, dtype=noise.dtype)
    mask[:, :, t_a:] = 1
    w = weight if method == "reconstruction" else 0.0
    inner = guided_x0_fn(x0_fn, x_a, lambda x: x[:, :, :t_a], w, mask, logsnr_fn, trace)
    return sample_loop(lambda z, t: inner(with_conditioning(z, t), t), noise, steps, sampler,
                       generator=generator, **loop_kwargs)


def sample_super_resolution(
    x0_fn: X0Fn,
    x_low: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    sampler: str = "ancestral",
    *,
    method: str = "reconstruction",
    weight: float = 2.0,
    generator: torch.Generator | None = None,
    trace: list[float] | None = None,
    **loop_kwargs,
) -> torch.Tensor:
    """Sample ``(B, C, T, H, W)`` whose box down-sampling by ``H / h`` matches ``x_low (B, C, T, h, w)``.

    ``reconstruction``: eq. 7 with ``x_hat_a = downsample(x_hat)`` and the gradient over all of ``z``
    (the paper's spatial version). ``replacement``: after every step the low-pass part of ``z_s`` is
    replaced by a sample of ``q(downsample(z_s) | x_low)``:
    ``z_s <- z_s - U(D z_s) + U(alpha_s x_low + sigma_s D xi)`` (``D`` box down-, ``U`` nearest up-sampling;
    ``U D`` is the projection on block-constant videos).
    """
    check_guidance(method, weight)
    factor = noise.shape[-1] // x_low.shape[-1]
    if factor < 1 or noise.shape[-1] != factor * x_low.shape[-1] or noise.shape[-2] != factor * x_low.shape[-2]:
        raise ValueError(f"low-resolution video {tuple(x_low.shape[-2:])} does not divide the output "
                         f"{tuple(noise.shape[-2:])} by an integer factor")
    logsnr_fn = loop_kwargs.get("logsnr_fn", cosine_logsnr)

    def observe(x: torch.Tensor) -> torch.Tensor:
        return downsample(x, factor)

    if method == "reconstruction":
        fn = guided_x0_fn(x0_fn, x_low, observe, weight, None, logsnr_fn, trace)
        return sample_loop(fn, noise, steps, sampler, generator=generator, **loop_kwargs)

    def project(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        alpha, sigma = alpha_sigma(logsnr_fn(s))
        # D z_s = alpha_s D x + sigma_s D eps: box-averaged noise (variance 1 / factor^2 per pixel)
        low = broadcast(alpha, x_low) * x_low + broadcast(sigma, x_low) * downsample(_gaussian(z, generator), factor)
        return z - upsample_nearest(downsample(z, factor), factor) + upsample_nearest(low, factor)

    fn = guided_x0_fn(x0_fn, x_low, observe, 0.0, None, logsnr_fn, trace)
    z = project(noise, torch.ones(noise.shape[0], device=noise.device))
    return sample_loop(fn, z, steps, sampler, generator=generator, project=project, **loop_kwargs)
