"""NÜWA's text input: a word-level vocabulary built from the training captions.

The paper encodes text with a BPE tokenizer (unverified, see docs/models/nuwa.md); kinema's NÜWA uses the
simplest tokenizer that makes text-to-video trainable on template captions: lower-cased words
(``[a-z0-9']+``), the vocabulary = ``<pad>``, ``<unk>`` and every word of the training captions (sorted).
The vocabulary is stored in the model config (``model.text_vocab``), so a checkpoint needs nothing else.
A caption becomes ``text_length`` ids: its words (unknown ones -> ``<unk>``), cut to ``text_length``,
padded with ``<pad>``. An empty caption (all ``<pad>``) is the "None" text of classifier-free guidance.
"""

from __future__ import annotations

import re
import warnings

import torch

PAD, UNK = "<pad>", "<unk>"
SPECIALS = (PAD, UNK)


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (letters, digits, apostrophes)."""
    return re.findall(r"[a-z0-9']+", text.lower())


def build_vocabulary(captions) -> list[str]:
    """``[<pad>, <unk>, *sorted words of captions]``."""
    found = sorted({w for caption in captions for w in words(caption)})
    return [*SPECIALS, *found]


def vocabulary_from_family(family: str, clips: int, frames: int, resolution: int, seed: int = 0) -> list[str]:
    """The vocabulary of the captions of the first ``clips`` clips of a captioned synthetic family."""
    from kinema.data import SYNTHETIC_FAMILIES

    if family not in SYNTHETIC_FAMILIES:
        raise ValueError(f"model.captions_from = {family!r} is not a synthetic data family; choose one of "
                         f"{', '.join(sorted(SYNTHETIC_FAMILIES))} (one with captions) or set model.text_vocab")
    dataset = SYNTHETIC_FAMILIES[family](num_clips=clips, frames=frames, height=resolution, width=resolution,
                                         seed=seed)
    caption = getattr(dataset, "caption", None)
    if caption is None:
        raise ValueError(f"model.captions_from = {family!r}: that family has no captions; use captioned_shapes "
                         "or set model.text_vocab to a list of words")
    return build_vocabulary(caption(i) for i in range(clips))


def encode_texts(texts: list[str], vocab: list[str], length: int, report: bool = True) -> torch.Tensor:
    """``(B, length)`` long ids of ``texts``; unknown words -> ``<unk>`` and over-long captions -> cut,
    both reported with a :class:`UserWarning` when ``report``."""
    index = {w: i for i, w in enumerate(vocab)}
    pad, unk = index[PAD], index[UNK]
    ids = torch.full((len(texts), length), pad, dtype=torch.long)
    unknown: list[str] = []
    cut: list[str] = []
    for row, text in enumerate(texts):
        ws = words(text)
        if len(ws) > length:
            cut.append(text)
            ws = ws[:length]
        for col, w in enumerate(ws):
            if w not in index:
                unknown.append(w)
            ids[row, col] = index.get(w, unk)
    if report and unknown:
        known = ", ".join(w for w in vocab if w not in SPECIALS)
        warnings.warn(f"text: {len(set(unknown))} word(s) outside the model's vocabulary, read as <unk>: "
                      f"{', '.join(sorted(set(unknown)))}. The model knows: {known}", stacklevel=3)
    if report and cut:
        warnings.warn(f"text: {len(cut)} caption(s) longer than model.text_length = {length} words were cut: "
                      f"{cut[0]!r}", stacklevel=3)
    return ids
