"""benchmarks/equal_compute.py end to end on a few steps: kinema and the reference (video-diffusion-pytorch, in
its own process) trained on the same batches, scored with a stub feature network (no I3D weights needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
_spec = importlib.util.spec_from_file_location("equal_compute_benchmark", BENCH / "equal_compute.py")
ec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ec)



def stub_features(videos: torch.Tensor):
    """Per clip (quantised as kinema evaluate does): mean and std per channel and the mean absolute frame
    difference per step and channel (test_quality_benchmark.py's stub)."""
    from kinema.metrics.evaluate import quantise

    x = torch.from_numpy(quantise(videos)).float() / 255  # (N, T, H, W, 3)
    motion = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(2, 3)).flatten(1)
    return torch.cat([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)), motion], 1).numpy()

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: shared cores, one thread


def test_reference_stream_is_kinemas_batches():
    """The reference's batches are the trainer's: same clips, same DrawSampler order, [-1, 1]."""
    from kinema.registry import load_config
    from kinema.training.trainer import Trainer

    stage = ec.EQUAL_FAMILIES["vdm"]["stages"][0]
    x = next(ec.stage_stream(stage, seed=3))
    cfg = load_config(stage["config"], ec.stage_overrides(stage, 3))
    assert x.shape == (cfg.train.batch_size, 3, cfg.model.frames, cfg.model.resolution, cfg.model.resolution)
    assert x.min() >= -1 and x.max() <= 1
    trainer = Trainer.__new__(Trainer)  # only what _batches reads
    from kinema.data import build_dataset
    from kinema.training.distributed import ProcessInfo

    trainer.config, trainer.step, trainer.process, trainer.device = cfg, 0, ProcessInfo(0, 1, 0), torch.device("cpu")
    m = cfg.model
    trainer.dataset = build_dataset(cfg.data, frames=m.frames, height=m.resolution, width=m.resolution, seed=3,
                                    train=True, uint8=True)
    first = next(iter(trainer._batches()))
    assert torch.equal(trainer._to_device(first.clips), x)


@pytest.mark.skipif(importlib.util.find_spec("video_diffusion_pytorch") is None,
                    reason="video-diffusion-pytorch is not installed")
def test_end_to_end_vdm(tmp_path, monkeypatch):
    monkeypatch.setitem(ec.EQUAL_FAMILIES["vdm"], "speed_ratio", 0.5)  # equal wall clock: twice the steps
    report = tmp_path / "quality.md"
    report.write_text("# Generated video quality\n\nhand-written text\n")
    record = ec.run(["--family", "vdm", "--seeds", "0", "--steps", "2", "--clips", "2", "--sample-batch", "2",
                     "--out", str(tmp_path / "eq.json"), "--report", str(report), "--workdir", str(tmp_path / "w")],
                    feature_fn=stub_features, log=lambda *a: None)
    s = record["summary"]
    assert set(s) == set(ec.ROWS)
    assert s["kinema_equal_steps"]["steps"] == 2 and s["reference_equal_steps"]["steps"] == 2
    assert s["kinema_equal_wall_clock"]["steps"] == 4
    for row in ec.ROWS:
        assert s[row]["seeds"] == 1 and s[row]["cpu_s_per_step"] > 0
        for key in ec.MEASURE_KEYS:
            assert key in s[row] and f"{key}_std" in s[row]
    ref = record["per_seed"][0]["reference_equal_steps"]
    assert ref["parameters"] > 0 and ref["loss"]["vdm"][0][0] == 1
    samples = torch.load(tmp_path / "w" / "reference_0" / "samples.pt")
    assert samples.shape == (2, 3, 16, 16, 16) and samples.min() >= -1 and samples.max() <= 1
    saved = json.loads((tmp_path / "eq.json").read_text())
    assert saved["image"] == "equal_compute_vdm.png" and (tmp_path / "images" / "equal_compute_vdm.png").is_file()
    text = report.read_text()
    assert "hand-written text" in text and text.count(ec.SECTION) == 1
    assert "| kinema, equal wall clock | 4 |" in text and "/tmp" not in saved["command"]
    # a second run replaces the family's block, keeps the section once
    block = ec.render(record, "images")
    ec.write_report(report, block, "vdm")
    assert report.read_text().count("equal_compute:vdm:begin") == 1


def test_summary_of_multi_stage_families():
    """Two seeds of a two-stage family: measures as mean ± std, CPU-s/step per stage (medians), target verdicts."""
    def row(fvd, cps):
        return {"fvd": fvd, "kvd": 1.0, "count_preserved": 0.0, "physically_consistent": 0.0, "speed_distance": 0.1,
                "steps": {"vqgan": 10, "transformer": 5}, "cpu_s_per_step": {"vqgan": cps, "transformer": 2 * cps}}

    per_seed = [{name: row(fvd, cps) for name in ec.ROWS} for fvd, cps in ((100.0, 1.0), (120.0, 3.0))]
    s = ec.summarise(per_seed)
    assert s["kinema_equal_steps"]["fvd"] == 110.0 and s["kinema_equal_steps"]["fvd_std"] > 0
    assert s["reference_equal_steps"]["cpu_s_per_step"] == {"vqgan": 2.0, "transformer": 4.0}
    verdict = {r["row"]: r for r in ec.target_reading(s)}
    assert verdict["kinema_equal_steps"]["met"]  # equal: as good within the spread
    assert not verdict["kinema_equal_wall_clock"]["met"]  # equal: not better
    assert "| reference, equal steps | 10+5 | 2.00+4.00 |" in ec.render(
        {"family": "x", "reference": "y", "command": "c", "torch": "t", "threads": 1, "seeds": [0, 1], "samples": 2,
         "clips": 2, "data": "bouncing_shapes", "size": 32, "speed_ratio": 0.5, "wall_seconds": 60.0, "summary": s,
         "stage_names": ["vqgan", "transformer"], "target": ec.target_reading(s)}, None)
