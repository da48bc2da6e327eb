"""NÜWA's text, sketch and multi-task paths: the captioned_shapes data (captions, masks, labels), the
word-level vocabulary (<unk> reported), text/sketch conditioning (causal, cached == uncached, condition
dropout), task mixing in the objective, k-means codebook init, the CLI flow with --text/--sketch and its
errors. Tiny sizes, CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kinema.cli import main
from kinema.config import build_dataclass
from kinema.data import Batch, CaptionedShapes, Draws, build_dataset
from kinema.data.captioned import COLOURS, DIRECTIONS, MASK_CLASSES, SHAPES, caption_words
from kinema.errors import ConfigError
from kinema.models.nuwa import NUWA, NUWAConfig
from kinema.models.nuwa.text import PAD, UNK, build_vocabulary, encode_texts, words
from kinema.nn.codebook import Codebook, kmeans

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: shared cores, one thread

TINY_VQ = {"frames": 4, "resolution": 16, "downsample": 4, "hidden": 16, "max_mult": 2, "codebook_size": 16,
           "embedding_dim": 8, "disc_hidden": 8, "disc_layers": 2}
TINY_NUWA = {"frames": 4, "resolution": 16, "downsample": 4, "codebook_size": 16, "hidden": 32, "heads": 2,
             "encoder_layers": 1, "decoder_layers": 2, "cross_extent": [1, 3, 3], "encoder_extent": [1, 3, 3],
             "block_frames": 2, "caption_clips": 200, "text_length": 6}


def nuwa(**changes) -> NUWA:
    torch.manual_seed(0)
    vq = json.dumps({"name": "nuwa_vqgan", **TINY_VQ})
    cfg = build_dataclass(NUWAConfig, {**TINY_NUWA, "vqgan_config": vq, **changes}, "model")
    cfg.validate()
    model = NUWA(cfg)
    torch.nn.init.normal_(model.transformer.to_logits.weight, std=0.5)
    model.vqgan_loaded = True
    return model.eval()


def data(n=4, frames=4, size=16, seed=0) -> Batch:
    ds = CaptionedShapes(num_clips=n, frames=frames, height=size, width=size, seed=seed)
    return Batch.collate([ds.item(i) for i in range(n)])


# --------------------------------------------------------------------------- data


def test_captioned_shapes_caption_masks_and_label_agree_with_the_pixels():
    ds = CaptionedShapes(num_clips=40, frames=8, height=32, width=32, seed=3)
    seen = set()
    for i in range(40):
        item, gt = ds.item(i), ds.ground_truth(i)
        assert torch.equal(ds[i], item.clips)  # ds[i]: the plain clip, as every synthetic family
        colour, shape, direction = gt["colour"], gt["shape"], gt["direction"]
        assert item.text == f"a {colour} {shape} moves {direction}" == ds.caption(i)
        assert int(item.labels) == ((list(COLOURS).index(colour) * 2 + SHAPES.index(shape)) * 4
                                    + list(DIRECTIONS).index(direction))
        masks = item.masks
        assert masks.shape == (8, 32, 32) and masks.dtype == torch.uint8
        assert set(masks.unique().tolist()) == {0, MASK_CLASSES.index(shape)}
        # object pixels have the caption's colour, the rest the background
        obj = masks.bool()
        assert torch.allclose(item.clips[:, obj].T, torch.tensor(COLOURS[colour]).expand(int(obj.sum()), 3))
        assert (item.clips[:, ~obj] < -0.79).all()
        # the mask's centre of mass moves in the caption's direction every frame
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        com = torch.stack([torch.stack([(ys * m).sum() / m.sum(), (xs * m).sum() / m.sum()]) for m in obj.float()])
        step = torch.tensor(DIRECTIONS[direction])
        moves = (com[1:] - com[:-1]) @ step
        assert (moves > 0.5).all(), (i, direction, com)
        seen.add(direction)
    assert seen == set(DIRECTIONS)


def test_captioned_shapes_through_build_dataset_and_batch_fields():
    from kinema.config import DataConfig

    ds = build_dataset(DataConfig(family="captioned_shapes", num_clips=6), frames=4, height=16, width=16, seed=0)
    draws = Draws(ds)  # what the trainer reads: the annotated items
    batch = Batch.collate([draws[i] for i in range(6)])
    assert batch.fields == {"labels", "text", "masks"}
    assert batch.masks.shape == (6, 4, 16, 16) and len(batch.text) == 6
    parts = batch.split(3)
    assert [len(p) for p in parts] == [2, 2, 2]
    assert torch.equal(torch.cat([p.masks for p in parts]), batch.masks)
    assert [t for p in parts for t in p.text] == batch.text
    assert batch.to("cpu").masks is not None


# --------------------------------------------------------------------------- text


def test_vocabulary_is_built_from_the_captions_and_unknown_words_are_reported():
    vocab = build_vocabulary(["a red square moves left", "A blue circle moves UP."])
    assert vocab[:2] == [PAD, UNK] and vocab[2:] == sorted(["a", "red", "square", "moves", "left", "blue", "circle",
                                                            "up"])
    assert words("A Red-square!") == ["a", "red", "square"]
    with pytest.warns(UserWarning, match="outside the model's vocabulary.*purple"):
        ids = encode_texts(["a purple square"], vocab, 5)
    assert ids[0].tolist() == [vocab.index("a"), vocab.index(UNK), vocab.index("square"), 0, 0]
    with pytest.warns(UserWarning, match="cut"):
        encode_texts(["a a a a a a a"], vocab, 3)


def test_text_model_stores_the_vocabulary_of_the_family_in_its_config():
    model = nuwa(tasks=["text"])
    assert set(model.config.text_vocab[2:]) == set(caption_words())
    assert "text" in model.capabilities.conditions
    plain = nuwa(cond_frames=1)
    assert plain.config.text_vocab == [] and "text" not in plain.capabilities.conditions


def test_text_conditioning_changes_logits_stays_causal_and_cached_equals_uncached():
    model = nuwa(tasks=["text"])
    codes = torch.randint(0, 16, (2, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    a = model.logits(codes, task="text", text=["a red square moves left"] * 2)
    b = model.logits(codes, task="text", text=["a blue circle moves up"] * 2)
    assert not torch.allclose(a, b)
    # condition dropout = the empty caption
    dropped = model.logits(codes, torch.tensor([True, True]), task="text", text=["a red square moves left"] * 2)
    empty = model.logits(codes, task="text", text=["", ""])
    assert torch.allclose(dropped, empty, atol=1e-6)
    # causal: no logit depends on a later token
    tr = model.transformer
    kind, cond = model.condition("text", codes[:1], ["a red square moves left"])
    enc = tr.encode(cond, kind)
    inputs = tr.inputs(codes[:1].flatten(1)).detach().requires_grad_()
    logits = tr.decode(inputs, enc, kind)[0]
    for p in range(0, logits.shape[0], 9):
        (grad,) = torch.autograd.grad(logits[p].pow(2).sum(), inputs, retain_graph=True)
        assert not (grad[0].abs().sum(-1) > 0)[p + 1 :].any()
    noise = torch.tensor([3, 4])
    for guidance in (1.0, 2.0):
        x = model.sample_codes(noise, text="a red square moves left", guidance=guidance, use_cache=True)
        y = model.sample_codes(noise, text="a red square moves left", guidance=guidance, use_cache=False)
        assert torch.equal(x, y)
    assert torch.equal(model.sample_codes(noise), model.sample_codes(noise, use_cache=False))  # "None" caption


def test_a_prompt_to_a_model_without_text_names_the_tasks_it_supports():
    model = nuwa(cond_frames=1)
    with pytest.raises(ValueError, match="trained without text.*supports: prediction"):
        model.sample_codes(torch.tensor([0]), text="a red square")
    with pytest.raises(ValueError, match="trained without sketch"):
        model.sample_codes(torch.tensor([0]), masks=torch.zeros(1, 4, 16, 16, dtype=torch.long))


# --------------------------------------------------------------------------- sketch


def test_sketch_conditioning_is_local_and_cached_equals_uncached():
    model = nuwa(tasks=["sketch"])
    codes = torch.randint(0, 16, (1, 4, 4, 4), generator=torch.Generator().manual_seed(2))
    masks = data(1).masks.long()
    tr = model.transformer
    kind, cond = model.condition("sketch", codes, masks=masks)
    assert kind == "sketch"
    onehot = torch.nn.functional.one_hot(cond, 3).float().requires_grad_()
    # frame-0 logits depend on sketch frame 0 only: encoder and cross extents are 1 frame, and the causal
    # decoder's frame-0 cells read only frame-0 cells, which cross-attend to sketch frame 0
    emb = tr.sketch_embed(onehot.view(1, 4, 4, 4, 4, 4, 3).permute(0, 1, 2, 4, 3, 5, 6).flatten(4)).flatten(1, 3)
    x = emb + tr.sketch_pos()
    for block in tr.encoder:
        x = block(x, "sketch")
    logits = tr.decode(tr.inputs(codes.flatten(1)), tr.enc_norm(x), "sketch")[0]
    (grad,) = torch.autograd.grad(logits[:16].pow(2).sum(), onehot)
    per_frame = grad.abs().sum((0, 2, 3, 4))
    assert per_frame[0] > 0 and (per_frame[1:] == 0).all()
    noise = torch.tensor([5, 6])
    x = model.sample_codes(noise, masks=masks, guidance=1.5, use_cache=True)
    y = model.sample_codes(noise, masks=masks, guidance=1.5, use_cache=False)
    assert torch.equal(x, y)


def test_bad_sketches_are_clear_errors():
    model = nuwa(tasks=["sketch"])
    with pytest.raises(ValueError, match=r"needs \(B, T, H, W\) = \(1, 4, 16, 16\)"):
        model.check_masks(torch.zeros(1, 3, 16, 16, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"values must be in 0..2"):
        model.check_masks(torch.full((1, 4, 16, 16), 5), 1)
    with pytest.raises(ValueError, match="integer class ids"):
        model.check_masks(torch.zeros(1, 4, 16, 16), 1)


# --------------------------------------------------------------------------- multi-task objective


@pytest.mark.parametrize("mixing", ["per_step", "per_row"])
def test_multi_task_objective_trains_every_task(mixing):
    from kinema.objectives.base import StepContext
    from kinema.objectives.nuwa import NUWAObjective, NUWAObjectiveConfig
    from kinema.training.distributed import BatchRows

    model = nuwa(tasks=["text", "sketch", "prediction"], cond_frames=1).train()
    objective = NUWAObjective(model, NUWAObjectiveConfig(cond_drop_prob=0.25, task_mixing=mixing))
    opt = torch.optim.Adam(model.transformer.parameters(), lr=1e-3)
    batch = data(8)
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for step in range(6):
        ctx = StepContext({"transformer": opt}, gen, [BatchRows(0, 8, 8)], None, step=step)
        metrics = objective.train_step([batch], ctx)
        assert torch.isfinite(torch.as_tensor(metrics["loss"]))
        tasks = set(objective._task.tolist())
        assert mixing == "per_row" or len(tasks) == 1
        seen |= tasks
    assert seen == {0, 1, 2}
    # the loss is the row-weighted mean of the per-task losses
    drop = torch.zeros(8, dtype=torch.bool)
    objective._drop, objective._task = drop, torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    with torch.no_grad():
        mixed = objective._loss(batch, BatchRows(0, 8, 8))
        parts = [model.loss(batch.clips[s], drop[s], t, [batch.text[i] for i in range(8)][s], batch.masks[s])
                 for s, t in ((slice(0, 3), "text"), (slice(3, 5), "sketch"), (slice(5, 8), "prediction"))]
    assert torch.allclose(mixed, (3 * parts[0] + 2 * parts[1] + 3 * parts[2]) / 8, atol=1e-5)


def test_task_configuration_errors():
    with pytest.raises(ConfigError, match="each of"):
        nuwa(tasks=["text", "speech"])
    with pytest.raises(ConfigError, match="needs model.cond_frames"):
        nuwa(tasks=["prediction"])
    with pytest.raises(ConfigError, match="has no 'prediction'"):
        nuwa(tasks=["text"], cond_frames=1)
    with pytest.raises(ConfigError, match="has no captions"):
        nuwa(tasks=["text"], captions_from="bouncing_shapes")


# --------------------------------------------------------------------------- codebook init


def test_kmeans_init_is_optional_and_lowers_the_quantisation_error():
    torch.manual_seed(0)
    centres = torch.randn(8, 4) * 5
    data_ = (centres[torch.randint(0, 8, (512,))] + 0.1 * torch.randn(512, 4))
    plain, km = Codebook(8, 4), Codebook(8, 4, kmeans_iters=10)
    assert plain.kmeans_iters == 0  # default unchanged (VideoGPT)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    a, b = plain.candidates(data_, g()), km.candidates(data_, g())
    err = lambda codes: torch.cdist(data_, codes).min(1).values.pow(2).mean()  # noqa: E731
    assert err(b) < err(a)
    assert torch.allclose(kmeans(data_, b, 1), b, atol=1e-4)  # converged: a fixed point
    km.initialize(b)
    assert torch.equal(km.candidates(data_, g()), a)  # restarts after init are random rows, as without k-means


# --------------------------------------------------------------------------- CLI


def test_text_and_sketch_cli_flow(tmp_path, capsys):
    small = ["model.resolution=16", "model.downsample=4", "model.frames=4", "train.batch_size=4",
             "train.num_samples=2", "data.num_clips=16", "train.steps=2", "train.log_every=1",
             "train.sample_every=2", "train.checkpoint_every=2", "data.family=captioned_shapes"]
    sets = lambda values: [a for v in values for a in ("--set", v)]  # noqa: E731
    vq = small + ["model.hidden=16", "model.codebook_size=16", "model.embedding_dim=8", "model.disc_hidden=8",
                  "model.codebook_init=kmeans"]
    assert main(["--threads", "1", "train", "--config", "nuwa_vqgan_tiny", *sets(vq), "--out", str(tmp_path / "vq")]) == 0
    tr = small + ["model.codebook_size=16", "model.hidden=32", "model.heads=2", "model.encoder_layers=1",
                  "model.decoder_layers=1", f"model.vqgan={tmp_path / 'vq'}", "model.caption_clips=100"]
    assert main(["--threads", "1", "train", "--config", "nuwa_tiny_multi", *sets(tr), "--out",
                 str(tmp_path / "multi")]) == 0
    saved = json.loads(next((tmp_path / "multi" / "checkpoints").glob("*/config.json")).read_text())
    assert "red" in saved["model"]["text_vocab"]
    run = str(tmp_path / "multi")
    out = tmp_path / "t"
    assert main(["--threads", "1", "sample", "--checkpoint", run, "--num", "2", "--out", str(out),
                 "--text", "a purple square moves left", "--guidance", "2"]) == 0
    assert "outside the model's vocabulary, read as <unk>: purple" in capsys.readouterr().err
    assert len(list(out.iterdir())) >= 2
    masks = data(1, frames=4, size=16).masks[0].numpy().astype(np.int64)
    np.save(tmp_path / "m.npy", masks)
    assert main(["--threads", "1", "sample", "--checkpoint", run, "--num", "1", "--out", str(tmp_path / "s.mp4"),
                 "--sketch", str(tmp_path / "m.npy")]) == 0
    np.save(tmp_path / "short.npy", masks[:2])
    assert main(["--threads", "1", "sample", "--checkpoint", run, "--num", "1", "--out", str(tmp_path / "b.mp4"),
                 "--sketch", str(tmp_path / "short.npy")]) == 2
    assert main(["--threads", "1", "sample", "--checkpoint", run, "--num", "1", "--out", str(tmp_path / "c.mp4"),
                 "--sketch", str(tmp_path / "m.npy"), "--text", "a red square"]) == 2
    # the single-task configs train and sample through the same paths
    assert main(["--threads", "1", "train", "--config", "nuwa_tiny_sketch", *sets(tr), "--out",
                 str(tmp_path / "sk")]) == 0
    assert main(["--threads", "1", "sample", "--checkpoint", str(tmp_path / "sk"), "--num", "1", "--out",
                 str(tmp_path / "sk.mp4"), "--sketch", str(tmp_path / "m.npy"), "--guidance", "2"]) == 0
    assert main(["--threads", "1", "sample", "--checkpoint", str(tmp_path / "sk"), "--num", "1", "--out",
                 str(tmp_path / "sk2.mp4"), "--text", "a red square"]) == 2  # sketch-only: no text
    # a model trained without text: the error names what it supports
    pred = small + ["model.codebook_size=16", "model.hidden=32", "model.heads=2", "model.encoder_layers=1",
                    "model.decoder_layers=1", f"model.vqgan={tmp_path / 'vq'}"]
    assert main(["--threads", "1", "train", "--config", "nuwa_tiny", *sets(pred), "--out", str(tmp_path / "p")]) == 0
    assert main(["--threads", "1", "sample", "--checkpoint", str(tmp_path / "p"), "--num", "1",
                 "--out", str(tmp_path / "d.mp4"), "--text", "a red square"]) == 2
