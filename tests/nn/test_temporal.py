"""Temporal generators (kinema.models.temporal): shapes, time handling, solver accuracy, seeds, config."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from kinema.config import build_dataclass
from kinema.errors import ConfigError
from kinema.nn.temporal import (
    FIXED_STEP_SOLVERS,
    ODE_SOLVERS,
    ODEGenerator,
    SDEGenerator,
    TemporalConfig,
    build_temporal,
)

B, D, T, C = 2, 4, 8, 3
VECTOR_KINDS = ["conv1d", "lstm", "gru", "ode", "sde"]
ALL_KINDS = VECTOR_KINDS + ["convlstm"]
ODD_TIMES = [-3.0, -0.5, 0.0, 0.25, 2.0, 7.5]  # negative, fractional, non-uniform


def make(kind: str, map_channels: int | None = None, dtype=torch.float32, **cfg) -> nn.Module:
    torch.manual_seed(0)
    gen = build_temporal(TemporalConfig(kind=kind, hidden=8, **cfg), D, T, map_channels)
    return gen.to(dtype)


def code(gen: nn.Module, dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(1)
    shape = (B, C, 4, 4) if getattr(gen, "spatial", False) or gen.kind == "convlstm" else (B, D)
    return torch.rand(shape, dtype=dtype) * 2 - 1


@pytest.mark.parametrize("kind,order", [(k, 1) for k in VECTOR_KINDS] + [("ode", 2), ("ode", 3)])
def test_vector_shapes(kind, order):
    gen = make(kind, order=order)
    z = code(gen)
    assert gen(z).shape == (B, T, D)  # times default to 0..T-1
    assert gen(z, torch.arange(5)).shape == (B, 5, D)
    assert gen.continuous == (kind in ("ode", "sde"))


@pytest.mark.parametrize("kind,order", [("convlstm", 1), ("ode", 1), ("ode", 2), ("sde", 1)])
def test_map_shapes(kind, order):
    gen = make(kind, map_channels=C, order=order, activation="leaky_relu")
    z = code(gen)
    assert gen(z).shape == (B, T, C, 4, 4)
    assert gen(z, torch.arange(3.0)).shape == (B, 3, C, 4, 4)


def test_map_inputs_checked():
    with pytest.raises(ValueError, match=r"expected shape \(\*, 3, \*, \*\)"):
        make("ode", map_channels=C)(torch.zeros(B, D))
    with pytest.raises(ValueError, match="map_channels"):
        make("convlstm")
    with pytest.raises(ValueError, match="vectors"):
        make("lstm", map_channels=C)


@pytest.mark.parametrize("kind", ["conv1d", "lstm", "gru", "convlstm"])
@pytest.mark.parametrize("times", [[0.0, 0.5, 1.0], [-1.0, 0.0, 1.0], [1.0, 2.0, 3.0], list(range(T + 1))])
def test_discrete_kinds_refuse_other_times(kind, times):
    gen = make(kind, map_channels=C if kind == "convlstm" else None)
    with pytest.raises(ValueError, match=rf"{kind} is a discrete-time generator.*kind = 'ode' or 'sde'"):
        gen(code(gen), torch.tensor(times))


@pytest.mark.parametrize("kind", ["ode", "sde"])
def test_continuous_kinds_take_any_times(kind):
    gen = make(kind)
    z = code(gen)
    out = gen(z, torch.tensor(ODD_TIMES))
    assert out.shape == (B, len(ODD_TIMES), D) and torch.isfinite(out).all()
    # t = 0 is the initial state, whatever else was asked for.
    torch.testing.assert_close(out[:, 2], gen.init(z)[:, :D])


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("times,message", [
    ([0.0, 2.0, 1.0], "strictly increasing"), ([0.0, 0.0, 1.0], "strictly increasing"),
    ([0.0, float("nan")], "finite"), ([0.0, float("inf")], "finite"),
    ([[0.0, 1.0]], "1-D"), ([], "1-D"),
])
def test_bad_times_rejected(kind, times, message):
    gen = make(kind, map_channels=C if kind == "convlstm" else None)
    with pytest.raises(ValueError, match=message):
        gen(code(gen), torch.tensor(times))


@pytest.mark.parametrize("solver,options", [
    ("rk4", {"step_size": 0.25}), ("dopri5", {"rtol": 1e-10, "atol": 1e-10}),
])
def test_fine_grid_agrees_with_coarse_grid(solver, options):
    gen = make("ode", dtype=torch.float64, solver=solver, order=2, **options)
    z = code(gen, torch.float64)
    coarse = gen(z, torch.arange(-2.0, T))
    fine = gen(z, torch.arange(-2.0, T - 0.9, 0.25))  # 4 points per frame, the frames included
    torch.testing.assert_close(fine[:, ::4], coarse, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("solver,options", [("rk4", {"step_size": 0.05}), ("dopri5", {"rtol": 1e-10, "atol": 1e-10})])
def test_backward_then_forward_returns_to_start(solver, options):
    gen = make("ode", dtype=torch.float64, solver=solver, time_scale=1.0, **options)
    x0 = gen.initial_state(code(gen, torch.float64))
    before = gen.integrate(x0, [-2.0])[:, 0]
    assert (before - x0).abs().max() > 0.1  # it really moved
    back = gen.integrate(before, [0.0], t0=-2.0)[:, 0]
    torch.testing.assert_close(back, x0, rtol=1e-7, atol=1e-7)


def test_nth_order_ode_is_nth_order():
    order, h = 3, 1e-2
    gen = make("ode", dtype=torch.float64, order=order, step_size=h)
    scale = gen.field.scale  # blocks are derivatives with respect to s = scale * t
    x0 = gen.initial_state(code(gen, torch.float64))
    assert x0.shape == (B, order * D)
    times = torch.arange(-100, 101, dtype=torch.float64) * h
    state = gen.integrate(x0, times)  # (B, N, 3D)
    blocks = state.unflatten(2, (order, D))
    ddt = (blocks[:, 2:] - blocks[:, :-2]) / (2 * h)  # central differences, O(h^2)
    torch.testing.assert_close(ddt[:, :, 0], scale * blocks[:, 1:-1, 1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ddt[:, :, 1], scale * blocks[:, 1:-1, 2], rtol=1e-4, atol=1e-6)
    learned = scale * gen.field.net(state[:, 1:-1].flatten(0, 1)).unflatten(0, (B, len(times) - 2))
    torch.testing.assert_close(ddt[:, :, 2], learned, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gen(code(gen, torch.float64), times), state[:, :, :D])


def test_paper_default_matches_tgan_ode_reference():
    """TemporalConfig() at D = 100, T = 16 is TGAN-ODE: rk4 over linspace(0, 1, 16), one step per frame."""
    torch.manual_seed(0)
    gen = build_temporal(TemporalConfig(), 100, 16)
    linear, act = gen.field.net
    assert (linear.in_features, linear.out_features, type(act)) == (100, 100, nn.Tanh)
    assert [m.out_features for m in gen.init if isinstance(m, nn.Linear)] == [512, 512, 512, 100]
    z = torch.rand(3, 100) * 2 - 1
    x0 = gen.init(z)
    reference = odeint(lambda t, x: gen.field.net(x), x0, torch.linspace(0, 1, 16), method="rk4")
    torch.testing.assert_close(gen(z), reference.transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_tganv2_ode_map_field_and_tgan_conv1d_widths():
    gen = build_temporal(TemporalConfig(activation="leaky_relu"), 100, 16, map_channels=16)
    conv, act = gen.field.net
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (16, 16, (3, 3), (1, 1))
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.2
    tgan = build_temporal(TemporalConfig(kind="conv1d"), 100, 16)
    widths = [(m.in_channels, m.out_channels) for m in tgan.deconvs if isinstance(m, nn.ConvTranspose1d)]
    assert widths == [(512, 256), (256, 128), (128, 128), (128, 100)]
    assert isinstance(tgan.deconvs[-1], nn.Tanh)


def test_sde_seeds():
    gen = make("sde")
    z = code(gen)
    times = torch.tensor(ODD_TIMES)
    a, b, c = gen(z, times, seed=3), gen(z, times, seed=3), gen(z, times, seed=4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().amax(dim=(0, 2))[[0, 1, 3, 4, 5]].min() > 1e-3  # every time but t = 0 differs
    torch.manual_seed(5)
    d = gen(z, times)
    torch.manual_seed(5)
    torch.testing.assert_close(gen(z, times), d, rtol=0, atol=0)
    # A time's latent does not depend on the other requested times (same seed).
    full = gen(z, torch.tensor([-3.0, -0.5, 0.0, 2.0, 5.0, 7.5]), seed=3)
    sub = gen(z, torch.tensor([-0.5, 0.0, 5.0]), seed=3)
    torch.testing.assert_close(sub, full[:, [1, 2, 4]], rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        gen(z, times, seed=-1)


def test_sde_is_ito_diagonal_and_noise_matters():
    gen = make("sde")
    assert (gen.noise_type, gen.sde_type) == ("diagonal", "ito")
    z = code(gen)
    with torch.no_grad():
        gen.diffusion[-2].weight.zero_()
        gen.diffusion[-2].bias.fill_(-1e4)  # sigmoid -> 0: no noise, so the seed no longer matters
    torch.testing.assert_close(gen(z, seed=1), gen(z, seed=2), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["ode", "sde"])
def test_adjoint_matches_and_gradients_reach_the_field(kind):
    times = torch.tensor([-1.0, 0.0, 1.5, 3.0])
    outs, grads = [], []
    for adjoint in (False, True):
        gen = make(kind, adjoint=adjoint, step_size=0.25 if kind == "ode" else None)
        z = code(gen)
        out = gen(z, times, seed=7) if kind == "sde" else gen(z, times)
        out.square().sum().backward()
        params = list(gen.field.parameters() if kind == "ode" else gen.drift.parameters())
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in params]))
        assert grads[-1].abs().sum() > 0 and torch.isfinite(grads[-1]).all()
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-6)
    # The adjoint re-solves backward in time (the SDE one with Milstein on the same Brownian path):
    # gradients agree up to solver error.
    error = ((grads[1] - grads[0]).abs().max() / grads[0].abs().max()).item()
    assert error < (1e-4 if kind == "ode" else 0.05), error


@pytest.mark.parametrize("key,values", [
    ("solver", {"solver": "rk5"}), ("solver", {"solver": "scipy_solver"}),
    ("order", {"order": 0}), ("order", {"kind": "gru", "order": 2}),
    ("sde_noise", {"sde_noise": "general"}), ("sde_method", {"sde_method": "heun"}),
    ("step_size", {"solver": "dopri5", "step_size": 0.1}), ("step_size", {"step_size": 0.0}),
    ("layers", {"layers": 0}), ("rtol", {"rtol": 0.0}), ("time_scale", {"time_scale": -1.0}),
])
def test_config_errors_name_the_key(key, values):
    with pytest.raises(ConfigError, match=rf"temporal\.{key}\b"):
        TemporalConfig(**values).validate()
    with pytest.raises(ConfigError, match=rf"temporal\.{key}\b"):
        build_temporal(TemporalConfig(**values), D, T)


def test_solver_lists_match_installed_torchdiffeq():
    """kinema.nn.temporal writes torchdiffeq's methods out (importing torchdiffeq costs scipy at start-up);
    a torchdiffeq that adds, drops or re-kinds a method shows here."""
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.solvers import FixedGridODESolver

    assert set(ODE_SOLVERS) == set(SOLVERS) - {"scipy_solver"}
    assert set(FIXED_STEP_SOLVERS) == {name for name in ODE_SOLVERS if issubclass(SOLVERS[name], FixedGridODESolver)}


def test_config_loads_through_build_dataclass():
    cfg = build_dataclass(TemporalConfig, {"kind": "ode", "order": 2, "solver": "dopri5"}, "model.temporal")
    assert (cfg.order, cfg.solver) == (2, "dopri5")
    with pytest.raises(ConfigError, match=r"model\.temporal\.sde_noise"):
        build_dataclass(TemporalConfig, {"sde_noise": "general"}, "model.temporal")
    with pytest.raises(ConfigError, match=r"temporal\.order"):
        build_dataclass(TemporalConfig, {"order": 0}, "model.temporal")


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match=r"ODEGenerator\.solver"):
        ODEGenerator(D, T, solver="nope")
    with pytest.raises(ConfigError, match=r"SDEGenerator\.sde_method"):
        SDEGenerator(D, T, method="nope")
    assert math.isclose(make("ode").field.scale, 1 / (T - 1))
