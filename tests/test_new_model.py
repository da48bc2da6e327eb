"""A new model family added from outside kinema: a config, a model, an objective and two registry
lines -- nothing in kinema's files changes. It must train, checkpoint, resume, sample and describe
itself through the CLI (docs/adding_a_model.md walks through the same steps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from torch import nn

from kinema import registry
from kinema.cli import main
from kinema.models.base import VideoModel
from kinema.nn.noise import draw_noise
from kinema.objectives.base import Objective
from kinema.runs import list_checkpoints
from kinema.sampling import SampleOption, Sampler, sample_in_batches


@dataclass
class ToyConfig:
    name: Literal["toy"] = "toy"
    frames: int = 4
    resolution: int = 8
    z_dim: int = 6


class Toy(VideoModel):
    """noise (B, z_dim) -> videos (B, 3, T, R, R) through one linear layer."""

    default_objective = "toy_regression"

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = nn.Linear(config.z_dim, 3 * config.frames * config.resolution**2)

    def sample_noise(self, n, generator=None, device=None):
        return draw_noise("normal", (n, self.config.z_dim), generator, device if device is not None else self.device)

    def sample(self, noise, brightness: float = 0.0):
        return torch.tanh(self.generator(noise) + brightness).view(len(noise), *self.video_shape)


class ToySampler(Sampler):
    options = (SampleOption("brightness", "toy: add this before the tanh", float),)

    def run(self, model, num, seed, batch_size, progress, brightness=0.0):
        return sample_in_batches(model, num, seed, batch_size, progress, brightness=brightness)


@dataclass
class ToyRegressionConfig:
    name: Literal["toy_regression"] = "toy_regression"


class ToyRegression(Objective):
    """Pull samples towards the real clips of the batch (a toy, not a generative objective)."""

    name = "toy_regression"
    ema_target = "generator"

    def parameter_groups(self):
        return {"generator": list(self.model.generator.parameters())}

    def run_phase(self, phase, batches, ctx):
        def loss(batch, rows):
            noise = self.model.sample_noise(len(batch), generator=ctx.generator, device=batch.clips.device)
            return (self.model.sample(noise) - batch.clips).pow(2).mean()

        mean = self.mean_loss(batches, ctx, loss)
        return {"toy": mean}, {"loss": mean}


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "toy", registry.ModelEntry(ToyConfig, Toy, ToySampler()))
    monkeypatch.setitem(registry.OBJECTIVES, "toy_regression",
                        registry.ObjectiveEntry(ToyRegressionConfig, ToyRegression))


def test_a_toy_model_trains_resumes_and_samples_through_the_cli(tmp_path, toy_registered, capsys):
    config = tmp_path / "toy.toml"
    config.write_text('[model]\nname = "toy"\n\n[train]\nsteps = 4\nbatch_size = 4\nlog_every = 1\nlr_schedule = "constant"\n'
                      'sample_every = 2\ncheckpoint_every = 2\nnum_samples = 2\nema_decay = 0.5\n'
                      '\n[data]\nnum_clips = 16\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step_0000002", "step_0000004"]
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--no-progress", "--device", "cpu"]) == 0
    assert list_checkpoints(run)[-1].name == "step_0000006"
    out = tmp_path / "samples.gif"
    assert main(["sample", "--checkpoint", str(run), "--num", "3", "--brightness", "0.5", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["info", str(run)]) == 0
    assert "model:      toy" in capsys.readouterr().out
    # an option another family declares is refused with this family's list
    assert main(["sample", "--checkpoint", str(run), "--temperature", "0.5", "--out", str(out)]) == 2
    assert "--temperature: not supported by a 'toy' model; its sampling options: --brightness" in capsys.readouterr().err


def test_an_objective_checks_the_model_interface_it_needs(toy_registered):
    from kinema.config import build_dataclass
    from kinema.errors import ConfigError
    from kinema.objectives.gan import GANConfig

    model = Toy(ToyConfig())
    with pytest.raises(ConfigError, match=r"cannot train a Toy: the model lacks augment_levels, augments_reals, discriminate, "
                                          r"discriminator, generate_levels, observe_real_scores, real_levels of the "
                                          r"GANModel interface"):
        registry.build_objective(model, build_dataclass(GANConfig, {}, "objective"))
    # an object that is no VideoModel at all gets the same message, not an AttributeError
    from kinema.objectives.base import check_model
    from kinema.objectives.gan import GANModel, GANObjective

    with pytest.raises(ConfigError, match=r"cannot train a Linear: .* Use the model's own objective or implement"):
        check_model(GANObjective, torch.nn.Linear(1, 1), GANModel)
