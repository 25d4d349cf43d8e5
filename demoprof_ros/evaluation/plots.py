"""Figures for evaluation reports: confusion matrices, the cross-dataset matrix, retrieval contact sheets.

matplotlib runs on the Agg back-end (no display needed; safe in CI and over SSH). Each function writes one PNG
and returns its path; nothing here decides what to plot, the callers (evaluate, experiment, retrieval) do.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str], path: str | Path,
                   title: str = "", normalize: bool = True) -> Path:
    """Confusion matrix (rows = true class, columns = predicted), shaded by row-normalised recall.

    Counts are printed in the cells so a normalised colour never hides how few samples a row has.
    """
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=float)
    if counts.shape != (len(classes), len(classes)):
        raise ValueError(f"matrix shape {counts.shape} does not fit {len(classes)} classes")
    rows = counts.sum(axis=1, keepdims=True)
    shade = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalize else counts
    size = max(4.0, 0.55 * len(classes) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    ax.set_xticks(range(len(classes)), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if shade[i, j] > 0.5 * (shade.max() or 1) else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row share" if normalize else "count")
    return _save(fig, path)


def plot_matrix(values: Sequence[Sequence[float | None]] | np.ndarray, row_labels: Sequence[str],
                col_labels: Sequence[str], path: str | Path, title: str = "", errors=None,
                value_format: str = "{:.3f}", panels: Sequence[str] | None = None) -> Path:
    """Heat map of a (train set x test set) matrix; None / NaN cells are drawn empty and marked 'n/a'.

    values: R x C, or P x R x C with `panels` naming the P sub-plots (one per base model). errors: same shape,
    printed as '± e' under each value (standard deviation over seeds).
    """
    plt = _pyplot()
    data = np.asarray(values, dtype=float)
    err = None if errors is None else np.asarray(errors, dtype=float)
    if data.ndim == 2:
        data = data[None]
        err = None if err is None else err[None]
        panels = [title] if panels is None else panels
    if data.shape[1:] != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix shape {data.shape[1:]} does not fit {len(row_labels)}x{len(col_labels)} labels")
    panels = list(panels) if panels is not None else [""] * data.shape[0]
    width = max(3.5, 1.4 * len(col_labels) + 2.0)
    height = max(2.5, 0.6 * len(row_labels) + 1.5)
    fig, axes = plt.subplots(1, data.shape[0], figsize=(width * data.shape[0], height), squeeze=False)
    finite = data[np.isfinite(data)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    for p, ax in enumerate(axes[0]):
        ax.imshow(np.ma.masked_invalid(data[p]), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(col_labels)), labels=list(col_labels), rotation=30, ha="right")
        ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
        ax.set_xlabel("test set")
        ax.set_ylabel("training set")
        if panels[p]:
            ax.set_title(panels[p])
        for i in range(len(row_labels)):
            for j in range(len(col_labels)):
                v = data[p, i, j]
                text = "n/a" if not np.isfinite(v) else value_format.format(v)
                if err is not None and np.isfinite(v) and np.isfinite(err[p, i, j]):
                    text += "\n± " + value_format.format(err[p, i, j])
                light = np.isfinite(v) and (v - vmin) / (vmax - vmin) < 0.5
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if light else "black")
    if title and data.shape[0] > 1:
        fig.suptitle(title)
    return _save(fig, path)


def contact_sheet(images_bgr: Sequence[np.ndarray], captions: Sequence[str], path: str | Path,
                  columns: int = 5, thumb: int = 128, title: str = "") -> Path:
    """Thumbnails in a grid with a caption under each (retrieval results). Writes face images: opt-in only."""
    if len(images_bgr) != len(captions):
        raise ValueError(f"{len(images_bgr)} images but {len(captions)} captions")
    if not images_bgr:
        raise ValueError("contact_sheet needs at least one image")
    plt = _pyplot()
    from ..core.transforms import resize_center_crop

    columns = max(1, min(columns, len(images_bgr)))
    rows = math.ceil(len(images_bgr) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.4 * rows + (0.4 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images_bgr, captions):
        ax.imshow(resize_center_crop(image, thumb)[:, :, ::-1])
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
