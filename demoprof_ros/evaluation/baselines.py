"""What an accuracy or F1 must beat, and the order groups are listed in (report.md, MODEL_CARD.md).

A 60 % gender accuracy means nothing without knowing that 58 % of the set is one gender. Both baselines are
computed from the per-class supports that results.json already holds (classification_report), so old results
get them too:

- majority class: always answer the most frequent true class m (share p_m). Accuracy p_m; macro F1 =
  (2 p_m / (1 + p_m)) / K over the K classes that occur (metrics.py's macro convention; the others score 0).
- chance: answer one of the C classes uniformly at random. Expected accuracy 1 / C; for large n the expected
  F1 of class c is 2 p_c (1/C) / (p_c + 1/C) (precision p_c, recall 1/C), averaged over all C classes.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..core.taxonomy import CLASSES, COARSE_CLASSES


def _supports(metrics: Mapping[str, Any]) -> dict[str, int]:
    return {c: int(v.get("support", 0)) for c, v in (metrics.get("per_class") or {}).items()}


def majority_baseline(metrics: Mapping[str, Any]) -> dict[str, float] | None:
    """{"accuracy", "macro_f1", "class"} of always answering the most frequent class; None without supports."""
    supports = _supports(metrics)
    n = sum(supports.values())
    if n == 0:
        return None
    top = max(supports, key=supports.__getitem__)
    share = supports[top] / n
    present = sum(1 for s in supports.values() if s > 0)
    return {"accuracy": share, "macro_f1": 2 * share / (1 + share) / present, "class": top}


def chance_baseline(metrics: Mapping[str, Any], n_classes: int | None = None) -> dict[str, float] | None:
    """{"accuracy", "macro_f1"} expected of a uniform random guess among `n_classes` (default: the classes)."""
    supports = _supports(metrics)
    n = sum(supports.values())
    classes = n_classes or len(metrics.get("classes") or supports)
    if n == 0 or classes < 1:
        return None
    q = 1.0 / classes
    f1 = [2 * (s / n) * q / (s / n + q) for s in supports.values() if s > 0]
    return {"accuracy": q, "macro_f1": sum(f1) / classes}


def baseline_cells(metrics: Mapping[str, Any], n_classes: int | None = None) -> tuple[str, str]:
    """("majority / chance" accuracy, the same for macro F1) as percentages with one decimal, for tables."""
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    major, chance = majority_baseline(metrics) or {}, chance_baseline(metrics, n_classes) or {}
    return (f"{pct(major.get('accuracy'))} / {pct(chance.get('accuracy'))}",
            f"{pct(major.get('macro_f1'))} / {pct(chance.get('macro_f1'))}")


def _rank(attribute: str, value: str) -> tuple[int, str]:
    vocab = [*CLASSES.get(attribute, ()), *COARSE_CLASSES.get(attribute, {})]
    return (vocab.index(value), "") if value in vocab else (len(vocab), value)


def group_order(grouping: str, names: Iterable[str]) -> list[str]:
    """Group names ("20-29", "White/Male") in the taxonomy's order (0-2 before 3-9 before 10-19), not A-Z."""
    attributes = grouping.split("/")

    def key(name: str) -> tuple:
        parts = name.split("/")
        return tuple(_rank(a, p) for a, p in zip(attributes, parts)) if len(parts) == len(attributes) else ((0, name),)

    return sorted(names, key=key)


def class_order(attribute: str, names: Iterable[str]) -> list[str]:
    """Class names of one attribute in the taxonomy's order (unknown names last, A-Z)."""
    return sorted(names, key=lambda n: _rank(attribute, n))
