"""Data-parallel training: 2 processes (torchrun, gloo, CPU) against 1 process, accumulation, resume.

The comparisons use Adam with a large eps (the update is then ~lr * gradient, not lr * sign of the
gradient), so that parameters whose gradient is ~0 cannot flip sign on float noise; they measure
the distance between two runs' parameter updates relative to the size of the updates.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import one_batch, tiny_model_config, tiny_run_config

from kinema.config import RunConfig
from kinema.data import Batch
from kinema.errors import ConfigError
from kinema.registry import build_model
from kinema.nn import BatchRows, DistributedBatchNorm, convert_batchnorm
from kinema.objectives.gan import GANObjective
from kinema.objectives.base import StepContext
from kinema.objectives.gan import GANConfig as ObjectiveConfig
from kinema.training import Trainer, TrainingError, distributed
from kinema.runs import list_checkpoints
from kinema.training.distributed import DistributedSetupError, DrawSampler, ProcessInfo, rank_rows

COMPARE = dict(lr=0.05, eps=1.0, lr_schedule="constant", batch_size=8, log_every=1)


def run_config(steps: int = 3, **train) -> RunConfig:
    cfg = tiny_run_config(steps=steps, **{**COMPARE, **train})
    cfg.objective.gp_reduction = "mean"  # "sum" sums over each process's batch (the official per-GPU semantics)
    return cfg


def initial_weights(cfg: RunConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(cfg.train.seed)  # as the trainer does before building the model
    return {k: v.clone() for k, v in build_model(cfg.model).state_dict().items()}


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(list_checkpoints(run)[-1] / "model.safetensors")


def update_distance(a: dict, b: dict, start: dict) -> float:
    """max |update_a - update_b| / max |update_a| over all floating-point parameters."""
    keys = [k for k in start if start[k].is_floating_point() and "running" not in k]
    diff = max((a[k] - b[k]).abs().max().item() for k in keys)
    size = max((a[k] - start[k]).abs().max().item() for k in keys)
    assert size > 1e-3, "the runs barely moved: the comparison would not discriminate"
    return diff / size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cfg: RunConfig, out: Path, tmp: Path, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m kinema train`` on localhost with the gloo backend."""
    config = tmp / f"{out.name}.toml"
    config.write_text(cfg.to_toml())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
           "-m", "kinema", "train", "--config", str(config), "--out", str(out), "--device", "cpu",
           "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def one_process(cfg: RunConfig, out: Path, resume: bool = False) -> Path:
    return Trainer(cfg, out, device="cpu", resume=resume, progress=False).fit()


# ---------------------------------------------------------------------------------------- 2 processes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-process and two-process runs of the same tiny TGANv2 (3 steps, global batch 8)."""
    tmp = tmp_path_factory.mktemp("dist")
    cfg = run_config()
    out = {
        "one": one_process(cfg, tmp / "one").parent.parent,
        "one_accumulate2": one_process(run_config(accumulate=2), tmp / "one_accumulate2").parent.parent,
    }
    torchrun(cfg, tmp / "two", tmp)
    torchrun(run_config(sync_batchnorm=False), tmp / "two_local_bn", tmp)
    out["two"], out["two_local_bn"] = tmp / "two", tmp / "two_local_bn"
    return cfg, out, tmp


def test_two_processes_match_one_process(runs):
    cfg, out, _ = runs
    start = initial_weights(cfg)
    same = update_distance(final_weights(out["one"]), final_weights(out["two"]), start)
    assert same < 1e-3, f"2 processes (synced BN) vs 1 process: relative update distance {same:.2e}"
    # Negative control: without synchronised BN each process normalises over 4 samples, not 8.
    local = update_distance(final_weights(out["one"]), final_weights(out["two_local_bn"]), start)
    assert local > 100 * max(same, 1e-6), f"the comparison does not discriminate ({same:.2e} vs {local:.2e})"


def test_accumulation_matches_two_processes_with_local_batch_norm(runs):
    """2 micro-batches of 4 in one process == 2 processes of 4 each without synced BN: both
    normalise over the same two groups of 4 samples and average the same gradients."""
    cfg, out, _ = runs
    distance = update_distance(final_weights(out["one_accumulate2"]), final_weights(out["two_local_bn"]),
                               initial_weights(cfg))
    assert distance < 1e-3, distance


def test_rank_zero_alone_writes(runs):
    _, out, _ = runs
    two = out["two"]
    assert [p.name for p in list_checkpoints(two)] == ["step_0000003"]
    assert not [p for p in (two / "checkpoints").iterdir() if p.name.startswith(".")], "temp dirs left behind"
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert [eval(line)["step"] for line in lines] == [1, 2, 3], "one log line per step, not one per process"
    assert sorted(p.name for p in (two / "samples").iterdir()) == [
        "step_0000000.gif", "step_0000000.mp4", "step_0000003.gif", "step_0000003.mp4"]


