"""benchmarks/tganv2_memory.py: settings per resolution, one real measurement, OOM bookkeeping."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tganv2_memory.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tganv2_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_levels_follow_the_resolution(bench):
    s = bench.model_settings("sparse-frames", 96, 16, 0.125)
    assert s["levels"] == 3 and s["gen_channels"] == [128, 64, 32, 16, 8, 4] and s["sparse"]
    assert bench.model_settings("dense", 192, 16, 1.0)["gen_channels"] == [1024, 512, 256, 128, 64, 32, 32]
    assert bench.model_settings("sparse-frames-batch", 24, 16, 1.0)["batch_subsample"] == 2
    with pytest.raises(ValueError, match="not one of 24, 48, 96, 192"):
        bench.model_settings("dense", 64, 16, 1.0)


def test_bad_resolution_is_a_clear_error():
    result = subprocess.run([sys.executable, str(SCRIPT), "--resolutions", "100"], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0 and "resolution 100 is not one of" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_point_end_to_end(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(SCRIPT), "--modes", "sparse-frames", "--resolutions", "48", "--batch", "2",
                    "--width-scale", "0.03", "--steps", "1", "--out", str(out)], check=True, capture_output=True)
    (record,) = json.loads(out.read_text())
    assert record["mode"] == "sparse-frames" and record["level_frames"] == [16, 8] and not record["oom"]
    assert 0 < record["g_peak_bytes"] <= record["peak_bytes"] * 2 and record["d_peak_bytes"] > 0
    assert record["step_seconds"] > 0 and record["memory_source"] == "cpu_allocator"


def test_out_of_memory_is_recorded_and_the_sweep_goes_on(bench, monkeypatch, capsys):
    def oom(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(bench, "measure", oom)
    args = bench.parse_args(["--child", "--modes", "dense", "--resolutions", "192"])
    args.mode, args.resolution = "dense", 192
    assert bench.child_main(args) == 0
    record = json.loads(capsys.readouterr().out.split("RESULT ", 1)[1])
    assert record["oom"] and record["peak_bytes"] is None and record["resolution"] == 192
