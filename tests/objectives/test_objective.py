"""GAN objective: one step updates both networks; losses, penalty and NaN guard behave as specified; the phase
loop steps several optimisers from one phase and applies an objective's own LR factors for one step."""

from __future__ import annotations

import pytest
import torch
from tiny import holds_saved_tensors, one_batch, tiny_model_config

from kinema.objectives.gan import GANConfig as ObjectiveConfig
from kinema.models.tganv2 import TGANv2
from kinema.objectives import NonFiniteLossError
from kinema.objectives.gan import GANObjective
from kinema.objectives.gan import discriminator_loss, real_gradient_penalty


def setup(**objective):
    torch.manual_seed(0)
    model = TGANv2(tiny_model_config())
    obj = GANObjective(model, ObjectiveConfig(**objective))
    opts = {n: torch.optim.Adam(p, lr=1e-3, betas=(0.0, 0.9)) for n, p in obj.parameter_groups().items()}
    real = torch.rand(4, 3, 8, 16, 16) * 2 - 1
    return model, obj, opts, real


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("loss", ["softplus", "hinge"])
def test_one_step_changes_generator_and_discriminator(loss):
    model, obj, opts, real = setup(loss=loss)
    g0, d0 = snapshot(model.generator), snapshot(model.discriminator)
    metrics = obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(0)))
    assert set(metrics) == {"loss_g", "loss_d", "gp", "score_real", "score_fake"}
    assert all(torch.isfinite(v) for v in metrics.values())
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()) if a.dim() > 1)
    assert all(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()) if a.dim() > 1)


@pytest.mark.parametrize("gp_weight", [0.0, 0.5])
def test_discriminator_gradients_match_a_fresh_forward_on_detached_fakes(gp_weight):
    """Reusing the fake scores for the D step equals recomputing D on detached fakes (D is unchanged
    by the G step), which is what the official updater's unchain_backward() does -- also with R1, where the
    fakes' half of the loss is backpropagated before the reals' forward."""
    model, obj, opts, real = setup(gp_weight=gp_weight)
    for opt in opts.values():  # freeze updates: lr 0 keeps weights, so we can recompute afterwards
        opt.param_groups[0]["lr"] = 0.0
    g = torch.Generator().manual_seed(5)
    obj.train_step(*one_batch(real, opts, g))
    reused = [p.grad.clone() for p in model.discriminator.parameters()]

    g = torch.Generator().manual_seed(5)
    z = model.sample_noise(4, generator=g)
    fakes = [f.detach() for f in model.generate_levels(z, generator=g)]
    reals = model.real_levels(real, g)
    model.discriminator.zero_grad()
    reals = [r.detach().requires_grad_() for r in reals]
    real_scores = torch.cat(model.discriminate(reals))
    loss = discriminator_loss(real_scores, torch.cat(model.discriminate(fakes)), "softplus")
    (loss + gp_weight * real_gradient_penalty(real_scores, reals, "sum")).backward(
        inputs=list(model.discriminator.parameters()))
    for a, p in zip(reused, model.discriminator.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_discriminator_step_frees_the_fakes_graph_before_the_reals_forward():
    """The D graph on the fakes, kept from the G step, is released before the reals' forward and R1's double
    backward are built (the peak memory of a TGANv2 step at 192^2 is the two graphs at once otherwise)."""
    model, obj, opts, real = setup(gp_weight=0.5)
    held, real_levels = [], model.real_levels

    def spy(*args, **kwargs):
        held.append(holds_saved_tensors(obj._fake_scores[0].grad_fn))
        return real_levels(*args, **kwargs)

    model.real_levels = spy
    kept = []
    generator_phase = obj._generator_phase

    def spy_g(*args, **kwargs):
        out = generator_phase(*args, **kwargs)
        kept.append(holds_saved_tensors(obj._fake_scores[0].grad_fn))
        return out

    obj._generator_phase = spy_g
    obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(0)))
    assert kept == [True], "the G step should keep D's graph on the fakes for the D step"
    assert held == [False], "D's graph on the fakes is still held when the reals go through D"