def test_logged_losses_are_means_over_processes(runs):
    _, out, _ = runs
    read = lambda run: [eval(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for one, two in zip(read(out["one"]), read(out["two"])):
        assert one["loss_d"] == pytest.approx(two["loss_d"], rel=1e-3, abs=1e-4)
        assert one["loss_g"] == pytest.approx(two["loss_g"], rel=1e-3, abs=1e-4)


def test_resume_two_process_checkpoint_in_one_process(runs):
    cfg, out, tmp = runs
    resumed_dir = tmp / "resumed"
    import shutil

    shutil.copytree(out["two"], resumed_dir)
    longer = run_config(steps=5)
    one_process(longer, resumed_dir, resume=True)
    straight = one_process(longer, tmp / "straight5").parent.parent
    distance = update_distance(final_weights(straight), final_weights(resumed_dir), initial_weights(cfg))
    assert distance < 1e-3, distance


CRASHING_WORKER = """
import os, sys
from pathlib import Path
from kinema.training import trainer as T
marker = Path(sys.argv[1])
init = T.Trainer.__init__

def crash_once(self, *args, **kwargs):
    init(self, *args, **kwargs)
    step = self.objective.train_step

    def train_step(micro_batches, ctx):
        if os.environ["RANK"] == "1" and self.step == 3 and not marker.exists():
            marker.touch()
            os._exit(17)  # a hard failure of one rank, no cleanup
        return step(micro_batches, ctx)

    self.objective.train_step = train_step

T.Trainer.__init__ = crash_once
from kinema.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_elastic_restart_resumes_from_the_last_checkpoint(runs):
    """Rank 1 dies during step 4; torchrun restarts both workers, which rerun the same command with
    --auto-resume and continue from the step-2 checkpoint to the weights of an uninterrupted run."""
    cfg, out, tmp = runs
    longer = run_config(steps=5, checkpoint_every=2)
    config = tmp / "elastic.toml"
    config.write_text(longer.to_toml())
    script, marker, run = tmp / "crashing_worker.py", tmp / "crashed", tmp / "elastic"
    script.write_text(CRASHING_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--max-restarts", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", str(script), str(marker),
           "train", "--config", str(config), "--out", str(run), "--device", "cpu", "--no-progress", "--auto-resume"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert marker.exists(), "the worker did not crash: the test exercised nothing"
    steps = [eval(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the resumed run logs steps 3.. again and drops the killed run's record of step 3: each step once
    assert steps == [1, 2, 3, 4, 5], f"each step logged once after the resume, log steps {steps}"
    assert "resuming" in result.stderr and "from step_0000002 (step 2)" in result.stderr, result.stderr[-2000:]
    straight = one_process(run_config(steps=5, checkpoint_every=2), tmp / "straight5_elastic").parent.parent
    distance = update_distance(final_weights(straight), final_weights(run), initial_weights(cfg))
    assert distance < 1e-3, distance


# ---------------------------------------------------------------------------------------- one process


def test_accumulation_equals_the_whole_batch_without_batch_statistics():
    """With batch norm frozen (eval mode), 2 micro-batches of 4 give the batch-8 update exactly."""

    def train(accumulate: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(tiny_model_config())
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        obj = GANObjective(model, ObjectiveConfig(gp_reduction="mean"))
        opts = {n: torch.optim.SGD(p, lr=0.1) for n, p in obj.parameter_groups().items()}
        real = torch.rand(8, 3, 8, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
        for _ in range(2):
            ctx = StepContext.for_batch(opts, noise, 8, accumulate=accumulate)
            obj.train_step(Batch(real).split(accumulate), ctx)
        return {k: v.clone() for k, v in model.state_dict().items()}

    noise = torch.Generator().manual_seed(3)
    whole = train(1)
    noise = torch.Generator().manual_seed(3)
    accumulated = train(2)
    for k in whole:
        torch.testing.assert_close(accumulated[k], whole[k], rtol=1e-5, atol=1e-6, msg=k)


def test_trainer_accumulates_and_reports_the_whole_batch(tmp_path):
    cfg = tiny_run_config(steps=2, accumulate=2)
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    seen = []
    original = trainer.objective.train_step

    def spy(micro_batches, ctx):
        seen.append(([tuple(m.clips.shape) for m in micro_batches], ctx.rows))
        return original(micro_batches, ctx)

    trainer.objective.train_step = spy
    trainer.fit()
    shapes, rows = seen[0]
    assert shapes == [(2, 3, 8, 16, 16)] * 2
    assert rows == [BatchRows(0, 2, 4), BatchRows(2, 4, 4)]


def test_draw_sampler_ranks_partition_each_global_batch():
    one = DrawSampler(10, seed=5, global_batch=4)
    stream = [d for d, _ in zip(iter(one), range(24))]
    ranks = [DrawSampler(10, seed=5, global_batch=4, rank=r, world_size=2) for r in range(2)]
    shares = [[d for d, _ in zip(iter(s), range(12))] for s in ranks]
    for step in range(6):
        assert shares[0][2 * step: 2 * step + 2] + shares[1][2 * step: 2 * step + 2] == stream[4 * step: 4 * step + 4]
    assert sorted(d % 10 for d in stream[:10]) == list(range(10)), "an epoch visits every clip once"
    assert all(d >= 10 for d in stream[10:20]), "draw ids of epoch 1 are 10..19"
    resumed = DrawSampler(10, seed=5, global_batch=4, consumed=8, rank=1, world_size=2)
    assert [d for d, _ in zip(iter(resumed), range(4))] == shares[1][4:8]


def test_rank_rows_split_the_global_batch():
    info = ProcessInfo(rank=1, world_size=2)
    assert rank_rows(8, info) == [BatchRows(4, 8, 8)]
    assert rank_rows(8, info, accumulate=2) == [BatchRows(4, 6, 8), BatchRows(6, 8, 8)]
    first, kept = BatchRows(3, 7, 8).every(2)
    assert (first, kept) == (1, BatchRows(2, 4, 4))  # global rows 4 and 6 -> local 1 and 3


def test_per_sample_offsets_do_not_depend_on_the_split():
    model = build_model(tiny_model_config(subsample_offset="sample"))
    video = torch.rand(6, 3, 8, 16, 16)
    whole = model.real_levels(video, torch.Generator().manual_seed(4))
    halves = [model.real_levels(video[r.start:r.stop], torch.Generator().manual_seed(4), rows=r)
              for r in BatchRows.whole(6).split(2)]
    for level, parts in zip(whole, zip(*halves)):
        torch.testing.assert_close(torch.cat(parts), level)
    z = model.sample_noise(6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.eval()  # batch statistics aside, the generator's sparse offsets follow the rows too
        whole = model.generate_levels(z, torch.Generator().manual_seed(4))
        halves = [model.generate_levels(z[r.start:r.stop], torch.Generator().manual_seed(4), rows=r)
                  for r in BatchRows.whole(6).split(2)]
    for level, parts in zip(whole, zip(*halves)):
        torch.testing.assert_close(torch.cat(parts), level)


def test_distributed_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2), torch.nn.BatchNorm1d(2))
    keys = list(net.state_dict())
    import copy

    converted = convert_batchnorm(copy.deepcopy(net))
    assert isinstance(converted[1], DistributedBatchNorm) and isinstance(converted[5], DistributedBatchNorm)
    assert list(converted.state_dict()) == keys, "checkpoints load into either"
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(converted(x), net(x))
    torch.testing.assert_close(converted.state_dict(), net.state_dict())


# ---------------------------------------------------------------------------------------- bad input


def test_global_batch_must_divide_by_processes_times_accumulation(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "setup", lambda device, backend: (torch.device("cpu"), ProcessInfo(0, 3)))
    with pytest.raises(TrainingError, match=r"batch_size 4 .* not divisible by 3 process\(es\) x train.accumulate 1"):
        Trainer(tiny_run_config(), tmp_path, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="not divisible by train.accumulate 3"):
        tiny_run_config(accumulate=3)


def test_nccl_without_cuda_and_missing_rendezvous_are_explained(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(DistributedSetupError, match="nccl needs CUDA"):
        distributed.setup("cpu", "nccl")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DistributedSetupError, match="MASTER_ADDR is not.*torchrun"):
        distributed.setup("cpu", "gloo")
    with pytest.raises(DistributedSetupError, match="LOCAL_RANK"):
        distributed.setup("cuda:1", "auto")


def test_fp16_with_accumulation_scales_every_micro_step(tmp_path):
    cfg = tiny_run_config(steps=2, precision="fp16", accumulate=2)
    cfg.model.sparse = False  # see test_trainer: CPU low-precision conv3d with T = 2
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    scaled = []
    original = trainer.scaler.scale
    trainer.scaler.scale = lambda loss: scaled.append(loss.detach()) or original(loss)
    final = load_file(trainer.fit() / "model.safetensors")
    assert len(scaled) == 2 * 2 * 2, "G and D phases x 2 micro-steps x 2 steps"
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
