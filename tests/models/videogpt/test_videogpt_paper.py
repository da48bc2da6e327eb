"""VideoGPT paper settings: the paper configs build (meta device) with the parameter counts the model card
states; the official strided sparse attention layout, its masks and cached decoding; the learned start
vector and old configs without it; position tables of widths that are not multiples of 3. CPU, seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kinema.config import build_dataclass
from kinema.errors import ConfigError
from kinema.models.videogpt.prior import PositionEmbedding, VideoGPTPrior, VideoGPTPriorConfig, axis_widths
from kinema.nn.attention import sparse_causal_mask, strided_block_shape, strided_sparse_layout
from kinema.registry import build_model, load_config

CARD = Path(__file__).resolve().parents[3] / "docs" / "models" / "videogpt.md"
TINY_VQ = {"frames": 8, "resolution": 16, "downsample": [2, 4, 4], "hidden": 16, "res_layers": 1,
           "codebook_size": 32, "embedding_dim": 8}
TINY_PRIOR = {"frames": 8, "resolution": 16, "downsample": [2, 4, 4], "codebook_size": 32, "hidden": 24, "heads": 2,
              "layers": 1, "dropout": 0.0, "attn_dropout": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: shared cores, one thread


def prior(**changes) -> VideoGPTPrior:
    torch.manual_seed(0)
    vq = json.dumps({"name": "videogpt_vqvae", **TINY_VQ})
    model = VideoGPTPrior(build_dataclass(VideoGPTPriorConfig, {**TINY_PRIOR, "vqvae_config": vq, **changes}, "model"))
    torch.nn.init.normal_(model.transformer.fc_out.weight, std=0.5)  # official init is zero: logits would be flat
    model.vqvae_loaded = True
    return model.eval()


# --------------------------------------------------------------------------- paper configs

# (config, trained parameters, total) as the model card's table states them; VQ-VAEs: total only.
PAPER_COUNTS = [
    ("videogpt_vqvae_bair_64", None, 13_768_339),
    ("videogpt_vqvae_bair_64_stride4x2x2", None, 21_141_619),
    ("videogpt_vqvae_ucf101_128", None, 21_141_619),
    ("videogpt_prior_bair_64", 94_048_168, 107_816_507),
    ("videogpt_prior_bair_64_stride4x2x2", 94_047_484, 115_189_103),
    ("videogpt_prior_ucf101_128", 253_200_024, 274_341_643),
]


@pytest.mark.parametrize("name,trained,total", PAPER_COUNTS)
def test_paper_configs_build_on_meta_with_the_cards_parameter_counts(name, trained, total):
    cfg = load_config(name).model
    with torch.device("meta"):
        model = build_model(cfg)
    counts = model.parameter_counts()
    assert counts["total"] == total
    if trained is not None:
        assert counts["transformer (trained)"] == trained
    card = CARD.read_text()
    assert f"`{name}`" in card and f"{total:,}" in card and (trained is None or f"{trained:,}" in card)


def test_paper_configs_hold_the_papers_values():
    bair, ucf = load_config("videogpt_prior_bair_64"), load_config("videogpt_prior_ucf101_128")
    m = bair.model
    assert (m.latent_shape, m.codebook_size, m.hidden, m.layers, m.heads) == ((8, 32, 32), 1024, 512, 16, 4)
    assert (bair.train.steps, bair.train.grad_clip, m.start, m.attention, m.cond_frames) == (150_000, 1.0, "learned",
                                                                                           "sparse", 1)
    assert load_config("videogpt_prior_bair_64_stride4x2x2").model.latent_shape == (4, 32, 32)
    m = ucf.model
    assert (m.latent_shape, m.codebook_size, m.hidden, m.layers, m.heads) == ((4, 32, 32), 1024, 1024, 20, 8)
    assert (ucf.data.flip, ucf.train.grad_clip) == (False, 1.0)
    # centre crop on the 128x170 cache: the crop range (VideoCache.crop_range) collapses to x = 21
    room = 170 - 128
    assert min(ucf.data.crop_margin, room // 2) == room - min(ucf.data.crop_margin, room // 2) == 21
    for name in ("videogpt_vqvae_bair_64", "videogpt_vqvae_ucf101_128"):
        run = load_config(name)
        assert (run.model.codebook_size, run.train.lr, run.train.grad_clip) == (1024, 7e-4, 1.0)
    assert load_config("videogpt_vqvae_bair_64").model.latent_shape == (8, 32, 32)
    assert load_config("videogpt_vqvae_bair_64_stride4x2x2").model.latent_shape == (4, 32, 32)


# --------------------------------------------------------------------------- sparse attention

# Produced by the official StridedSparsityConfig((4, 2, 4), n_head=1, causal=True, block=4,
# num_local_blocks=2).make_layout() (wilson1yan/VideoGPT videogpt/attention.py L333-392, HEAD 733d2b1) and
# checked by hand: blocks of 4 positions on a (4, 2) block grid; row r = (t, h) sees r-2..r (local) and
# (0..t, h) (strided along T; none along the last block axis). Row 7 = (3, 1): {5, 6, 7} + {1, 3, 5, 7}.
OFFICIAL_LAYOUT_4x2x4 = """
10000000
11000000
11100000
01110000
10111000
01011100
10101110
01010111
"""


def test_sparse_layout_equals_the_official_layout_on_a_small_grid():
    expected = torch.tensor([[c == "1" for c in row] for row in OFFICIAL_LAYOUT_4x2x4.split()])
    assert strided_block_shape((4, 2, 4), 4) == (4, 2)
    assert torch.equal(strided_sparse_layout((4, 2, 4), block=4, local_blocks=2), expected)
    assert strided_block_shape((8, 32, 32), 32) == (8, 32)  # the paper's BAIR grid: one block per row of codes
    with pytest.raises(ValueError, match="does not split into blocks"):
        strided_block_shape((2, 2, 2), 32)


def test_sparse_mask_is_the_block_layout_with_causal_diagonal_blocks():
    layout = strided_sparse_layout((4, 2, 4), block=4, local_blocks=2)
    mask = sparse_causal_mask(layout, 4)
    assert mask.shape == (32, 32)
    expanded = layout.repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert torch.equal(mask, expanded & torch.ones(32, 32, dtype=torch.bool).tril())  # official: tril on the diagonal
    for pos in (0, 5, 31):  # official decoding row: the layout row cut after the query (get_non_block_layout_row)
        assert torch.equal(sparse_causal_mask(layout, 4, slice(pos, pos + 1), pos + 1)[0], mask[pos, : pos + 1])


def test_sparse_prior_logits_depend_exactly_on_the_masked_positions():
    """One layer: logits of position i change with code j iff i attends input position j + 1 (the right shift)."""
    model = prior(attention="sparse", sparse_block=4, sparse_local_blocks=1, start="learned")
    mask = sparse_causal_mask(model.transformer.layout, 4)
    codes = torch.randint(32, (1, 64), generator=torch.Generator().manual_seed(0))
    logits = model.logits(codes)
    for j in (0, 9, 30):
        changed = codes.clone()
        changed[:, j] = (changed[:, j] + 1) % 32
        moved = (model.logits(changed) - logits).abs().amax(-1)[0] > 0
        assert torch.equal(moved, mask[:, j + 1]), j
    assert not mask[40, 1 + 1] and mask[40, 8 + 1]  # the layout is really sparse here


@pytest.mark.parametrize("start", ["learned", "zero"])
def test_sparse_cached_sampling_matches_uncached(start):
    model = prior(attention="sparse", sparse_block=4, sparse_local_blocks=1, start=start, layers=2)
    noise = model.sample_noise(2, generator=torch.Generator().manual_seed(1))
    cached = model.sample_codes(noise, top_k=8)
    assert torch.equal(cached, model.sample_codes(noise, top_k=8, use_cache=False))
    assert len(cached.unique()) > 4


def test_sparse_grid_that_does_not_split_into_blocks_is_a_config_error():
    with pytest.raises(ConfigError, match="sparse_block"):
        build_dataclass(VideoGPTPriorConfig, {**TINY_PRIOR, "attention": "sparse", "sparse_block": 128}, "model")


# --------------------------------------------------------------------------- start vector, position tables


def test_learned_start_is_trained_and_sets_position_zero():
    model = prior(start="learned")
    sos = model.transformer.sos
    assert sos is not None and sos.shape == (24,)
    codes = torch.randint(32, (2, 64), generator=torch.Generator().manual_seed(0))
    model.logits(codes).logsumexp(-1).sum().backward()
    assert sos.grad is not None and sos.grad.abs().sum() > 0
    before = model.logits(codes)
    with torch.no_grad():
        sos.add_(1.0)
    after = model.logits(codes)
    assert not torch.allclose(before[:, 0], after[:, 0])


def test_configs_saved_without_start_load_as_zero_start():
    """A prior config written before ``model.start`` existed has no such key: it builds the zero-start
    transformer it was trained as, and that model's weights (no ``transformer.sos``) load strictly."""
    old = {**TINY_PRIOR, "vqvae_config": json.dumps({"name": "videogpt_vqvae", **TINY_VQ})}
    cfg = build_dataclass(VideoGPTPriorConfig, old, "model")
    assert cfg.start == "zero" and cfg.attention == "full"
    model = VideoGPTPrior(cfg)
    assert model.transformer.sos is None
    state = prior().state_dict()  # prior() builds from the same keys, so this is an "old" state dict
    assert not any(k.endswith(".sos") for k in state)
    model.load_state_dict(state)
    with pytest.raises(RuntimeError, match="sos"):
        prior(start="learned").load_state_dict(state)


def test_position_tables_split_widths_that_are_not_multiples_of_3():
    assert axis_widths(576) == [192, 192, 192] and axis_widths(512) == [171, 171, 170]
    assert axis_widths(1024) == [342, 341, 341]
    pos = PositionEmbedding((2, 3, 4), 512)
    assert [t.shape[1] for t in pos.tables] == [171, 171, 170]
    grid = pos()
    assert grid.shape == (24, 512)
    et, eh, ew = pos.tables  # position (t, h, w) = 1*12 + 2*4 + 3 = 23: concatenation of the three rows
    assert torch.equal(grid[23], torch.cat([et[1], eh[2], ew[3]]))
