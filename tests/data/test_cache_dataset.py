"""VideoCache: clips from a prepared cache; crop/flip/start rules, the (seed, draw) contract, errors."""

import json
import pickle
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from videodata import numbered_frames, write_avi

from kinema.errors import ConfigError
from kinema.registry import load_config
from kinema.data import Batch, CacheError, Draws, VideoCache, build_dataset
from kinema.data.prepare import prepare
from kinema.video import from_uint8

H, W = 24, 40  # cache frames; crops are 24x24, so x in [4, 12] with the default margin


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for k, n in enumerate([20, 30, 12]):
        write_avi(src / ("a" if k < 2 else "b") / f"v{k}.avi", numbered_frames(n, H, W, seed=k))
    out = src.parent / (src.name + "_cache")
    prepare(src, out, (H, W), workers=1, min_frames=4, progress=False)
    return out


def arrays(cache):
    index = json.loads((cache / "index.json").read_text())
    return [np.load(cache / v["file"]) for v in index["videos"]]


def test_eval_clips_are_first_frames_centre_crop(cache):
    ds = VideoCache(cache, frames=8, height=H, width=24, frame_stride=1, train=False)
    assert len(ds) == 3
    for i, array in enumerate(arrays(cache)):
        x = ds[i]
        assert x.shape == (3, 8, H, 24) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
        assert torch.equal(x, from_uint8(array[:8, :, 8:32]))  # (40 - 24) // 2 = 8
        assert torch.equal(ds.clip(i, draw=99), x)  # evaluation ignores the draw
    strided = VideoCache(cache, frames=4, height=H, width=24, frame_stride=3, train=False)
    assert torch.equal(strided[0], from_uint8(arrays(cache)[0][0:10:3, :, 8:32]))


def test_train_clips_follow_the_rules(cache):
    ds = VideoCache(cache, frames=4, height=H, width=24, frame_stride=2, flip=True, seed=3)
    data = arrays(cache)
    assert ds.crop_range() == (4, 12)
    seen_left, seen_flip = set(), set()
    for draw in range(60):
        i = draw % 3
        x = ds.clip(i, draw=draw)
        rng = np.random.default_rng([3, draw])  # the documented recipe, reproduced
        start = int(rng.integers(0, len(data[i]) - 7 + 1))
        left = int(rng.integers(4, 13))
        flip = bool(rng.random() < 0.5)
        raw = data[i][start : start + 7 : 2, :, left : left + 24]
        expected = from_uint8(np.ascontiguousarray(raw[:, :, ::-1] if flip else raw))
        assert torch.equal(x, expected)
        seen_left.add(left), seen_flip.add(flip)
    assert seen_left == set(range(4, 13)) and seen_flip == {True, False}


def test_crop_margin_shrinks_when_frame_is_narrow(cache):
    assert VideoCache(cache, 4, H, 24, crop_margin=0).crop_range() == (0, 16)
    assert VideoCache(cache, 4, H, 24, crop_margin=8).crop_range() == (8, 8)
    assert VideoCache(cache, 4, H, 24, crop_margin=20).crop_range() == (8, 8)  # centred band
    assert VideoCache(cache, 4, H, 37, crop_margin=4).crop_range() == (1, 2)   # room 3: margin 1
    assert VideoCache(cache, 4, H, 40, crop_margin=4).crop_range() == (0, 0)   # no room: no margin


def test_draw_contract_across_calls_instances_and_workers(cache):
    ds = VideoCache(cache, frames=4, height=H, width=24, flip=True, seed=0)
    again = VideoCache(cache, frames=4, height=H, width=24, flip=True, seed=0)
    for draw in (0, 5, 1234567):
        assert torch.equal(ds.clip(1, draw=draw), ds.clip(1, draw=draw))
        assert torch.equal(ds.clip(1, draw=draw), again.clip(1, draw=draw))
    assert not all(torch.equal(ds.clip(0, draw=0), ds.clip(0, draw=d)) for d in range(1, 6))
    assert not torch.equal(ds.clip(1, draw=0), VideoCache(cache, 4, H, 24, flip=True, seed=1).clip(1, draw=0))
    assert torch.equal(ds[2], ds.clip(2, draw=2)) and torch.equal(ds[-1], ds[2])
    fresh = VideoCache(cache, 4, H, 24)
    assert not fresh._open  # opened lazily: nothing is mapped until a clip is read
    fresh.clip(0, draw=0)
    assert list(fresh._open) == [0]
    fresh._pid = -1  # as seen from a forked worker: the parent's maps are dropped, its own opened
    fresh.clip(1, draw=0)
    assert list(fresh._open) == [1]
    draws = Draws(ds)
    direct = torch.stack([draws[d] for d in range(12)])
    for workers in (0, 2):
        loader = DataLoader(draws, batch_size=4, num_workers=workers, sampler=list(range(12)))
        assert torch.equal(torch.cat(list(loader)), direct)
    state = pickle.loads(pickle.dumps(ds))  # memory maps never travel between processes
    assert not state._open and torch.equal(state.clip(1, draw=7), ds.clip(1, draw=7))


