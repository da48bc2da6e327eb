"""Turn the JSON written by ``benchmarks/tganv2_memory.py`` into a markdown report and a log-log plot.

Usage::

    python benchmarks/report_memory.py results.json --markdown docs/benchmarks.md \\
        --plot docs/images/tganv2_memory.png [--title TEXT] [--command "the command that produced the JSON"]

The input is a JSON list of records, one per measurement::

    {"mode": "dense" | "sparse-frames" | "sparse-frames-batch", "resolution": int, "frames": int,
     "batch": int, "device": str, "g_peak_bytes": int | null, "d_peak_bytes": int | null,
     "peak_bytes": int | null, "step_seconds": float | null, "width_scale": float,
     "oom": bool (optional, default false), "levels": int (optional)}

Unknown keys are ignored. Records are grouped by ``(device, width_scale, batch)``; each group gets a
table, the growth exponent of peak memory against resolution per mode, and the sparse/dense ratios at
the largest resolution measured for both modes, next to the TGANv2 paper's figures.

When ``--markdown FILE`` already holds the markers ``<!-- tganv2-memory:start -->`` and
``<!-- tganv2-memory:end -->`` only the text between them is replaced, so other benchmarks can share
the file; otherwise the file is (over)written with a ``# Benchmarks`` header and the marked report.

Only numpy is needed, except for ``--plot`` (matplotlib: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("dense", "sparse-frames", "sparse-frames-batch")
SPARSE_MODES = ("sparse-frames", "sparse-frames-batch")
REQUIRED_KEYS = (
    "mode",
    "resolution",
    "frames",
    "batch",
    "device",
    "g_peak_bytes",
    "d_peak_bytes",
    "peak_bytes",
    "step_seconds",
    "width_scale",
)
MEASUREMENT_KEYS = ("g_peak_bytes", "d_peak_bytes", "peak_bytes", "step_seconds")
COMPONENTS = ("peak_bytes", "g_peak_bytes", "d_peak_bytes")  # total, generator, discriminator

START_MARKER = "<!-- tganv2-memory:start -->"
END_MARKER = "<!-- tganv2-memory:end -->"
DEFAULT_TITLE = "TGANv2 training memory: dense vs sparse"

# Issue targets on total peak memory at the largest resolution: ratio sparse/dense must be <= this.
TARGETS = {"sparse-frames/dense": 0.25, "sparse-frames-batch/dense": 0.10}

# TGANv2 paper ("Train Sparsely, Generate Densely"), figure/memory.tsv: memory of the naive (dense)
# model vs the sparsely trained one, as "x less". Frame+batch ratios follow from the GB values below;
# the frame-only ratios are the paper's stated factors.
PAPER_GB = {"g_dense": 7.716, "g_sparse_frames_batch": 1.091, "d_dense": 15.689, "d_sparse_frames_batch": 0.771}
PAPER_LESS = {
    ("g_peak_bytes", "sparse-frames"): 3.65,
    ("g_peak_bytes", "sparse-frames-batch"): 7.07,
    ("d_peak_bytes", "sparse-frames"): 5.23,
    ("d_peak_bytes", "sparse-frames-batch"): 20.35,
}

MIB = 2**20

Group = tuple  # (device: str, width_scale: float, batch: int)


# --------------------------------------------------------------------------------------------- input


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def load_records(path: str | os.PathLike) -> list[dict]:
    """Read and validate the benchmark JSON (a list of record objects).

    Raises ``ValueError`` naming the record index and the offending key when a required key is missing
    or has the wrong type. ``oom`` defaults to ``False``; unknown keys are kept but ignored.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    records = []
    for index, record in enumerate(data):
        where = f"{path}: record {index}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing:
            raise ValueError(f"{where}: missing required key {missing[0]!r}" + (
                f" (also missing: {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""))
        if not isinstance(record["mode"], str):
            raise ValueError(f"{where}: 'mode' must be a string, got {record['mode']!r}")
        if not isinstance(record["device"], str):
            raise ValueError(f"{where}: 'device' must be a string, got {record['device']!r}")
        for key in ("resolution", "frames", "batch"):
            if not _is_int(record[key]) or record[key] <= 0:
                raise ValueError(f"{where}: {key!r} must be a positive integer, got {record[key]!r}")
        if not _is_number(record["width_scale"]):
            raise ValueError(f"{where}: 'width_scale' must be a number, got {record['width_scale']!r}")
        for key in MEASUREMENT_KEYS:
            if record[key] is not None and not _is_number(record[key]):
                raise ValueError(f"{where}: {key!r} must be a number or null, got {record[key]!r}")
        oom = record.get("oom", False)
        if not isinstance(oom, bool):
            raise ValueError(f"{where}: 'oom' must be true or false, got {oom!r}")
        records.append({**record, "oom": oom})
    return records


def group_key(record: dict) -> Group:
    """The (device, width_scale, batch) a record is reported under."""
    return (record["device"], float(record["width_scale"]), int(record["batch"]))


def group_records(records: Iterable[dict]) -> dict[Group, list[dict]]:
    """Records by group, groups in first-seen order, records sorted by mode, resolution, frames."""
    groups: dict[Group, list[dict]] = defaultdict(list)
    for record in records:
        groups[group_key(record)].append(record)
    return {key: sorted(rows, key=_row_order) for key, rows in groups.items()}


def _mode_rank(mode: str) -> tuple[int, str]:
    return (MODES.index(mode), "") if mode in MODES else (len(MODES), mode)


def _row_order(record: dict) -> tuple:
    return (_mode_rank(record["mode"]), record["resolution"], record["frames"])


def _valid(record: dict, key: str) -> float | None:
    """The measurement ``key`` of a record, or None when OOM, missing or not positive."""
    if record.get("oom", False):
        return None
    value = record.get(key)
    if value is None or not _is_number(value) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def _modes(records: Iterable[dict]) -> list[str]:
    return sorted({r["mode"] for r in records}, key=_mode_rank)


# -------------------------------------------------------------------------------------------- maths


def growth_exponent(resolutions: Sequence[float], values: Sequence[float | None]) -> float:
    """Least-squares slope of log(value) against log(resolution) (``numpy.polyfit``, degree 1).

    Points whose value (or resolution) is missing, not finite or not positive are dropped; with fewer
    than 2 points left, or all at one resolution, the slope is undefined and ``nan`` is returned.
    """
    points = [
        (float(r), float(v))
        for r, v in zip(resolutions, values)
        if r is not None and v is not None and math.isfinite(r) and math.isfinite(v) and r > 0 and v > 0
    ]
    if len(points) < 2 or len({r for r, _ in points}) < 2:
        return float("nan")
    x = np.log([r for r, _ in points])
    y = np.log([v for _, v in points])
    slope, _intercept = np.polyfit(x, y, 1)
    return float(slope)


def mode_exponents(records: Iterable[dict], key: str = "peak_bytes") -> dict[str, float]:
    """Growth exponent of measurement ``key`` per mode (OOM and missing points skipped)."""
    records = list(records)
    out = {}
    for mode in _modes(records):
        rows = [r for r in records if r["mode"] == mode]
        out[mode] = growth_exponent([r["resolution"] for r in rows], [_valid(r, key) for r in rows])
    return out


def _by_resolution(records: Iterable[dict], mode: str) -> dict[int, dict]:
    """Non-OOM records of ``mode`` with a total peak, by resolution (the last record wins on repeats)."""
    out = {}
    for record in records:
        if record["mode"] == mode and _valid(record, "peak_bytes") is not None:
            out[record["resolution"]] = record
    return out


def ratios(records: Iterable[dict]) -> dict[Group, dict[str, dict]]:
    """Sparse/dense memory ratios per (device, width_scale, batch) group, at the largest resolution.

    For each group and each sparse mode the resolution used is the largest one at which both that mode
    and ``dense`` have a measured, non-OOM total ``peak_bytes`` (so an OOM or missing record is skipped,
    and the ratio falls back to the next resolution measured for both). Returns::

        {(device, width_scale, batch): {
            "sparse-frames/dense":       {"resolution": int, "peak_bytes": r, "g_peak_bytes": r, "d_peak_bytes": r},
            "sparse-frames-batch/dense": {...},
        }}

    where each ``r`` is ``sparse / dense`` (smaller is better). A component (g/d) whose bytes are
    missing on either side is left out; a ratio with no common resolution is left out, and so is a
    group with no ratio at all.
    """
    out: dict[Group, dict[str, dict]] = {}
    for key, rows in group_records(records).items():
        dense = _by_resolution(rows, "dense")
        entry = {}
        for mode in SPARSE_MODES:
            sparse = _by_resolution(rows, mode)
            common = sorted(set(dense) & set(sparse))
            if not common:
                continue
            resolution = common[-1]
            ratio: dict[str, Any] = {"resolution": resolution}
            for component in COMPONENTS:
                num, den = _valid(sparse[resolution], component), _valid(dense[resolution], component)
                if num is not None and den is not None:
                    ratio[component] = num / den
            entry[f"{mode}/dense"] = ratio
        if entry:
            out[key] = entry
    return out


# ----------------------------------------------------------------------------------------- markdown


def _mib(record: dict, key: str) -> str:
    if record.get("oom", False):
        return "OOM"
    value = record.get(key)
    return "—" if value is None else f"{value / MIB:,.1f}"


def _seconds(record: dict) -> str:
    if record.get("oom", False):
        return "OOM"
    value = record.get("step_seconds")
    return "—" if value is None else f"{value:.3f}"


def _slope(value: float) -> str:
    return "n/a (< 2 points)" if math.isnan(value) else f"{value:.2f}"


def _less(ratio: float | None) -> str:
    """A sparse/dense ratio as the paper writes it: dense/sparse, "N.NNx less"."""
    if ratio is None:
        return "—"
    return f"{1 / ratio:.2f}x less" if ratio > 0 else "—"


def _group_title(key: Group) -> str:
    device, width_scale, batch = key
    return f"device `{device}`, width_scale {width_scale:g}, batch {batch}"


def _table(rows: Sequence[dict]) -> list[str]:
    lines = [
        "| mode | resolution | frames | batch | G peak MiB | D peak MiB | total peak MiB | step time s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['resolution']} | {r['frames']} | {r['batch']} | {_mib(r, 'g_peak_bytes')} "
            f"| {_mib(r, 'd_peak_bytes')} | {_mib(r, 'peak_bytes')} | {_seconds(r)} |"
        )
    return lines


def _exponent_table(rows: Sequence[dict]) -> list[str]:
    total, g, d = (mode_exponents(rows, key) for key in COMPONENTS)
    lines = [
        "Growth exponent *k* of peak memory ∝ resolution^*k* (least-squares fit on log-log, OOM skipped):",
        "",
        "| mode | points | total peak | G peak | D peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in total:
        points = sum(1 for r in rows if r["mode"] == mode and _valid(r, "peak_bytes") is not None)
        lines.append(f"| {mode} | {points} | {_slope(total[mode])} | {_slope(g[mode])} | {_slope(d[mode])} |")
    return lines


def _status(rows: Sequence[dict], mode: str, resolution: int) -> str:
    """How ``mode`` fared at ``resolution``: "OOM", "not measured" or "measured"."""
    matches = [r for r in rows if r["mode"] == mode and r["resolution"] == resolution]
    if any(_valid(r, "peak_bytes") is not None for r in matches):
        return "measured"
    return "OOM" if any(r.get("oom", False) for r in matches) else "not measured"


def _ratio_section(rows: Sequence[dict], entry: dict[str, dict]) -> list[str]:
    largest = max(r["resolution"] for r in rows)
    if not entry:
        return [f"No sparse/dense ratio: no resolution has both a dense and a sparse measurement (largest: {largest})."]
    lines = []
    for name, ratio in entry.items():
        if ratio["resolution"] != largest:
            mode = name.split("/")[0]
            status = ", ".join(f"{m} {_status(rows, m, largest)}" for m in ("dense", mode))
            lines.append(
                f"- `{name}` is compared at resolution {ratio['resolution']}, the largest measured for both "
                f"modes (at {largest}: {status})."
            )
    if lines:
        lines = ["Note:", ""] + lines + [""]
    used = sorted({entry[n]["resolution"] for n in entry})
    where = (
        f"resolution {used[0]}"
        if len(used) == 1
        else ", ".join(f"`{n}` at resolution {entry[n]['resolution']}" for n in entry)
    )
    lines += [
        f"Memory saved by sparse training, dense / sparse ({where}), next to the paper's figures:",
        "",
        "| | kinema frame only | kinema frame+batch | paper frame only | paper frame+batch |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {"g_peak_bytes": "generator", "d_peak_bytes": "discriminator", "peak_bytes": "total (G+D)"}
    paper_total = (PAPER_GB["g_dense"] + PAPER_GB["d_dense"]) / (
        PAPER_GB["g_sparse_frames_batch"] + PAPER_GB["d_sparse_frames_batch"]
    )
    for component in ("g_peak_bytes", "d_peak_bytes", "peak_bytes"):
        ours = [_less(entry.get(f"{m}/dense", {}).get(component)) for m in SPARSE_MODES]
        if component == "peak_bytes":
            paper = ["—", f"{paper_total:.2f}x less ¹"]
        else:
            paper = [f"{PAPER_LESS[(component, m)]:.2f}x less" for m in SPARSE_MODES]
        lines.append(f"| {labels[component]} | {ours[0]} | {ours[1]} | {paper[0]} | {paper[1]} |")
    lines += [
        "",
        (
            f"¹ Derived from the paper's figure/memory.tsv: G naive {PAPER_GB['g_dense']} GB vs "
            f"{PAPER_GB['g_sparse_frames_batch']} GB, D naive {PAPER_GB['d_dense']} GB vs "
            f"{PAPER_GB['d_sparse_frames_batch']} GB. The paper's figures are quoted from its own setup, not "
            "re-measured here."
        ),
        "",
        "Targets (total peak memory, sparse / dense, at the largest resolution):",
        "",
        "| target | measured | result |",
        "|---|---:|---|",
    ]
    for name, limit in TARGETS.items():
        value = entry.get(name, {}).get("peak_bytes")
        if value is None:
            measured, result = "not measured", "n/a"
        else:
            measured = f"{value:.4f} (at {entry[name]['resolution']})"
            result = "PASS" if value <= limit else "FAIL"
            if entry[name]["resolution"] != largest:
                result += f" (at {entry[name]['resolution']}, not the largest resolution {largest}; see the note)"
        lines.append(f"| `{name.replace('/', ' / ')} <= {limit:.2f}` | {measured} | {result} |")
    return lines


def markdown_report(
    records: Iterable[dict],
    command: str | None = None,
    title: str = DEFAULT_TITLE,
    image: str | None = None,
) -> str:
    """The report as markdown (no trailing newline); ``image`` is a link target relative to the page."""
    records = list(records)
    lines = [f"## {title}", ""]
    lines += [
        (
            "Peak memory of one TGANv2 training step (generator and discriminator), dense training vs sparse "
            "training over frames (`sparse-frames`) and over frames and batch (`sparse-frames-batch`). "
            "All kinema figures here are measured by `benchmarks/tganv2_memory.py`, not estimated."
        ),
        "",
    ]
    if command:
        lines += ["Produced with:", "", "```sh", command, "```", ""]
    if image:
        lines += [f"![{title}]({image})", ""]
    if not records:
        lines.append("No records.")
        return "\n".join(lines)
    all_ratios = ratios(records)
    for key, rows in group_records(records).items():
        lines += [f"### {_group_title(key)}", ""]
        lines += _table(rows) + [""]
        lines += _exponent_table(rows) + [""]
        lines += _ratio_section(rows, all_ratios.get(key, {})) + [""]
    return "\n".join(lines).rstrip()


def write_markdown(path: str | os.PathLike, report: str) -> None:
    """Put ``report`` between the tganv2-memory markers of ``path``, keeping the rest of the file.

    Without both markers the file is (over)written as ``# Benchmarks`` plus the marked report. A file
    with only one of the markers, or with them out of order, is left alone and ``ValueError`` raised.
    """
    path = Path(path)
    block = f"{START_MARKER}\n{report.strip()}\n{END_MARKER}"
    text = path.read_text() if path.exists() else ""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start >= 0 and end > start:
        new = text[:start] + block + text[end + len(END_MARKER):]
    elif start >= 0 or end >= 0:
        raise ValueError(
            f"{path}: has only one of {START_MARKER} / {END_MARKER}, or they are out of order; fix it by hand"
        )
    else:
        new = f"# Benchmarks\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


# --------------------------------------------------------------------------------------------- plot


def plot(records: Iterable[dict], path: str | os.PathLike, title: str = DEFAULT_TITLE) -> None:
    """Log-log plot of total peak MiB against resolution, one line per mode (and group), to a PNG.

    Colour is the mode, line style the (device, width_scale, batch) group; each label carries the
    fitted growth exponent. OOM and missing points are left out. Needs matplotlib.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    groups = group_records(records)
    colors = {"dense": "tab:red", "sparse-frames": "tab:blue", "sparse-frames-batch": "tab:green"}
    extra = iter(["tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"])
    styles = ["-", "--", ":", "-."]
    markers = {"dense": "o", "sparse-frames": "s", "sparse-frames-batch": "^"}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    resolutions: set[int] = set()
    for index, (key, rows) in enumerate(groups.items()):
        for mode in _modes(rows):
            points = sorted(
                (r["resolution"], _valid(r, "peak_bytes")) for r in rows if r["mode"] == mode
            )
            points = [(x, y) for x, y in points if y is not None]
            if not points:
                continue
            if mode not in colors:
                colors[mode] = next(extra, "black")
            slope = growth_exponent([x for x, _ in points], [y for _, y in points])
            label = mode if len(groups) == 1 else f"{mode}, {key[0]} w={key[1]:g} b={key[2]}"
            label += f" (slope {slope:.2f})" if not math.isnan(slope) else ""
            ax.plot(
                [x for x, _ in points],
                [y / MIB for _, y in points],
                linestyle=styles[index % len(styles)],
                marker=markers.get(mode, "D"),
                color=colors[mode],
                label=label,
            )
            resolutions.update(x for x, _ in points)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if resolutions:
        ax.set_xticks(sorted(resolutions))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("resolution (pixels per side)")
    ax.set_ylabel("total peak memory (MiB)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="report_memory.py",
        description="Markdown report and log-log plot of TGANv2 dense vs sparse training memory, from the "
        "JSON written by benchmarks/tganv2_memory.py.",
    )
    parser.add_argument("results", help="JSON file: a list of measurement records from benchmarks/tganv2_memory.py")
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        help="write the report into FILE, between the <!-- tganv2-memory:start/end --> markers if present "
        "(otherwise FILE is overwritten with a '# Benchmarks' header and the marked report); without this "
        "flag the report is printed to stdout",
    )
    parser.add_argument(
        "--plot", metavar="PNG", help="save a log-log plot of total peak memory vs resolution (needs matplotlib)"
    )
    parser.add_argument("--title", default=DEFAULT_TITLE, help=f"report and plot title (default: {DEFAULT_TITLE!r})")
    parser.add_argument(
        "--command", metavar="TEXT", help="the command that produced the JSON, shown in a code block in the report"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        records = load_records(args.results)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    if args.plot:
        try:
            plot(records, args.plot, title=args.title)
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'matplotlib>=3.7' (or -e '.[bench]')")
        print(f"wrote {args.plot}", file=sys.stderr)
    image = None
    if args.plot:
        base = Path(args.markdown).resolve().parent if args.markdown else Path.cwd()
        image = Path(os.path.relpath(Path(args.plot).resolve(), base)).as_posix()
    report = markdown_report(records, command=args.command, title=args.title, image=image)
    if args.markdown:
        try:
            write_markdown(args.markdown, report)
        except ValueError as error:
            parser.error(str(error))
        print(f"wrote {args.markdown}", file=sys.stderr)
    else:
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
