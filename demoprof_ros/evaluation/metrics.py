"""Classification metrics, per-group gaps and calibration (numpy only); coarse vocabularies: coarse.py.

Conventions (scikit-learn's, written down so results compare with the literature):
- Per class: precision = tp / (tp + fp), recall = tp / (tp + fn), F1 = 2 tp / (2 tp + fp + fn). A ratio with a
  zero denominator is `zero_division` (default 0): a class never predicted has precision 0, a class absent
  from y_true has recall 0.
- Macro averages run over the given classes that occur in y_true or y_pred; classes in neither are left out
  (they would otherwise add an arbitrary 0 or 1). A predicted class absent from y_true counts (F1 = 0).
- Expected calibration error: equal-width bins over (0, 1], bin b = ((b-1)/M, b/M] (0 goes to the first bin),
  ECE = sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)| (Guo et al. 2017).
"""
from __future__ import annotations

from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from ..core.taxonomy import CLASSES, COARSE_CLASSES


def confusion_matrix(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
                     classes: Sequence[Hashable]) -> np.ndarray:
    """len(classes) x len(classes) counts, rows = true class, columns = predicted class."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    index = {c: i for i, c in enumerate(classes)}
    if len(index) != len(classes):
        raise ValueError(f"classes contain duplicates: {list(classes)}")
    unknown = sorted({str(y) for y in (*y_true, *y_pred) if y not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    if len(y_true):
        np.add.at(matrix, ([index[y] for y in y_true], [index[y] for y in y_pred]), 1)
    return matrix


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(num.shape, float(zero_division))
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_report(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], classes: Sequence[Hashable],
                          zero_division: float = 0.0) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1 and per-class scores (conventions in the module doc).

    JSON-ready: the matrix is a list of rows (true) of counts per predicted class, class names are strings.
    """
    matrix = confusion_matrix(y_true, y_pred, classes)
    n = int(matrix.sum())
    if n == 0:
        raise ValueError("classification_report needs at least one sample")
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _ratio(tp, predicted.astype(float), zero_division)
    recall = _ratio(tp, support.astype(float), zero_division)
    f1 = _ratio(2 * tp, (support + predicted).astype(float), zero_division)
    present = (support + predicted) > 0
    return {
        "n": n,
        "accuracy": float(tp.sum() / n),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "macro_classes": [str(c) for c, p in zip(classes, present) if p],
        "per_class": {str(c): {"precision": float(precision[i]), "recall": float(recall[i]),
                               "f1": float(f1[i]), "support": int(support[i])}
                      for i, c in enumerate(classes)},
        "classes": [str(c) for c in classes],
        "confusion_matrix": matrix.tolist(),
    }


def expected_calibration_error(confidences: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                               n_bins: int = 15) -> float:
    """ECE of top-1 confidences against whether the prediction was right (equal-width bins)."""
    conf = np.asarray(confidences, dtype=float).ravel()
    hit = np.asarray(correct, dtype=float).ravel()
    if conf.shape != hit.shape:
        raise ValueError(f"{conf.size} confidences but {hit.size} correctness flags")
    if conf.size == 0:
        raise ValueError("expected_calibration_error needs at least one sample")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if np.any(~np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidences must be finite and within [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, weights=hit, minlength=n_bins) - np.bincount(bins, weights=conf,
                                                                              minlength=n_bins))
    # |sum(hit) - sum(conf)| over a bin = |B| * |acc(B) - conf(B)|, so dividing by n gives the weighted term.
    return float(gap[count > 0].sum() / conf.size)


def group_report(records: Iterable[Mapping[str, Mapping[str, str | None]]], attribute: str,
                 group_by: Sequence[Sequence[str]] = (("race", "gender"), ("age",)),
                 classes: Sequence[str] | None = None, min_count: int = 10) -> dict[str, Any]:
    """Accuracy and macro-F1 of one attribute per group, and the largest gap between groups.

    records: {"labels": {attr: true label or None}, "pred": {attr: predicted label}} per face. Records without
    a true label for `attribute` are left out; so are, per grouping, records with an unknown group attribute
    (both counted). Groups are named "White/Male"; the gap is max - min over groups with >= min_count samples
    (None when fewer than two qualify). classes: the label vocabulary (default: the attribute's classes and
    coarse labels); macro-F1 within a group follows the module's convention. Score a coarse-labelled set
    (UTKFace race) on predictions already passed through coarse.merge_to_coarse.
    """
    classes = tuple(classes) if classes is not None else (*CLASSES[attribute],
                                                          *COARSE_CLASSES.get(attribute, {}))
    records = list(records)
    scored = [r for r in records if r["labels"].get(attribute) is not None]
    out: dict[str, Any] = {"attribute": attribute, "n": len(scored), "unlabelled": len(records) - len(scored),
                           "min_count": min_count, "groupings": {}}
    for keys in group_by:
        keys = tuple(keys)
        members: dict[str, list[Mapping]] = {}
        unknown_group = 0
        for record in scored:
            values = [record["labels"].get(k) for k in keys]
            if any(v is None for v in values):
                unknown_group += 1
                continue
            members.setdefault("/".join(values), []).append(record)
        groups: dict[str, dict[str, Any]] = {}
        for name in sorted(members):
            y_true = [r["labels"][attribute] for r in members[name]]
            y_pred = [r["pred"][attribute] for r in members[name]]
            report = classification_report(y_true, y_pred, classes)
            groups[name] = {"n": report["n"], "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                            "in_gap": report["n"] >= min_count}
        out["groupings"]["/".join(keys)] = {"groups": groups, "left_out": unknown_group,
                                            "gap": {m: _gap(groups, m) for m in ("accuracy", "macro_f1")}}
    return out


def _gap(groups: Mapping[str, Mapping[str, Any]], metric: str) -> dict[str, Any] | None:
    eligible = {name: g[metric] for name, g in groups.items() if g["in_gap"]}
    if len(eligible) < 2:
        return None
    best = max(eligible, key=eligible.__getitem__)
    worst = min(eligible, key=eligible.__getitem__)
    return {"gap": eligible[best] - eligible[worst], "best": best, "worst": worst}
