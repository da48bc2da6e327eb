"""Swappable temporal generators of "Latent Neural Differential Equations for Video Generation"
(Kanaa et al. 2021); the paper facts are in docs/models/tgan_ode.md.

A temporal generator turns one code into one latent per requested time point::

    forward(z, times) -> latents
        z      (B, D)        vector generators -> latents (B, T, D)
               (B, C, H, W)  map generators    -> latents (B, T, C, H, W)
        times  (T,) strictly increasing, finite, in frame-index units (frame k sits at t = k);
               None means 0, 1, ..., frames - 1

Discrete generators (``continuous = False``): ``conv1d`` (TGAN), ``lstm`` / ``gru`` (MoCoGAN),
``convlstm`` (TGANv2). They only produce ``t = 0, 1, ..., T-1`` with ``T <= frames``.

Continuous generators (``continuous = True``): ``ode`` (TGAN-ODE / TGANv2-ODE, any order) and ``sde``.
They take any times -- non-uniform, fractional (frame interpolation, frame-rate up-sampling) or
negative (what came before frame 0). The state at ``t = 0`` is fixed by ``z``; times below 0 are
reached by integrating backward from 0 and times above by integrating forward, so the latent at a
time does not depend on which other times were asked for.

Time scale: the paper integrates over ``linspace(0, 1, T)``. Here the vector field is multiplied
by ``time_scale`` (``build_temporal`` defaults it to ``1 / (frames - 1)``), which is the paper's
ODE in its time ``s = time_scale * t`` while frames stay at integer ``t``. Derivative blocks of a
higher-order state are derivatives with respect to ``s``. Fixed-step solvers default to one step
per frame (``step_size = 1``), which is the paper's RK4 on its 16-point grid exactly; fractional
times between steps use cubic Hermite interpolation, not torchdiffeq's default linear one.
Map codes (TGANv2-ODE): ``build_temporal(..., map_channels=C)`` gives ``spatial=True`` generators.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from kinema.errors import ConfigError
from kinema.nn import ConvLSTM, assert_shape

# torchdiffeq's methods, written out rather than read from torchdiffeq._impl.odeint.SOLVERS: importing
# torchdiffeq pulls in scipy.integrate (~0.4 s), and every config load validates `solver`. torchdiffeq and
# torchsde are imported only when an ODE / SDE generator integrates. tests/nn/test_temporal.py checks these
# lists against the installed torchdiffeq (SOLVERS, and FixedGridODESolver for the fixed-step ones).
# scipy_solver is left out: it leaves autograd (numpy), so a generator could not be trained with it.
ODE_SOLVERS = ("adaptive_heun", "bosh3", "dopri5", "dopri8", "euler", "explicit_adams", "fehlberg2", "fixed_adams",
               "heun2", "heun3", "implicit_adams", "midpoint", "rk4")
FIXED_STEP_SOLVERS = ("euler", "explicit_adams", "fixed_adams", "heun2", "heun3", "implicit_adams", "midpoint", "rk4")
SDE_METHODS = ("euler", "milstein", "srk")  # torchsde's methods for Ito SDEs with diagonal noise
KINDS = ("conv1d", "lstm", "gru", "convlstm", "ode", "sde")


@dataclass
class TemporalConfig:
    """Which temporal generator, and its solver. Defaults are TGAN-ODE's (first order, RK4)."""

    kind: Literal["conv1d", "lstm", "gru", "convlstm", "ode", "sde"] = "ode"
    order: int = 1  # ODE order n: the state is (x, x', ..., x^(n-1)); only kind = "ode" takes n > 1
    solver: str = "rk4"  # any torchdiffeq method but scipy_solver (see ODE_SOLVERS)
    step_size: float | None = None  # frame units, fixed-step solvers only; None = 1 (a step per frame)
    rtol: float = 1e-3  # adaptive solvers only (dopri5, ...)
    atol: float = 1e-4
    adjoint: bool = False  # odeint_adjoint / sdeint_adjoint: O(1) memory in time, slower backward
    # Per kind: conv1d first deconv width (None = 512, TGAN's); lstm / gru / convlstm recurrent width
    # (None = D or C); ode / sde width of the initial-state MLP and of hidden field layers (None = 512).
    hidden: int | None = None
    layers: int = 1  # field depth; 1 = the paper's f(x) = act(Linear(x))
    activation: Literal["tanh", "leaky_relu", "softplus"] = "tanh"  # smooth: suits ODE fields
    time_scale: float | None = None  # field multiplier; None = 1 / (frames - 1), the paper's [0, 1]
    # ode on vectors: x(0) = 4-layer MLP of z (the paper; the reference's "lin" scripts). False: x(0) = z, as
    # the reference's `tgan SVC ODE UCF101.py` (TemporalGeneratorODE(linear=False)); order 1 only.
    init_mlp: bool = True
    sde_noise: Literal["diagonal"] = "diagonal"
    sde_method: str = "euler"  # Euler-Maruyama; see SDE_METHODS
    sde_dt: float = 0.1  # SDE step in frame units

    def validate(self, prefix: str = "temporal") -> None:
        def fail(key: str, message: str) -> None:
            raise ConfigError(f"{prefix}.{key} {message}")

        if self.kind not in KINDS:
            fail("kind", f"= {self.kind!r} is unknown; choose one of {', '.join(KINDS)}")
        if self.order < 1:
            fail("order", f"must be >= 1 (1 = dz/dt = f(z), 2 = second order, ...), got {self.order}")
        if self.order > 1 and self.kind != "ode":
            fail("order", f'= {self.order} needs kind = "ode"; {self.kind!r} has no order, set order = 1')
        if self.solver not in ODE_SOLVERS:
            fail("solver", f"= {self.solver!r} is not a usable torchdiffeq method; choose one of "
                           f"{', '.join(ODE_SOLVERS)}")
        if self.step_size is not None:
            if self.step_size <= 0:
                fail("step_size", f"must be > 0 (frame units) or unset, got {self.step_size}")
            if self.solver not in FIXED_STEP_SOLVERS:
                fail("step_size", f"only applies to fixed-step solvers ({', '.join(FIXED_STEP_SOLVERS)}); "
                                  f"{self.solver!r} adapts its steps to rtol/atol: unset step_size")
        for key in ("rtol", "atol", "sde_dt"):
            if getattr(self, key) <= 0:
                fail(key, f"must be > 0, got {getattr(self, key)}")
        if self.hidden is not None and self.hidden <= 0:
            fail("hidden", f"must be > 0 or unset, got {self.hidden}")
        if self.layers < 1:
            fail("layers", f"must be >= 1, got {self.layers}")
        if self.activation not in ("tanh", "leaky_relu", "softplus"):
            fail("activation", f'= {self.activation!r} is unknown; choose "tanh", "leaky_relu" or "softplus"')
        if self.time_scale is not None and not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            fail("time_scale", f"must be a finite number > 0 or unset, got {self.time_scale}")
        if not self.init_mlp and (self.kind != "ode" or self.order != 1):
            fail("init_mlp", f"= false (x(0) = z) needs kind = \"ode\" and order 1, got {self.kind!r}, order {self.order}")
        if self.sde_noise != "diagonal":
            fail("sde_noise", f'= {self.sde_noise!r} is not supported; only "diagonal" noise is implemented')
        if self.sde_method not in SDE_METHODS:
            fail("sde_method", f"= {self.sde_method!r} is not a torchsde method for diagonal Ito SDEs; "
                               f"choose one of {', '.join(SDE_METHODS)}")