def test_labels(cache):
    ds = VideoCache(cache, frames=4, height=H, width=24, return_label=True)
    assert ds.class_names == ["a", "b"] and [ds.label(i) for i in range(3)] == [0, 0, 1]
    item = ds.clip(2, draw=0)
    assert item.clips.shape == (3, 4, H, 24) and int(item.labels) == 1
    batch = next(iter(DataLoader(Draws(ds), batch_size=3, collate_fn=Batch.collate)))
    assert isinstance(batch, Batch) and batch.labels.tolist() == [0, 0, 1] and batch.clips.shape[0] == 3


def test_too_short_videos_are_skipped_and_counted(cache):
    with pytest.warns(UserWarning, match="skipping 1 of 3 videos shorter than 15 frames"):
        ds = VideoCache(cache, frames=8, height=H, width=24, frame_stride=2)
    assert len(ds) == 2 and list(ds.skipped) == ["b/v2.avi"] and "too short: 12 frames" in ds.skipped["b/v2.avi"]
    with pytest.raises(CacheError, match="all 3 are shorter than the 31 frames"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        VideoCache(cache, frames=16, height=H, width=24, frame_stride=2)


def test_resolution_mismatch_names_both_values(cache):
    with pytest.raises(CacheError, match=r"holds 24x40 frames .* asks for 32x32: the cache height 24 must equal "
                                         r"the model resolution 32.*--resolution 32x43"):
        VideoCache(cache, frames=4, height=32, width=32)
    with pytest.raises(CacheError, match="width must be >= 48"):
        VideoCache(cache, frames=4, height=24, width=48)


def test_bad_caches(cache, tmp_path):
    with pytest.raises(CacheError, match="is not a kinema cache: meta.json is missing.*kinema prepare"):
        VideoCache(tmp_path, frames=4, height=H, width=24)
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((cache / "meta.json").read_text())
    (broken / "meta.json").write_text(json.dumps(meta | {"complete": False}))
    with pytest.raises(CacheError, match="incomplete.*Rerun `kinema prepare`.*" + meta["command"].split()[0]):
        VideoCache(broken, frames=4, height=H, width=24)
    (broken / "meta.json").write_text(json.dumps(meta))
    (broken / "index.json").write_text((cache / "index.json").read_text())
    with pytest.raises(CacheError, match="damaged: 3 files listed in index.json are missing.*rerun `kinema prepare"):
        VideoCache(broken, frames=4, height=H, width=24)
    with pytest.raises(ValueError, match="crop_margin must be >= 0"):
        VideoCache(cache, 4, H, 24, crop_margin=-1)


def test_config_and_build_dataset(cache):
    cfg = load_config(None, model={"name": "tganv2"}, data={"source": "cache", "path": str(cache), "crop_margin": 2})
    assert cfg.data.source == "cache" and cfg.data.crop_margin == 2
    ds = build_dataset(cfg.data, frames=4, height=H, width=24, seed=0, train=True)
    assert isinstance(ds, VideoCache) and ds.crop_range() == (2, 14) and ds.flip
    ev = build_dataset(cfg.data, frames=4, height=H, width=24, seed=0, train=False)
    assert not ev.train
    with pytest.raises(ConfigError, match='data.source = "cache" needs the folder written by `kinema prepare'):
        load_config(None, model={"name": "tganv2"}, data={"source": "cache"})
    with pytest.raises(ConfigError, match="data.crop_margin must be >= 0"):
        load_config(None, model={"name": "tganv2"}, data={"crop_margin": -1})
    with pytest.raises(ValueError, match="needs data.path"):
        build_dataset(SimpleNamespace(source="cache", path=""), frames=4, height=H, width=24, seed=0)


def test_uint8_clips_convert_to_the_float_clips(cache):
    """The trainer reads uint8 clips (a quarter of the bytes) and converts them on its device."""
    floats = VideoCache(cache, 4, H, 24, train=True, flip=True, seed=3)
    bytes_ = VideoCache(cache, 4, H, 24, train=True, flip=True, seed=3, uint8=True)
    for draw in range(6):
        raw = bytes_.clip(draw % len(bytes_), draw=draw)
        assert raw.dtype == torch.uint8 and raw.shape == (3, 4, H, 24)
        torch.testing.assert_close(raw.float() / 127.5 - 1, floats.clip(draw % len(floats), draw=draw))


def test_trainer_trains_from_a_cache(cache, tmp_path):
    from tiny import tiny_run_config

    from kinema.training import Trainer

    cfg = tiny_run_config(steps=2)
    cfg.data.source, cfg.data.path = "cache", str(cache)
    cfg.model.resolution, cfg.model.base_size = H, 3  # 3 * 2**3 = 24: the cache height
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    batch = next(trainer._batches())
    assert batch.clips.dtype == torch.uint8
    real = trainer._to_device(batch.clips)
    assert real.dtype == torch.float32 and -1 <= real.min() and real.max() <= 1
    trainer.fit()
