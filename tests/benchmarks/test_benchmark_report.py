"""benchmarks/report_memory.py: growth exponents, sparse/dense ratios, markdown, markers, plot, CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report_memory.py"
_spec = importlib.util.spec_from_file_location("report_memory", SCRIPT)
rm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rm)

MIB = 2**20
RESOLUTIONS = (64, 128, 256)

# Peak MiB as exact power laws of the resolution r (G, D); total = G + D.
#   dense:               G = r^2/256, D = 3 r^2/256 -> total r^2/64    (slope 2)
#   sparse-frames:       G = r/2,     D = 3 r/2     -> total 2 r       (slope 1)
#   sparse-frames-batch: G = r/8,     D = r/8       -> total r/4       (slope 1)
# At r = 256: dense 256 + 768 = 1024 MiB, sparse-frames 128 + 384 = 512, sparse-frames-batch 32 + 32 = 64.
LAWS = {
    "dense": (lambda r: r * r / 256, lambda r: 3 * r * r / 256),
    "sparse-frames": (lambda r: r / 2, lambda r: 3 * r / 2),
    "sparse-frames-batch": (lambda r: r / 8, lambda r: r / 8),
}


def record(mode, resolution, *, device="cuda", width_scale=1.0, batch=4, oom=False, **extra):
    if oom:
        g = d = total = seconds = None
    else:
        g_law, d_law = LAWS[mode]
        g, d = int(g_law(resolution) * MIB), int(d_law(resolution) * MIB)
        total, seconds = g + d, resolution / 1000
    rec = {
        "mode": mode, "resolution": resolution, "frames": 16, "batch": batch, "device": device,
        "g_peak_bytes": g, "d_peak_bytes": d, "peak_bytes": total, "step_seconds": seconds,
        "width_scale": width_scale, "levels": 4, "torch": "2.13.0",  # an unknown key, to be ignored
    }
    if oom:
        rec["oom"] = True
    return rec


def synthetic(**kwargs):
    return [record(mode, r, **kwargs) for mode in LAWS for r in RESOLUTIONS]


def write_json(tmp_path, records, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


# ----------------------------------------------------------------------------------------- maths


def test_growth_exponent_recovers_power_laws():
    assert abs(rm.growth_exponent([64, 128, 256], [5 * r**2 for r in (64, 128, 256)]) - 2) < 1e-6
    assert abs(rm.growth_exponent([32, 64, 96, 192], [7 * r**1.5 for r in (32, 64, 96, 192)]) - 1.5) < 1e-6
    exponents = rm.mode_exponents(synthetic())
    assert list(exponents) == ["dense", "sparse-frames", "sparse-frames-batch"]
    for mode, expected in {"dense": 2, "sparse-frames": 1, "sparse-frames-batch": 1}.items():
        assert abs(exponents[mode] - expected) < 1e-6
        assert abs(rm.mode_exponents(synthetic(), "g_peak_bytes")[mode] - expected) < 1e-6


def test_growth_exponent_needs_two_positive_points():
    assert math.isnan(rm.growth_exponent([64], [100]))
    assert math.isnan(rm.growth_exponent([64, 128], [100, None]))
    assert math.isnan(rm.growth_exponent([64, 128], [100, 0]))
    assert math.isnan(rm.growth_exponent([64, 64], [100, 200])), "one resolution has no slope"
    assert abs(rm.growth_exponent([64, 128, 256], [-1, 100, 400]) - 2) < 1e-6, "bad points are dropped"


def test_ratios_at_largest_resolution_per_group():
    records = synthetic() + synthetic(device="cpu", batch=2)
    result = rm.ratios(records)
    assert set(result) == {("cuda", 1.0, 4), ("cpu", 1.0, 2)}
    frames, frames_batch = result[("cuda", 1.0, 4)]["sparse-frames/dense"], result[("cuda", 1.0, 4)]["sparse-frames-batch/dense"]
    assert frames["resolution"] == frames_batch["resolution"] == 256
    assert frames["peak_bytes"] == pytest.approx(0.5)
    assert frames["g_peak_bytes"] == pytest.approx(0.5)
    assert frames["d_peak_bytes"] == pytest.approx(0.5)
    assert frames_batch["peak_bytes"] == pytest.approx(1 / 16)
    assert frames_batch["g_peak_bytes"] == pytest.approx(1 / 8)
    assert frames_batch["d_peak_bytes"] == pytest.approx(1 / 24)


def test_ratios_skip_oom_and_missing():
    records = synthetic() + [record("dense", 512, oom=True), record("sparse-frames", 512)]
    no_g = record("sparse-frames-batch", 256)
    no_g["g_peak_bytes"] = None
    records = [r for r in records if not (r["mode"] == "sparse-frames-batch" and r["resolution"] == 256)] + [no_g]
    entry = rm.ratios(records)[("cuda", 1.0, 4)]
    assert entry["sparse-frames/dense"]["resolution"] == 256, "dense is OOM at 512: compare at 256"
    assert entry["sparse-frames/dense"]["peak_bytes"] == pytest.approx(0.5)
    assert "g_peak_bytes" not in entry["sparse-frames-batch/dense"]
    assert entry["sparse-frames-batch/dense"]["d_peak_bytes"] == pytest.approx(1 / 24)
    # OOM points do not disturb the fitted exponents either.
    assert abs(rm.mode_exponents(records)["dense"] - 2) < 1e-6
    assert abs(rm.mode_exponents(records)["sparse-frames"] - 1) < 1e-6
    assert rm.ratios([record("dense", 64), record("sparse-frames", 128)]) == {}


# -------------------------------------------------------------------------------------- markdown


def test_markdown_tables_exponents_ratios_and_targets():
    records = synthetic() + [record("dense", 512, oom=True)]
    text = rm.markdown_report(records, command="python benchmarks/tganv2_memory.py --out r.json", title="Mem")
    assert text.startswith("## Mem\n")
    assert "### device `cuda`, width_scale 1, batch 4" in text
    assert "| mode | resolution | frames | batch | G peak MiB | D peak MiB | total peak MiB | step time s |" in text
    assert "| dense | 256 | 16 | 4 | 256.0 | 768.0 | 1,024.0 | 0.256 |" in text
    assert "| sparse-frames | 64 | 16 | 4 | 32.0 | 96.0 | 128.0 | 0.064 |" in text
    assert "| sparse-frames-batch | 128 | 16 | 4 | 16.0 | 16.0 | 32.0 | 0.128 |" in text
    assert "| dense | 512 | 16 | 4 | OOM | OOM | OOM | OOM |" in text
    assert "| dense | 3 | 2.00 | 2.00 | 2.00 |" in text, "the OOM point is not counted or fitted"
    assert "| sparse-frames | 3 | 1.00 | 1.00 | 1.00 |" in text
    assert "| generator | 2.00x less | 8.00x less | 3.65x less | 7.07x less |" in text
    assert "| discriminator | 2.00x less | 24.00x less | 5.23x less | 20.35x less |" in text
    assert "| total (G+D) | 2.00x less | 16.00x less |" in text
    assert "| `sparse-frames / dense <= 0.25` | 0.5000 (at 256) | FAIL (at 256, not the largest resolution 512" in text
    assert "| `sparse-frames-batch / dense <= 0.10` | 0.0625 (at 256) | PASS (at 256, not the largest" in text
    plain = rm.markdown_report(synthetic())
    assert "| `sparse-frames / dense <= 0.25` | 0.5000 (at 256) | FAIL |" in plain
    assert "| `sparse-frames-batch / dense <= 0.10` | 0.0625 (at 256) | PASS |" in plain
    assert "Note:" not in plain
    assert "compared at resolution 256, the largest measured for both modes (at 512: dense OOM, sparse-frames not measured)" in text
    assert "```sh\npython benchmarks/tganv2_memory.py --out r.json\n```" in text
    assert "measured" in text and "not estimated" in text
    assert "7.716 GB" in text and "15.689 GB" in text


def test_markdown_image_link_and_missing_ratio():
    text = rm.markdown_report([record("dense", 64), record("dense", 128)], image="images/mem.png", title="T")
    assert "![T](images/mem.png)" in text
    assert "```" not in text, "no command, no code block"
    assert "No sparse/dense ratio" in text and "PASS" not in text and "FAIL" not in text
    partial = rm.markdown_report(synthetic()[:6])  # dense and sparse-frames only
    assert "| `sparse-frames-batch / dense <= 0.10` | not measured | n/a |" in partial


def test_write_markdown_replaces_only_between_markers(tmp_path):
    path = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\nIntro text.\n\n"
    after = "\n\n## Other benchmark\n\nKeep me.\n"
    path.write_text(f"{before}{rm.START_MARKER}\nold report\n{rm.END_MARKER}{after}")
    rm.write_markdown(path, "## New report\n\nbody")
    assert path.read_text() == f"{before}{rm.START_MARKER}\n## New report\n\nbody\n{rm.END_MARKER}{after}"
    rm.write_markdown(path, "second")
    assert path.read_text() == f"{before}{rm.START_MARKER}\nsecond\n{rm.END_MARKER}{after}"


def test_write_markdown_creates_or_overwrites_without_markers(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    rm.write_markdown(path, "report")
    assert path.read_text() == f"# Benchmarks\n\n{rm.START_MARKER}\nreport\n{rm.END_MARKER}\n"
    path.write_text("stale, no markers\n")
    rm.write_markdown(path, "report 2")
    assert path.read_text() == f"# Benchmarks\n\n{rm.START_MARKER}\nreport 2\n{rm.END_MARKER}\n"
    path.write_text(f"keep\n{rm.START_MARKER}\nhalf\n")
    with pytest.raises(ValueError, match="only one"):
        rm.write_markdown(path, "x")
    assert path.read_text() == f"keep\n{rm.START_MARKER}\nhalf\n", "a half-marked file is left alone"


# ----------------------------------------------------------------------------------------- input


def test_load_records_validates(tmp_path):
    records = synthetic()
    loaded = rm.load_records(write_json(tmp_path, records))
    assert len(loaded) == 9 and all(r["oom"] is False for r in loaded)
    del records[4]["peak_bytes"]
    with pytest.raises(ValueError, match=r"record 4: missing required key 'peak_bytes'"):
        rm.load_records(write_json(tmp_path, records))
    bad = synthetic()
    bad[2]["resolution"] = "64"
    with pytest.raises(ValueError, match=r"record 2: 'resolution' must be a positive integer"):
        rm.load_records(write_json(tmp_path, bad))
    with pytest.raises(ValueError, match="expected a JSON list"):
        rm.load_records(write_json(tmp_path, {"records": []}))
    oom = rm.load_records(write_json(tmp_path, [record("dense", 512, oom=True)]))
    assert oom[0]["oom"] is True and oom[0]["peak_bytes"] is None


# --------------------------------------------------------------------------------------- plot, CLI


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "images" / "mem.png"
    rm.plot(synthetic() + [record("dense", 512, oom=True)], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    two_groups = tmp_path / "two.png"
    rm.plot(synthetic() + synthetic(device="cpu", width_scale=0.5), two_groups, title="two groups")
    assert two_groups.stat().st_size > 1000


def test_cli_writes_markdown_between_markers(tmp_path, capsys):
    results = write_json(tmp_path, synthetic())
    md = tmp_path / "docs" / "benchmarks.md"
    md.parent.mkdir()
    md.write_text(f"# Benchmarks\n\nOther.\n\n{rm.START_MARKER}\nold\n{rm.END_MARKER}\n\nTail.\n")
    assert rm.main([str(results), "--markdown", str(md), "--command", "make bench", "--title", "TT"]) == 0
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nOther.\n\n") and text.endswith(f"{rm.END_MARKER}\n\nTail.\n")
    assert "## TT" in text and "```sh\nmake bench\n```" in text and "old" not in text
    assert rm.main([str(results)]) == 0
    assert "| dense | 64 |" in capsys.readouterr().out, "without --markdown the report goes to stdout"


def test_cli_plot_link_is_relative_to_the_markdown(tmp_path):
    pytest.importorskip("matplotlib")
    results = write_json(tmp_path, synthetic())
    md, png = tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "images" / "tganv2_memory.png"
    assert rm.main([str(results), "--markdown", str(md), "--plot", str(png)]) == 0
    assert png.is_file()
    assert "](images/tganv2_memory.png)" in md.read_text()


def test_cli_errors_and_help(tmp_path):
    bad = synthetic()
    del bad[0]["device"]
    with pytest.raises(SystemExit) as exit_info:
        rm.main([str(write_json(tmp_path, bad))])
    assert exit_info.value.code == 2
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--markdown", "--plot", "--title", "--command"):
        assert flag in out
