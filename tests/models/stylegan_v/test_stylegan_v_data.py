"""StyleGAN-V's training data and training state: 3 frames at random gaps from long folder/cache videos
(kinema.data.sparse_frames) with their times reaching the discriminator, ADA's adaptive p, and a bit-exact
resume between lazy R1 steps."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from videodata import numbered_frames, write_avi

import kinema.data.folder as folder_module
from kinema.config import DataConfig
from kinema.data import Batch, Draws, VideoCache, VideoFolder, build_dataset
from kinema.data.prepare import prepare
from kinema.data.sparse_frames import SparseFrames, build_sparse_dataset, gap_set, min_length, pick_frames
from kinema.errors import ConfigError
from kinema.models.stylegan_v import StyleGANV, StyleGANVConfig
from kinema.objectives.base import StepContext
from kinema.objectives.gan import GANConfig, GANObjective
from kinema.registry import load_config
from kinema.runs import list_checkpoints
from kinema.training import Trainer
from kinema.video import from_uint8, read_video

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 16, 24  # cache frames; 16x16 crops
LENGTHS = [300, 40, 9, 2]  # long, longer than the largest gap, shorter than it (clipped), too short (skipped)

TINY = dict(frames=8, resolution=16, z_dim=16, w_dim=16, channel_base=128, channel_max=16, motion_z_dim=16,
            motion_u_dim=16, motion_kernel=11, motion_z_distance=4, time_enc_dim=8, min_period_len=4,
            max_period_len=64, max_num_frames=64, concat_res=8, dt_embed_dim=8, mbstd_group_size=2)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    src = tmp_path_factory.mktemp("long")
    for k, n in enumerate(LENGTHS):
        write_avi(src / f"v{k}.avi", numbered_frames(n, H, W, seed=k))
    cache = src.parent / (src.name + "_cache")
    prepare(src, cache, (H, W), workers=1, min_frames=1, progress=False)
    return src, cache


def cache_arrays(cache):
    index = json.loads((cache / "index.json").read_text())
    return {v["source"]: np.load(cache / v["file"]) for v in index["videos"]}


def test_gap_set_is_clipped_to_the_video_and_picks_are_sorted_distinct_inside_the_gap():
    assert gap_set(3, 32, 1000) == [2, 4, 8, 16, 32]
    assert gap_set(3, 32, 9) == [2, 4, 8] and gap_set(3, 32, 3) == [2] and gap_set(3, 32, 2) == []
    assert min_length(3) == 3 and min_length(4) == 5 and min_length(2) == 2
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        p = pick_frames(rng, 3, 32, 100)
        gap = int(p[-1] - p[0])
        seen.add(gap)
        assert len(set(p.tolist())) == 3 and list(p) == sorted(p) and 0 <= p[0] and p[-1] < 100
        assert gap in (2, 4, 8, 16, 32) and p[0] < p[1] < p[-1]
    assert seen == {2, 4, 8, 16, 32}
    assert all(pick_frames(rng, 3, 32, 9)[-1] < 9 for _ in range(50))
    with pytest.raises(ValueError, match="cannot hold 3 frames"):
        pick_frames(rng, 3, 32, 2)


def test_cache_items_are_the_picked_frames_with_their_times_and_short_videos_are_handled(videos):
    _, cache = videos
    with pytest.warns(UserWarning) as record:
        ds = build_sparse_dataset(DataConfig(source="cache", path=str(cache), sparse_frames=3, sparse_max_gap=32,
                                             flip=True), height=H, width=16, seed=5)
    assert isinstance(ds, SparseFrames) and len(ds) == 3
    assert len(ds.skipped) == 1 and "too short: 2 frames" in next(iter(ds.skipped.values()))  # 2-frame video
    assert ds.clipped == 1 and any("gap set is clipped" in str(w.message) for w in record)  # the 9-frame video
    arrays = cache_arrays(cache)
    gaps = set()
    for draw in range(60):
        item = ds.clip(draw % 3, draw=draw)
        assert isinstance(item, Batch) and item.clips.shape == (3, 3, H, 16) and item.times.shape == (3,)
        video = arrays[ds.base.source(draw % 3)]
        t = item.times.numpy()
        assert t[0] == 0 and np.all(np.diff(t) > 0)
        gaps.add(int(t[-1]))
        # find the crop and start: the frames are exactly cache frames start + t at some crop, maybe flipped
        ok = False
        for start in range(len(video) - int(t[-1])):
            frames = video[start + t.astype(int)]
            for left in range(W - 16 + 1):
                crop = from_uint8(frames[:, :, left : left + 16])
                if torch.equal(crop, item.clips) or torch.equal(crop.flip(-1), item.clips):
                    ok = True
                    break
            if ok:
                break
        assert ok, draw
        if draw % 3 == 2:  # the 9-frame video: gaps clipped to 8
            assert t[-1] <= 8
    assert {16, 32} <= gaps
    # a pure function of (seed, draw): a fresh copy gives the same items, other draws differ
    with pytest.warns(UserWarning):
        ds2 = build_sparse_dataset(DataConfig(source="cache", path=str(cache), sparse_frames=3, flip=True), height=H,
                                   width=16, seed=5)
    draws, draws2 = Draws(ds), Draws(ds2)
    for d in (0, 7, 1234):
        a, b = draws[d], draws2[d]
        assert torch.equal(a.clips, b.clips) and torch.equal(a.times, b.times)
    assert any(not torch.equal(draws[d].times, draws[d + 3].times) for d in range(10))
    collated = Batch.collate([draws[d] for d in range(4)])
    assert collated.clips.shape == (4, 3, 3, H, 16) and collated.times.shape == (4, 3)


def test_evaluation_gets_whole_clips_and_uint8_items_match_float(videos):
    _, cache = videos
    cfg = DataConfig(source="cache", path=str(cache), sparse_frames=3)
    with pytest.warns(UserWarning):
        dense = build_dataset(cfg, frames=8, height=H, width=16, seed=0, train=False)
        raw = build_sparse_dataset(cfg, height=H, width=16, seed=0, uint8=True)
        flt = build_sparse_dataset(cfg, height=H, width=16, seed=0)
    assert isinstance(dense, VideoCache) and dense[0].shape == (3, 8, H, 16)
    a, b = raw.clip(1, draw=11), flt.clip(1, draw=11)
    assert a.clips.dtype == torch.uint8 and torch.equal(from_uint8(a.clips.permute(1, 2, 3, 0).numpy()), b.clips)


def test_folder_items_decode_only_up_to_the_last_picked_frame(videos, monkeypatch):
    src, _ = videos
    decoded = []
    original = folder_module._decode  # VideoFolder.read_frames decodes for SparseFrames

    def counting(path, stop):
        decoded.append(stop)
        yield from original(path, stop)

    monkeypatch.setattr(folder_module, "_decode", counting)
    with pytest.warns(UserWarning):
        ds = build_sparse_dataset(DataConfig(source="folder", path=str(src), sparse_frames=3, flip=False), height=H,
                                  width=W, seed=1)
    assert isinstance(ds.base, VideoFolder) and len(ds) == 3
    full = read_video(src / "v0.avi")
    for draw in (0, 3, 6):
        item = ds.clip(0, draw=draw)
        t = item.times.numpy().astype(int)
        stop = decoded[-1]
        first = stop - 1 - t[-1]  # the last picked frame is the last one decoded
        torch.testing.assert_close(item.clips, from_uint8(full[first + t]))
    assert len(decoded) == 3 and max(decoded) < 300  # never the whole 300-frame file


def test_sparse_frames_config_errors():
    with pytest.raises(ConfigError, match='needs data.source = "folder", "frames", "hdf5" or "cache"'):
        load_config("stylegan_v_tiny", data=dict(sparse_frames=3))
    with pytest.raises(ConfigError, match="sparse_max_gap >= sparse_frames - 1"):
        load_config("stylegan_v_tiny", data=dict(source="cache", path="x", sparse_frames=3, sparse_max_gap=1))


def test_the_objective_hands_the_batch_times_to_the_discriminator():
    torch.manual_seed(0)
    model = StyleGANV(StyleGANVConfig(**TINY, time_span=64))
    obj = GANObjective(model, GANConfig(gp_weight=0.01, gp_reduction="mean"))
    opts = {n: torch.optim.SGD(p, lr=0.0) for n, p in obj.parameter_groups().items()}
    clips = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    times = torch.tensor([[0.0, 5.0, 32.0], [0.0, 1.0, 2.0]])
    seen = []
    real_levels = model.real_levels

    @functools.wraps(real_levels)
    def spy(*args, **kwargs):
        out = real_levels(*args, **kwargs)
        seen.append(out[0][:, 3, :, 0, 0])
        return out

    model.real_levels = spy
    obj.train_step([Batch(clips, times=times)], StepContext.for_batch(opts, torch.Generator().manual_seed(0), 2))
    torch.testing.assert_close(seen[0], times)
    # fakes are drawn over time_span: gaps up to max_dist = 32, offsets over 64 frames
    assert model.config.total_gaps() == [2, 4, 8, 16, 32]
    with pytest.raises(ConfigError, match="increasing frame times"):
        model.real_levels(clips, times=torch.tensor([[0.0, 5.0, 80.0], [0.0, 1.0, 2.0]]))
    with pytest.raises(ConfigError, match="time_span"):
        model.real_levels(torch.rand(2, 3, 8, 16, 16))  # dense 8-frame clips cannot hold the fakes' 64-frame span
    with pytest.raises(ValueError, match="data.sparse_frames = model.frames_per_clip"):
        model.real_levels(torch.rand(2, 3, 4, 16, 16), times=torch.zeros(2, 4))


def test_ada_moves_p_by_the_sign_of_real_scores_every_interval_and_keeps_it_non_negative():
    model = StyleGANV(StyleGANVConfig(**TINY, augment_p=0.1, augment_target=0.6, augment_interval=2,
                                      augment_kimg=0.004))
    step = 8 * 2 / (0.004 * 1000)  # batch * interval / (kimg * 1000) = 4
    assert model.augment_p_now == pytest.approx(0.1)
    assert model.observe_real_scores(torch.ones(8), 0)["augment_p"] == pytest.approx(0.1 + step)  # 0 % 2 == 0
    model.observe_real_scores(torch.ones(8), 1)  # accumulates only
    assert model.augment_p_now == pytest.approx(0.1 + step)
    # mean sign over the window (1 and -1 x 8 each: 0) < 0.6: p goes down
    assert model.observe_real_scores(-torch.ones(8), 2)["augment_p"] == pytest.approx(0.1)
    model.observe_real_scores(-torch.ones(8), 3)
    assert model.observe_real_scores(-torch.ones(8), 4)["augment_p"] == 0.0  # clamped at 0
    assert "ada_p" in model.state_dict() and "ada_stats" in model.state_dict()
    fixed = StyleGANV(StyleGANVConfig(**TINY, augment_p=0.3))
    assert fixed.observe_real_scores(torch.ones(8), 0)["augment_p"] == pytest.approx(0.3)
    assert "ada_p" not in fixed.state_dict()  # checkpoints without ADA keep their keys


def test_greyscale_ada_augmentation_is_clip_consistent_and_frame_local():
    model = StyleGANV(StyleGANVConfig(**{**TINY, "channels": 1}, augment_target=0.6, augment_p=1.0))
    from kinema.nn.batch import BatchRows

    clip = torch.randn(4, 1, 3, 16, 16)
    rows = BatchRows.whole(4)
    out = model.augment(clip, rows, torch.Generator().manual_seed(0))
    bumped = clip.clone()
    bumped[:, :, 1] += 5
    out2 = model.augment(bumped, rows, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, 0], out2[:, :, 0]) and torch.equal(out[:, :, 2], out2[:, :, 2])
    same = clip[:, :, :1].expand(-1, -1, 3, -1, -1).contiguous()
    aug = model.augment(same, rows, torch.Generator().manual_seed(1))
    assert torch.equal(aug[:, :, 0], aug[:, :, 1]) and torch.equal(aug[:, :, 1], aug[:, :, 2])


def sgv_run_config(steps: int, **model):
    return load_config(
        None,
        model=dict(name="stylegan_v", **TINY, **model),
        objective=dict(name="gan", gp_weight=0.05, gp_reduction="mean", gp_every=3),
        data=dict(source="synthetic", num_clips=32),
        train=dict(steps=steps, batch_size=4, lr=0.002, betas=[0.0, 0.99], lr_schedule="constant", log_every=1,
                   sample_every=steps, checkpoint_every=4, num_samples=2, keep_checkpoints=0, ema_decay=0.9),
    )


def test_resume_between_lazy_r1_steps_is_bit_exact_with_ada(tmp_path):
    """8 steps straight vs 4 + resume to 8, R1 on steps 0, 3, 6 (the checkpoint at 4 sits between R1
    steps) and ADA moving p every 2 steps: the same weights, EMA weights and p."""
    model = dict(augment_p=0.2, augment_target=0.6, augment_interval=2, augment_kimg=0.05)
    straight = Trainer(sgv_run_config(8, **model), tmp_path / "a", device="cpu", progress=False).fit()
    Trainer(sgv_run_config(4, **model), tmp_path / "b", device="cpu", progress=False).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_0000004"]
    resumed = Trainer(sgv_run_config(8, **model), tmp_path / "b", device="cpu", resume=True, progress=False)
    assert resumed.step == 4
    end = resumed.fit()
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(end / "model.safetensors")
    assert a.keys() == b.keys() and "ada_p" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    gp = {r["step"]: r["gp"] for r in records if "gp" in r}
    assert [s for s in sorted(gp) if gp[s] > 0] == [1, 4, 7]  # logged after the step: R1 on steps 0, 3, 6
    assert len({round(r["augment_p"], 6) for r in records if "augment_p" in r}) > 1  # p moved


def test_training_on_a_sparse_cache_of_long_videos(videos, tmp_path):
    _, cache = videos
    cfg = load_config(
        None,
        model=dict(name="stylegan_v", **TINY, time_span=64),
        objective=dict(name="gan", gp_weight=0.05, gp_reduction="mean", gp_every=2),
        data=dict(source="cache", path=str(cache), sparse_frames=3, sparse_max_gap=32),
        train=dict(steps=2, batch_size=4, log_every=1, sample_every=2, checkpoint_every=2, num_samples=2),
    )
    with pytest.warns(UserWarning) as record:
        trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    messages = " ".join(str(w.message) for w in record)
    assert "skipping 1 of 4 videos" in messages and "1 of 3 videos are shorter than the largest gap" in messages
    assert isinstance(trainer.dataset, SparseFrames)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss_d" in r] == [1, 2]


def test_paper_config_reads_sparse_frames_and_adapts_p_and_the_tuned_tiny_config_loads():
    paper = load_config("stylegan_v_256")
    assert (paper.data.sparse_frames, paper.data.sparse_max_gap, paper.model.frames_per_clip) == (3, 32, 3)
    assert paper.model.time_span == 128 and paper.model.total_gaps() == [2, 4, 8, 16, 32]
    # ADA moves p by 1 per 100 kimg: the official train.py:315-316 sets ada_kimg = 100 for a run without a
    # resume checkpoint (resume: ~), overriding training_loop.py's default of 500 -- in the paper config and
    # in the model's default
    assert (paper.model.augment_target, paper.model.augment_interval, paper.model.augment_kimg) == (0.6, 4, 100)
    assert StyleGANVConfig().augment_kimg == 100
    model = StyleGANV(StyleGANVConfig(**TINY, augment_target=0.6))
    model.observe_real_scores(torch.ones(64), 0)  # batch 64, mean sign 1 > 0.6: p += 64 * 4 / (100 * 1000)
    assert model.augment_p_now == pytest.approx(64 * 4 / 100_000)
    tuned = load_config("stylegan_v_tiny_ada")
    assert tuned.model.concat_res == 16 and tuned.model.augment_target == 0.6 and tuned.objective.gp_every == 16
