"""benchmarks/reference.py: argument defaults per family, and one tiny VDM round against
video-diffusion-pytorch when it is installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("reference_bench", ROOT / "benchmarks" / "reference.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_family_defaults_and_overrides():
    args = bench.parse_args(["--family", "vdm", "--set", "train.log_every=5"])
    assert args.config == "vdm_cpu16" and args.batch == 8 and args.sample_steps == 32 and args.threads == 1
    # the family's matching overrides first, the user's after them, the sampler's steps last
    assert args.set[: len(bench.FAMILIES["vdm"]["set"])] == bench.FAMILIES["vdm"]["set"]
    assert args.set[-2:] == ["train.log_every=5", "model.sampling_steps=32"]
    nuwa = bench.parse_args(["--family", "nuwa", "--batch", "4"])
    assert nuwa.config == "nuwa_cpu16" and nuwa.batch == 4 and nuwa.sample_steps == 0
    assert not any(s.startswith("model.sampling_steps") for s in nuwa.set)
    with pytest.raises(SystemExit):
        bench.parse_args(["--family", "videogpt"])


def test_matched_vdm_configuration_builds():
    """The kinema side of the VDM comparison is a valid config with attention at every level."""
    from kinema.registry import build_model, load_config

    args = bench.parse_args(["--family", "vdm"])
    cfg = load_config(args.config, args.set)
    assert cfg.model.attention_resolutions == [16, 8] and cfg.model.parameterization == "eps"
    assert cfg.objective.joint_image_frames == 0
    assert 150_000 < build_model(cfg.model).parameter_counts()["total"] < 250_000


@pytest.mark.skipif(importlib.util.find_spec("video_diffusion_pytorch") is None,
                    reason="video-diffusion-pytorch is not installed (pip install --no-deps video-diffusion-pytorch)")
def test_one_tiny_vdm_round(tmp_path):
    out = tmp_path / "ref.json"
    record = bench.main(["--family", "vdm", "--rounds", "1", "--warmup", "0", "--sample-rounds", "1",
                         "--sample-warmup", "0", "--sample-steps", "2", "--batch", "2", "--sample-batch", "1",
                         "--out", str(out)])
    assert json.loads(out.read_text())["family"] == "vdm"
    assert 0.95 < record["parameter_ratio"] < 1.05  # the matched architectures
    for key in ("train_kinema_cli_s", "train_kinema_bare_s", "train_reference_s", "sample_kinema_s_per_video",
                "sample_reference_s_per_video"):
        assert len(record[key]) == 1 and record[key][0] > 0
    rss = record["peak_rss_bytes"]
    assert all(rss[phase][who] > 0 for phase in ("train", "sample") for who in ("kinema", "reference"))