def test_generator_gradients_match_plain_backpropagation():
    """Splitting the G backward at the fakes (to free G's graph early) gives the plain gradients."""
    model, obj, opts, real = setup()
    for opt in opts.values():
        opt.param_groups[0]["lr"] = 0.0
    obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(2)))
    split = [p.grad.clone() for p in model.generator.parameters()]
    g = torch.Generator().manual_seed(2)
    model.zero_grad()
    fakes = model.generate_levels(model.sample_noise(4, generator=g), generator=g)
    torch.nn.functional.softplus(-torch.cat(model.discriminate(fakes))).mean().backward()
    for a, p in zip(split, model.generator.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-7)


def test_discriminator_first_is_the_ports_loop():
    """update_order = "discriminator_first" is the TGAN-ODE authors' loop (tganv2 UCF101.py:93-119): D on
    a no-grad fake of one draw plus the summed R1, stepped; then G on a second draw scored by the new D."""
    import copy

    model, obj, opts, real = setup(update_order="discriminator_first", gp_weight=0.5)
    twin = copy.deepcopy(model)
    twin_opts = {"generator": torch.optim.Adam(twin.generator.parameters(), lr=1e-3, betas=(0.0, 0.9)),
                 "discriminator": torch.optim.Adam(twin.discriminator.parameters(), lr=1e-3, betas=(0.0, 0.9))}
    metrics = obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(3)))

    g = torch.Generator().manual_seed(3)
    z_d, z_g = twin.sample_noise(4, generator=g), twin.sample_noise(4, generator=g)
    with torch.no_grad():
        fakes = twin.generate_levels(z_d, generator=g)
    reals = [r.detach().requires_grad_() for r in twin.real_levels(real, g)]
    real_scores = torch.cat(twin.discriminate(reals))
    loss_d = discriminator_loss(real_scores, torch.cat(twin.discriminate(fakes)), "softplus")
    (loss_d + 0.5 * real_gradient_penalty(real_scores, reals, "sum")).backward(
        inputs=list(twin.discriminator.parameters()))
    twin_opts["discriminator"].step()
    fakes = twin.generate_levels(z_g, generator=g)
    loss_g = torch.nn.functional.softplus(-torch.cat(twin.discriminate(fakes))).mean()
    loss_g.backward(inputs=list(twin.generator.parameters()))
    twin_opts["generator"].step()

    torch.testing.assert_close(metrics["loss_d"], loss_d.detach())
    torch.testing.assert_close(metrics["loss_g"], loss_g.detach())
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_update_order_is_checked():
    with pytest.raises(Exception, match="update_order"):
        ObjectiveConfig(update_order="both").validate()


def test_gradient_penalty_sum_is_batch_times_mean_and_matches_closed_form():
    x = torch.randn(5, 3, requires_grad=True)
    y = (x * torch.tensor([1.0, 2.0, 3.0])).sum(1)  # d y_i / d x_i = (1, 2, 3): sum of squares 14
    total = real_gradient_penalty(y, [x], "sum")
    assert total.item() == pytest.approx(5 * 14)
    assert real_gradient_penalty(y, [x], "mean").item() == pytest.approx(14)


def test_gradient_penalty_sums_over_levels():
    a, b = torch.randn(2, 4, requires_grad=True), torch.randn(2, 2, requires_grad=True)
    y = torch.cat([a.sum(1), 2 * b.sum(1)])
    assert real_gradient_penalty(y, [a, b], "sum").item() == pytest.approx(2 * 4 + 2 * 2 * 4)


def test_non_finite_loss_raises_before_any_update():
    model, obj, opts, real = setup()
    with torch.no_grad():
        model.discriminator.levels[0].linear.bias.fill_(float("nan"))
    g0 = snapshot(model.generator)
    with pytest.raises(NonFiniteLossError, match="generator"):
        obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))


