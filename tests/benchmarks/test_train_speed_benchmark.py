"""benchmarks/train_speed.py runs and reports; the ConvLSTM fast path keeps TGANv2's maths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import kinema.models.tganv2.model as tganv2
from kinema.registry import build_model, load_config

ROOT = Path(__file__).resolve().parents[2]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("train_speed", ROOT / "benchmarks" / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_speed_record(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "speed.json"
    bench.main(["--config", "tganv2_tiny", "--set", "data.workers=0", "--batch", "2", "--rounds", "2",
                "--warmup", "1", "--threads", "1", "--out", str(out)])
    (record,) = json.loads(out.read_text())
    assert record["rounds"] == 2 and len(record["bare_step_s"]) == 2 == len(record["cli_step_s"])
    assert all(t > 0 for t in record["bare_step_s"] + record["cli_step_s"])
    assert record["flops_per_step"] > 0 and record["matmul_peak_flops"] > 0
    assert 0 < record["fraction_of_peak"] < 1.5
    assert set(record["gap_breakdown_median_s"]) >= {"data", "schedules", "logging"}


@pytest.mark.parametrize("overrides", [[], ["model.temporal=ode", "model.convlstm_forget_bias=0"]])
def test_fast_convlstm_same_outputs_and_gradients(overrides):
    cfg = load_config("tganv2_tiny", overrides).model
    torch.manual_seed(0)
    model = build_model(cfg).double()
    z = model.sample_noise(3, generator=torch.Generator().manual_seed(1)).double()
    results = {}
    try:
        for fast in (False, True):
            tganv2.FAST_CONVLSTM = fast
            model.zero_grad(set_to_none=True)
            videos = model.generate_levels(z, generator=torch.Generator().manual_seed(2))
            weights = [torch.linspace(-1, 1, v.numel(), dtype=v.dtype).view_as(v) for v in videos]
            sum((v * w).sum() for v, w in zip(videos, weights)).backward()
            grads = {n: p.grad.clone() for n, p in model.generator.named_parameters() if p.grad is not None}
            results[fast] = ([v.detach() for v in videos], grads)
    finally:
        tganv2.FAST_CONVLSTM = True
    (ref_videos, ref_grads), (videos, grads) = results[False], results[True]
    for a, b in zip(ref_videos, videos):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("config", ["tgan_ode_tiny", "tganv2_tiny"])
def test_channels_last_same_outputs_and_gradients(config):
    """model.channels_last changes the 2-D generator's memory layout, not its maths (float64): the
    sparse training levels and the dense sampling path."""
    results = {}
    for channels_last in (False, True):
        cfg = load_config(config, [f"model.channels_last={str(channels_last).lower()}"]).model
        torch.manual_seed(0)
        model = build_model(cfg).double()
        z = model.sample_noise(3, generator=torch.Generator().manual_seed(1)).double()
        videos = model.generate_levels(z, generator=torch.Generator().manual_seed(2))
        sum((v * torch.linspace(-1, 1, v.numel(), dtype=v.dtype).view_as(v)).sum() for v in videos).backward()
        grads = {n: p.grad.clone() for n, p in model.generator.named_parameters() if p.grad is not None}
        with torch.no_grad():
            dense = model.sample(z)
        results[channels_last] = ([v.detach() for v in videos] + [dense], grads)
    (ref_videos, ref_grads), (videos, grads) = results[False], results[True]
    assert len(videos) == len(ref_videos)
    for a, b in zip(ref_videos, videos):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    # A conv bias followed by batch norm has an exact-zero gradient: rounding noise at the scale of the
    # largest gradient, in either layout.
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-12 * scale, msg=name)
