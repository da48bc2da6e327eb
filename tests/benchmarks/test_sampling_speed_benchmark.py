"""benchmarks/sampling_speed.py: records per case, the VDM step scaling, the VideoGPT cache comparison."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("sampling_speed", ROOT / "benchmarks" / "sampling_speed.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_records_for_tiny_cases(tmp_path):
    out = tmp_path / "s.json"
    records = bench.main(["--cases", "tganv2_tiny,vdm_tiny,videogpt_tiny", "--repeats", "1", "--vdm-steps", "2",
                          "--threads", "1", "--out", str(out)])
    by = {(r["case"], r["variant"]): r for r in records}
    assert set(by) == {("tganv2_tiny", "dense"), ("vdm_tiny", "ddim"), ("videogpt_tiny", "kv cache"),
                       ("videogpt_tiny", "no cache")}
    assert all(r["seconds_per_video"] > 0 and r["min"] <= r["seconds_per_video"] <= r["max"] for r in records)
    vdm = by[("vdm_tiny", "ddim")]
    assert vdm["measured_steps"] == 2
    assert abs(vdm["seconds_per_video_at"]["256"] - 128 * vdm["seconds_per_video"]) < 1e-9  # linear in steps
    saved = json.loads(out.read_text())
    assert saved["meta"]["threads"] == 1 and len(saved["records"]) == 4