def test_non_finite_gradient_with_finite_loss_is_caught_before_the_step():
    model, obj, opts, real = setup()
    weight = model.discriminator.levels[1].blocks[0].conv1.weight
    weight.register_hook(lambda grad: grad * float("nan"))
    d0 = snapshot(model.discriminator)
    with pytest.raises(NonFiniteLossError, match="discriminator gradient norm"):
        obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))


def test_a_phase_can_step_several_optimisers_and_an_objective_scales_an_lr_for_one_step():
    """DVG's joint phase: one loss, three optimisers, each stepped; lr_factors apply within the step only,
    restored even when the step fails."""
    from kinema.data import Batch
    from kinema.objectives.base import NonFiniteLossError, Objective, Phase, StepContext

    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    seen = []

    class Joint(Objective):
        name = "joint"

        def __init__(self, loss_scale=1.0):  # no model needed
            self.loss_scale = loss_scale

        def parameter_groups(self):
            return {"a": [a], "b": [b]}

        def phases(self):
            return (Phase("both", optimizers=("a", "b")),)

        def lr_factors(self, step):
            return {"b": 0.5}

        def run_phase(self, phase, batches, ctx):
            seen.append((phase.optimizers, [g["lr"] for name in "ab" for g in ctx.optimizers[name].param_groups]))
            loss = (a.sum() + b.sum()) * self.loss_scale
            ctx.scale(loss).backward()
            return {"loss": loss}, {}

    opts = {"a": torch.optim.SGD([a], lr=1.0), "b": torch.optim.SGD([b], lr=1.0)}
    Joint().train_step([Batch(torch.zeros(1, 3, 1, 2, 2))], StepContext.for_batch(opts, torch.Generator(), 1))
    assert seen == [(("a", "b"), [1.0, 0.5])]
    assert a.tolist() == [0.0, 0.0] and b.tolist() == [0.5, 0.5]
    assert opts["b"].param_groups[0]["lr"] == 1.0, "the factor applies within the step only"
    with pytest.raises(NonFiniteLossError):
        Joint(float("nan")).train_step([Batch(torch.zeros(1, 3, 1, 2, 2))],
                                       StepContext.for_batch(opts, torch.Generator(), 1))
    assert opts["b"].param_groups[0]["lr"] == 1.0, "restored after a failed step too"
    assert Phase("g").optimizers == ("g",)


def test_gan_objectives_read_declarations_not_signatures():
    """Sparse clips' frame times go only to a model that declares capabilities.sparse_frames; the ADA hook and
    the augmentation before D are GANModel members every GAN model offers (no-ops for TGAN/TGANv2)."""
    from kinema.config import build_dataclass
    from kinema.data import Batch
    from kinema.errors import ConfigError
    from kinema.objectives.base import StepContext
    from kinema.objectives.gan import GANConfig, GANObjective
    from kinema.registry import build_model, load_config

    model = TGANv2(tiny_model_config())
    assert not model.capabilities.sparse_frames and not model.augments_reals
    assert model.observe_real_scores(torch.zeros(3), 0) == {}
    levels = [torch.zeros(1)]
    assert model.augment_levels(levels) is levels
    objective = GANObjective(model, build_dataclass(GANConfig, {}, "objective"))
    opts = {n: torch.optim.SGD(p, lr=0.0) for n, p in objective.parameter_groups().items()}
    clips = torch.zeros(2, 3, 8, 16, 16)
    batch = Batch(clips, times=torch.arange(8.0).expand(2, 8))
    with pytest.raises(ConfigError, match="does not train on sparse clips .*set data.sparse_frames = 0"):
        objective.train_step([batch], StepContext.for_batch(opts, torch.Generator().manual_seed(0), 2))
    stylegan = build_model(load_config("stylegan_v_tiny").model)
    assert stylegan.capabilities.sparse_frames and stylegan.augments_reals
