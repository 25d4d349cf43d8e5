"""Scoring in a data set's own vocabulary: the one place where predictions and labels are merged into
coarse labels (UTKFace's 5-way race: `Asian` = East + Southeast Asian, `Others` = Latino_Hispanic + Middle
Eastern).

core/taxonomy.py only defines the vocabularies (COARSE_CLASSES, coarse_of); evaluation (evaluate.py), the
retrieval analysis and training's validation score coarse-labelled data through the functions here:
`in_vocabulary` for one attribute, `merge_descriptions` for the full-description task.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..core.taxonomy import CLASSES, COARSE_CLASSES, Description, LabelError, coarse_of, normalize_label


@dataclass
class CoarseMerge:
    """Result of merge_to_coarse: the merged rows, which input rows they are, and what was left out."""

    values: Any  # N_kept x K ndarray (distributions) or list[str] (labels)
    kept: np.ndarray  # bool, one per input row
    vocab: tuple[str, ...]
    left_out: Counter = field(default_factory=Counter)  # reason -> rows

    @property
    def n_left_out(self) -> int:
        return sum(self.left_out.values())


def coarse_vocab_for(labels: Iterable[str | None], attribute: str) -> tuple[str, ...]:
    """The vocabulary a data set's labels imply: fine classes no coarse label covers, then the coarse labels used.

    UTKFace race ('Asian', 'Others' present) -> (White, Black, Indian, Asian, Others).
    """
    coarse = COARSE_CLASSES.get(attribute, {})
    used = [c for c in coarse if c in set(labels)]
    covered = {fine for c in used for fine in coarse[c]}
    return (*[c for c in CLASSES[attribute] if c not in covered], *used)


def merge_to_coarse(distribution_or_labels: np.ndarray | Sequence[str | None], attribute: str,
                    coarse_vocab: Sequence[str]) -> CoarseMerge:
    """Express predictions or labels in a coarser vocabulary (e.g. UTKFace's 5 races), honestly.

    A distribution (N x C array, columns in taxonomy.CLASSES[attribute] order) becomes N x K by summing the
    probabilities of the fine classes each vocabulary entry covers; every class must fall in exactly one entry.
    Labels map to themselves when in the vocabulary, else to the coarse entry covering them; rows with no label,
    a label the taxonomy lacks, or one the vocabulary cannot express are left out and counted by reason.
    """
    vocab = tuple(coarse_vocab)
    fine = CLASSES[attribute]
    cover = {entry: coarse_of(attribute, entry) for entry in vocab}
    owner: dict[str, str] = {}
    for entry, members in cover.items():
        for cls in members:
            if cls not in fine:
                raise ValueError(f"{attribute} vocabulary entry {entry!r} is neither a class nor a coarse label")
            if cls in owner:
                raise ValueError(f"{attribute} class {cls!r} falls in both {owner[cls]!r} and {entry!r}")
            owner[cls] = entry
    data = distribution_or_labels
    if isinstance(data, np.ndarray) and data.dtype.kind in "OUS" or (
            not isinstance(data, np.ndarray) and all(v is None or isinstance(v, str) for v in data)):
        return _merge_labels(list(data), attribute, vocab, owner)
    probs = np.asarray(data, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(fine):
        raise ValueError(f"expected an N x {len(fine)} {attribute} distribution (columns {list(fine)}), "
                         f"got shape {probs.shape}")
    missing = [c for c in fine if c not in owner]
    if missing:
        raise ValueError(f"{attribute} classes {missing} have no entry in the vocabulary {list(vocab)}")
    merged = np.stack([probs[:, [fine.index(c) for c in cover[e]]].sum(axis=1) for e in vocab], axis=1)
    return CoarseMerge(values=merged, kept=np.ones(len(probs), dtype=bool), vocab=vocab)


def _merge_labels(labels: list[str | None], attribute: str, vocab: tuple[str, ...],
                  owner: Mapping[str, str]) -> CoarseMerge:
    values: list[str] = []
    kept = np.zeros(len(labels), dtype=bool)
    left_out: Counter = Counter()
    for i, label in enumerate(labels):
        try:
            label = normalize_label(attribute, label or "")
        except LabelError:
            left_out["not in taxonomy"] += 1
            continue
        if label is None:
            left_out["no label"] += 1
        elif label in vocab:
            values.append(label)
            kept[i] = True
        elif label in owner:
            values.append(owner[label])
            kept[i] = True
        else:
            left_out[f"not expressible in {'/'.join(vocab)}"] += 1
    return CoarseMerge(values=values, kept=kept, vocab=vocab, left_out=left_out)


def owners(attribute: str, vocab: Sequence[str]) -> dict[str, str]:
    """Fine class -> the vocabulary entry that covers it (itself in a fine vocabulary)."""
    return {fine: entry for entry in vocab for fine in coarse_of(attribute, entry)}


def merge_note(attribute: str, vocab: Sequence[str]) -> str:
    """What was merged, for reports: 'East Asian + Southeast Asian -> Asian; ...' ('' when nothing)."""
    merged = [c for c in vocab if c in COARSE_CLASSES.get(attribute, {})]
    return "; ".join(f"{' + '.join(coarse_of(attribute, c))} -> {c}" for c in merged)


@dataclass
class InVocabulary:
    """One attribute of a data set expressed in the data set's vocabulary (see in_vocabulary)."""

    vocab: tuple[str, ...]
    owner: dict[str, str]  # fine class -> vocabulary entry
    probs: np.ndarray  # N x len(vocab), every row
    truth: list[str | None]  # per row: the label in the vocabulary, None where left out
    left_out: Counter  # reason -> rows

    @property
    def kept(self) -> np.ndarray:
        """Rows with a usable label (bool, one per row)."""
        return np.array([t is not None for t in self.truth], dtype=bool)

    @property
    def predicted(self) -> list[str]:
        """The arg-max vocabulary entry of every row."""
        return [self.vocab[i] for i in self.probs.argmax(axis=1)]


def in_vocabulary(probs: np.ndarray, labels: Sequence[str | None], attribute: str) -> InVocabulary:
    """The model's N x C probabilities and the N labels of one attribute in the vocabulary the labels imply
    (coarse_vocab_for): probabilities summed over the fine classes each entry covers; labels that cannot be
    expressed, or are missing, are None in `truth` and counted in `left_out`."""
    vocab = coarse_vocab_for(labels, attribute)
    merged_labels = merge_to_coarse(list(labels), attribute, vocab)
    kept = iter(merged_labels.values)
    truth = [next(kept) if k else None for k in merged_labels.kept]
    return InVocabulary(vocab, owners(attribute, vocab), merge_to_coarse(probs, attribute, vocab).values, truth,
                        merged_labels.left_out)


def merge_descriptions(joint_probs: np.ndarray, descriptions: Sequence[Description], attributes: Sequence[str],
                       owner: Mapping[str, Mapping[str, str]], separator: str) -> tuple[np.ndarray, list[str]]:
    """Full-description probabilities (N x D) summed into the descriptions of a coarse vocabulary.

    Returns (N x K merged probabilities, the K merged descriptions as `separator`-joined entries)."""
    merged_of = [separator.join(owner[a][getattr(d, a)] for a in attributes) for d in descriptions]
    keys = list(dict.fromkeys(merged_of))
    column = {k: i for i, k in enumerate(keys)}
    assign = np.zeros((len(merged_of), len(keys)))
    assign[np.arange(len(merged_of)), [column[k] for k in merged_of]] = 1.0
    return joint_probs @ assign, keys