# --------------------------------------------------------------------------- time points


def check_times(times: torch.Tensor | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Return ``times`` as a 1-D tensor with ``like``'s float dtype and device, or raise ValueError."""
    # Checked on the CPU (a handful of numbers), so meta / CUDA codes need no data-dependent sync there.
    t = torch.as_tensor(times).detach().to("cpu", like.dtype if like.is_floating_point() else torch.get_default_dtype())
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"times: expected a non-empty 1-D tensor of time points (T,), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"times must be finite, got {_show(t)}; drop NaN / inf entries")
    if not (t[1:] > t[:-1]).all():
        raise ValueError(f"times must be strictly increasing, got {_show(t)}; "
                         "sort them and drop repeats (torch.unique does both)")
    return t.to(like.device)


def _show(t: torch.Tensor, n: int = 10) -> str:
    values = [round(v, 4) for v in t[:n].tolist()]
    return f"{values}" if t.numel() <= n else f"{values[:-1]} ... ({t.numel()} points)"


class TemporalGenerator(nn.Module):
    """Base class: ``forward(z, times)``; ``frames`` is the clip length (default times 0..frames-1)."""

    kind: str = ""
    continuous: bool = False

    def __init__(self, frames: int) -> None:
        super().__init__()
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.frames = frames

    def _times(self, times: torch.Tensor | Sequence[float] | None, z: torch.Tensor) -> torch.Tensor:
        if times is None:
            times = torch.arange(self.frames)
        t = check_times(times, torch.empty(0, dtype=z.dtype))  # on the CPU: no sync, works for meta codes
        if not self.continuous:
            n = t.numel()
            if n > self.frames or not torch.equal(t, torch.arange(n, dtype=t.dtype)):
                raise ValueError(
                    f"{self.kind} is a discrete-time generator: it only produces frames at "
                    f"t = 0, 1, ..., T-1 (T <= {self.frames}), got times {_show(t)}; "
                    "use kind = 'ode' or 'sde' for continuous time"
                )
        return t.to(z.device)


def _activation(name: str) -> nn.Module:
    return {"tanh": nn.Tanh, "softplus": nn.Softplus}.get(name, lambda: nn.LeakyReLU(0.2))()


def _stack(sizes: Sequence[int], activation: str, spatial: bool, last: nn.Module | None) -> nn.Sequential:
    """Linear (or 3x3 Conv2d when ``spatial``) layers ``sizes[0] -> ... -> sizes[-1]``.

    ``activation`` follows every layer but the last, which is followed by ``last`` (if given).
    Weights use Xavier-uniform with gain sqrt(2), as the reference TGAN-ODE code does.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layer = nn.Conv2d(a, b, 3, padding=1) if spatial else nn.Linear(a, b)
        nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(2))
        layers.append(layer)
        act = last if i == len(sizes) - 2 else _activation(activation)
        if act is not None:
            layers.append(act)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- discrete generators


class Conv1dTemporal(TemporalGenerator):
    """TGAN's temporal generator (Saito et al. 2017): ``z (B, D) -> (B, T, D)``.

    Linear -> ``(B, hidden, 1)``, then ConvTranspose1d(4, stride 2, pad 1) layers each doubling the
    length, widths halving from ``hidden`` down to ``hidden / 4`` (512 -> 256 -> 128 -> 128 -> D for
    T = 16), BN + ReLU between, tanh at the end. Lengths that are not a power of two are generated at
    the next power of two and cropped.
    """

    kind = "conv1d"

    def __init__(self, dim: int, frames: int, hidden: int = 512) -> None:
        super().__init__(frames)
        if frames < 2:
            raise ValueError(f"conv1d needs frames >= 2 (it doubles a length-1 sequence), got {frames}")
        self.dim = dim
        ups = math.ceil(math.log2(frames))
        widths = [max(hidden >> i, max(hidden >> 2, 1)) for i in range(ups)] + [dim]
        self.fc = nn.Sequential(nn.Linear(dim, widths[0]), nn.BatchNorm1d(widths[0]), nn.ReLU())
        layers: list[nn.Module] = []
        for i in range(ups):
            layers.append(nn.ConvTranspose1d(widths[i], widths[i + 1], 4, stride=2, padding=1))
            layers += [nn.BatchNorm1d(widths[i + 1]), nn.ReLU()] if i < ups - 1 else [nn.Tanh()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """``z (B, D)`` -> ``(B, T, D)`` for ``times = 0..T-1``."""
        assert_shape(z, [None, self.dim], "conv1d input z (B, D)")
        t = self._times(times, z)
        h = self.deconvs(self.fc(z).unsqueeze(-1))  # (B, D, 2^ups)
        return h[:, :, : t.numel()].transpose(1, 2)


class RecurrentTemporal(TemporalGenerator):
    """MoCoGAN-style LSTM / GRU: ``z (B, D) -> (B, T, D)``.

    From a zero state, ``z`` is the input at t = 0 and zeros afterwards -- the same convention as
    TGANv2's ConvLSTM, so the trajectory is a deterministic function of ``z`` alone. The hidden
    states (width ``hidden``) are projected back to D by a Linear when ``hidden != D``.
    """

    def __init__(self, dim: int, frames: int, cell: Literal["lstm", "gru"] = "gru", hidden: int | None = None) -> None:
        super().__init__(frames)
        self.kind, self.dim = cell, dim
        hidden = hidden or dim
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(dim, hidden, batch_first=True)
        self.out = nn.Identity() if hidden == dim else nn.Linear(hidden, dim)

    def forward(self, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """``z (B, D)`` -> ``(B, T, D)`` for ``times = 0..T-1``."""
        assert_shape(z, [None, self.dim], f"{self.kind} input z (B, D)")
        t = self._times(times, z)
        x = torch.cat([z[:, None], z.new_zeros(z.shape[0], t.numel() - 1, self.dim)], dim=1)
        return self.out(self.rnn(x)[0])


class ConvLSTMTemporal(TemporalGenerator):
    """TGANv2's temporal generator: ``z (B, C, H, W) -> (B, T, C, H, W)`` by a ConvLSTM.

    ``z`` is the input at t = 0, zeros afterwards; a 1x1 conv maps ``hidden`` channels back to C
    when they differ (TGANv2 uses hidden = C = 1024).
    """

    kind = "convlstm"

    def __init__(self, channels: int, frames: int, hidden: int | None = None) -> None:
        super().__init__(frames)
        self.channels = channels
        hidden = hidden or channels
        self.rnn = ConvLSTM(channels, hidden)
        self.out = nn.Identity() if hidden == channels else nn.Conv2d(hidden, channels, 1)

    def forward(self, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """``z (B, C, H, W)`` -> ``(B, T, C, H, W)`` for ``times = 0..T-1``."""
        assert_shape(z, [None, self.channels, None, None], "convlstm input z (B, C, H, W)")
        t = self._times(times, z)
        b, c, h, w = z.shape
        x = torch.cat([z[:, :, None], z.new_zeros(b, c, t.numel() - 1, h, w)], dim=2)
        maps = self.rnn(x).transpose(1, 2)  # (B, T, hidden, H, W)
        return self.out(maps.flatten(0, 1)).unflatten(0, (b, t.numel()))


# --------------------------------------------------------------------------- continuous generators


def _two_sided(
    solve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], y0: torch.Tensor, times: torch.Tensor, t0: float
) -> torch.Tensor:
    """States at ``times`` (B, T, ...) from ``y0`` at ``t0``: backward for times < t0, forward after.

    ``solve(y, grid)`` integrates from ``grid[0] = t0`` over a monotonic grid (increasing or
    decreasing) and returns ``(len(grid), B, ...)``.
    """
    def run(grid: torch.Tensor) -> torch.Tensor:  # solvers need t0 first: prepend it, drop its output
        if float(grid[0]) == t0:
            return y0[None] if grid.numel() == 1 else solve(y0, grid)
        return solve(y0, torch.cat([grid.new_tensor([t0]), grid]))[1:]

    parts = []
    before, after = times[times < t0], times[times >= t0]
    if before.numel():
        parts.append(run(before.flip(0)).flip(0))
    if after.numel():
        parts.append(run(after))
    return torch.cat(parts, dim=0).movedim(0, 1)


class _ShiftField(nn.Module):
    """``d/ds (x, x', ..., x^(n-1)) = (x', ..., x^(n-1), net(state))``, all times ``scale``.

    Blocks are stacked along dim 1, so the same code serves vectors ``(B, n*D)`` and maps
    ``(B, n*C, H, W)``: the derivative of blocks 0..n-2 is simply blocks 1..n-1 (a shift).
    """

    def __init__(self, net: nn.Module, order: int, block: int, scale: float) -> None:
        super().__init__()
        self.net, self.order, self.block, self.scale = net, order, block, scale

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        top = self.net(state)
        if self.order > 1:
            top = torch.cat([state[:, self.block:], top], dim=1)
        return self.scale * top


class ODEGenerator(TemporalGenerator):
    """Neural ODE temporal generator of order n (TGAN-ODE; TGANv2-ODE with ``spatial=True``).

    Vectors (``spatial=False``): ``z (B, D)`` -> 4-layer MLP (LeakyReLU 0.2, width ``hidden``) ->
    state ``(B, n*D)``; field ``f(state) = act(Linear(n*D, D) state)`` when ``layers = 1`` (the paper's
    ``tanh(Linear(100, 100) x)`` for n = 1). Output: first block ``x`` at each time, ``(B, T, D)``.

    Maps (``spatial=True``, ``dim = C``): ``z (B, C, H, W)`` is ``x(0)`` itself (the upstream Linear
    already made it; n >= 2 adds the derivative maps by a 3x3 conv of ``z``); the field is 3x3
    convolutions ``Conv2d(n*C, C) + act`` (TGANv2-ODE: LeakyReLU). Output ``(B, T, C, H, W)``.

    :meth:`integrate` exposes the whole state ``(B, T, n*D)`` from any initial state and time.
    """

    kind = "ode"
    continuous = True

    def __init__(
        self, dim: int, frames: int, order: int = 1, *, spatial: bool = False, hidden: int | None = None,
        layers: int = 1, activation: str = "tanh", solver: str = "rk4", step_size: float | None = None,
        rtol: float = 1e-3, atol: float = 1e-4, adjoint: bool = False, time_scale: float = 1.0,
        init_mlp: bool = True,
    ) -> None:
        super().__init__(frames)
        TemporalConfig(order=order, solver=solver, step_size=step_size, rtol=rtol, atol=atol, layers=layers,
                       activation=activation, time_scale=time_scale, init_mlp=init_mlp).validate("ODEGenerator")
        self.dim, self.order, self.spatial = dim, order, spatial
        self.solver, self.step_size, self.rtol, self.atol, self.adjoint = solver, step_size, rtol, atol, adjoint
        hidden = hidden or 512
        if spatial:
            self.init = nn.Identity() if order == 1 else nn.Conv2d(dim, (order - 1) * dim, 3, padding=1)
        elif not init_mlp:  # x(0) = z (order 1, checked above)
            self.init = nn.Identity()
        else:
            self.init = _stack([dim, hidden, hidden, hidden, order * dim], "leaky_relu", False, nn.LeakyReLU(0.2))
        net = _stack([order * dim] + [hidden] * (layers - 1) + [dim], activation, spatial, _activation(activation))
        self.field = _ShiftField(net, order, dim, time_scale)

    def initial_state(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` -> state at t = 0: ``(B, n*D)`` or ``(B, n*C, H, W)``."""
        if self.spatial:
            assert_shape(z, [None, self.dim, None, None], "map ODE input z (B, C, H, W)")
            return z if self.order == 1 else torch.cat([z, self.init(z)], dim=1)
        assert_shape(z, [None, self.dim], "ODE input z (B, D)")
        return self.init(z)

    def _solve(self, y0: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        from torchdiffeq import odeint, odeint_adjoint  # here, not at import: it loads scipy (see ODE_SOLVERS)

        options = None
        if self.solver in FIXED_STEP_SOLVERS:
            # Steps are anchored at t0 with a fixed size, so shared time points get identical steps
            # whatever else was requested; cubic Hermite keeps fractional times 4th-order-ish accurate.
            options = {"step_size": self.step_size or 1.0, "interp": "cubic"}
        kwargs = {"rtol": self.rtol, "atol": self.atol, "method": self.solver, "options": options}
        if self.adjoint:
            return odeint_adjoint(self.field, y0, grid, adjoint_params=tuple(self.field.parameters()), **kwargs)
        return odeint(self.field, y0, grid, **kwargs)

    def integrate(self, state: torch.Tensor, times: torch.Tensor | Sequence[float], t0: float = 0.0) -> torch.Tensor:
        """Whole state at ``times`` ``(B, T, n*D[, H, W])``, starting from ``state`` at time ``t0``."""
        return _two_sided(self._solve, state, check_times(times, state), t0)

    def forward(self, z: torch.Tensor, times: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
        """``z (B, D)`` -> ``(B, T, D)`` (maps: ``(B, C, H, W)`` -> ``(B, T, C, H, W)``), any times."""
        state = self.initial_state(z)
        return self.integrate(state, self._times(times, z))[:, :, : self.dim]


class _SDEFunc(nn.Module):
    """torchsde view of the generator: 2-D state ``(B, D_flat)``, diagonal Ito noise.

    ``sign = -1`` gives the SDE run backward in time (``s = t0 - t``): drift negated, noise kept.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift: nn.Module, diffusion: nn.Module, scale: float, sign: int, shape: torch.Size) -> None:
        super().__init__()
        self.drift, self.diffusion, self.shape = drift, diffusion, shape
        # Time change s = scale * t: drift scales by `scale`, Brownian increments by sqrt(scale).
        self.drift_scale, self.noise_scale = sign * scale, math.sqrt(scale)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.drift_scale * self.drift(y.view(self.shape)).flatten(1)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.noise_scale * self.diffusion(y.view(self.shape)).flatten(1)


class SDEGenerator(TemporalGenerator):
    """Neural SDE temporal generator: ``dx = mu(x) dt + sigma(x) dW`` (Ito, diagonal noise).

    Vectors: ``x(0)`` = the ODE's 4-layer MLP of ``z (B, D)``; ``mu`` and ``sigma`` are MLPs like the ODE
    field (``layers``, ``activation``); ``sigma`` ends in a sigmoid so the noise amplitude stays in
    (0, 1). Maps (``spatial=True``): ``x(0) = z (B, C, H, W)``, 3x3 conv nets; torchsde sees the
    flattened ``(B, C*H*W)`` state. Output ``(B, T, D)`` or ``(B, T, C, H, W)``.

    Sampling is reproducible: ``forward(z, times, seed)`` drives the solver with
    ``torchsde.BrownianInterval(entropy=...)`` derived from ``seed`` (``seed=None`` draws one from
    torch's global generator, so ``torch.manual_seed`` also reproduces a sample). Steps of ``dt``
    are anchored at 0 and the Brownian interval spans at least ``[0, frames]``, so for times in
    ``[-frames, frames]`` a time's latent does not depend on which other times were requested.

    Times below 0: torchsde only integrates forward, so the generator solves the time-reversed SDE ``dy = -mu(y) ds + sigma(y) dW'`` in ``s = -t`` from ``x(0)``, with an
    independent Brownian path; with ``sigma = 0`` it is exactly the ODE integrated backward.
    """

    kind = "sde"
    continuous = True
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(
        self, dim: int, frames: int, *, spatial: bool = False, hidden: int | None = None, layers: int = 1,
        activation: str = "tanh", method: str = "euler", dt: float = 0.1, adjoint: bool = False,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(frames)
        TemporalConfig(kind="sde", layers=layers, activation=activation, sde_method=method, sde_dt=dt,
                       time_scale=time_scale).validate("SDEGenerator")
        self.dim, self.spatial, self.method, self.dt, self.adjoint = dim, spatial, method, dt, adjoint
        self.time_scale = time_scale
        hidden = hidden or 512
        self.init = nn.Identity() if spatial else _stack(
            [dim, hidden, hidden, hidden, dim], "leaky_relu", False, nn.LeakyReLU(0.2))
        sizes = [dim] + [hidden] * (layers - 1) + [dim]
        self.drift = _stack(sizes, activation, spatial, _activation(activation))
        self.diffusion = _stack(sizes, activation, spatial, nn.Sigmoid())

    def _solver(self, seed: int, shape: torch.Size) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        import torchsde  # here, not at import: only SDE generators need it (and it loads scipy)

        def solve(y0: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
            backward = bool(grid[-1] < grid[0])
            ts = grid[0] - grid if backward else grid  # increasing either way
            # torchsde steps by dt from ts[0] but cuts the last step short to land on ts[-1]; one
            # extra time a full step later keeps every requested time inside full, shared steps.
            ts = torch.cat([ts, ts[-1:] + self.dt])
            sde = _SDEFunc(self.drift, self.diffusion, self.time_scale, -1 if backward else 1, shape)
            # A fixed horizon: W(t1) is drawn first, so t1 must not depend on the requested times.
            horizon = float(ts[0]) + self.frames + self.dt
            bm = torchsde.BrownianInterval(
                t0=float(ts[0]), t1=max(float(ts[-1]), horizon), size=y0.shape,
                dtype=y0.dtype, device=y0.device, entropy=2 * seed + backward, dt=self.dt,
                levy_area_approximation="space-time" if self.method == "srk" else "none",
            )
            if self.adjoint:
                ys = torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, method=self.method, dt=self.dt,
                                             adjoint_params=tuple(sde.parameters()))
            else:
                ys = torchsde.sdeint(sde, y0, ts, bm=bm, method=self.method, dt=self.dt)
            return ys[:-1]

        return solve

    def forward(
        self, z: torch.Tensor, times: torch.Tensor | Sequence[float] | None = None, seed: int | None = None
    ) -> torch.Tensor:
        """``z (B, D)`` -> ``(B, T, D)`` (maps: ``(B, C, H, W)`` -> ``(B, T, C, H, W)``), any times."""
        if self.spatial:
            assert_shape(z, [None, self.dim, None, None], "map SDE input z (B, C, H, W)")
        else:
            assert_shape(z, [None, self.dim], "SDE input z (B, D)")
        t = self._times(times, z)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()))
        elif seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds numpy's SeedSequence), got {seed}")
        x0 = self.init(z)
        path = _two_sided(self._solver(seed, x0.shape), x0.flatten(1), t, 0.0)  # (B, T, D_flat)
        return path.unflatten(2, x0.shape[1:])


def build_temporal(config: TemporalConfig, dim: int, frames: int, map_channels: int | None = None) -> nn.Module:
    """Build the temporal generator ``config.kind`` for codes ``(B, dim)`` and clips of ``frames``.

    With ``map_channels = C`` the generator works on maps ``(B, C, H, W)`` (``dim`` is then unused):
    ``convlstm``, and ``ode`` / ``sde`` with ``spatial=True``. ``conv1d``, ``lstm``, ``gru`` take vectors only.
    """
    config.validate()
    kind, spatial = config.kind, map_channels is not None
    if kind == "convlstm" and not spatial:
        raise ValueError("kind = 'convlstm' works on maps (B, C, H, W): pass map_channels = C; "
                         "for vector codes use 'conv1d', 'lstm', 'gru', 'ode' or 'sde'")
    if kind in ("conv1d", "lstm", "gru") and spatial:
        raise ValueError(f"kind = {kind!r} works on vectors (B, D): drop map_channels, "
                         "or use 'convlstm', 'ode' or 'sde' for maps")
    width = map_channels if spatial else dim
    time_scale = config.time_scale or 1.0 / max(frames - 1, 1)
    if kind == "conv1d":
        return Conv1dTemporal(dim, frames, hidden=config.hidden or 512)
    if kind in ("lstm", "gru"):
        return RecurrentTemporal(dim, frames, kind, hidden=config.hidden)
    if kind == "convlstm":
        return ConvLSTMTemporal(map_channels, frames, hidden=config.hidden)
    common = {"spatial": spatial, "hidden": config.hidden, "layers": config.layers,
              "activation": config.activation, "adjoint": config.adjoint, "time_scale": time_scale}
    if kind == "ode":
        return ODEGenerator(width, frames, config.order, solver=config.solver, step_size=config.step_size,
                            rtol=config.rtol, atol=config.atol, init_mlp=config.init_mlp, **common)
    return SDEGenerator(width, frames, method=config.sde_method, dt=config.sde_dt, **common)


__all__ = ["FIXED_STEP_SOLVERS", "KINDS", "ODE_SOLVERS", "SDE_METHODS", "Conv1dTemporal", "ConvLSTMTemporal",
           "ODEGenerator", "RecurrentTemporal", "SDEGenerator", "TemporalConfig", "TemporalGenerator",
           "build_temporal", "check_times"]
