"""What a run writes: the checkpoint (model.safetensors + meta.json), log.csv, curves.png, resume.pt and
<output>/summary.json, and the RunResult a finished seed returns.

The checkpoint is what the scorer and the ROS node load directly (core.models.save_checkpoint); resume.pt is
read back with torch.load(weights_only=True) and removed when the run completes. Files are written to a
temporary name and renamed, so an interrupted run never leaves half a file.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..core.model_meta import declared_attribute_scoring
from ..core.models import LoadedModel, load_model, read_meta, save_checkpoint
from ..core.prompts import PromptSet
from ..core.taxonomy import ATTRIBUTE_NAMES, CLASSES
from .config import TrainConfig
from .data import TrainData
from .mim import MIMHead
from .optim import ADAM_BETAS, ADAM_EPS

RESUME_FILE = "resume.pt"
LOG_FILE = "log.csv"
PLOT_FILE = "curves.png"
SUMMARY_FILE = "summary.json"

LOG_COLUMNS = ("epoch", "train_loss", "train_contrastive", "train_mim", "val_loss", "f1_age", "f1_gender",
               "f1_race", "f1_joint", "score", "best", "lr", "seconds")


def write_log(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """log.csv: one row per epoch (LOG_COLUMNS; NaN as an empty cell)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _fmt(row.get(k)) for k in LOG_COLUMNS})
    tmp.replace(path)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value


def plot_curves(path: Path, history: Sequence[Mapping[str, Any]], attributes: Sequence[str]) -> None:
    """Train/val loss and validation F1 per epoch (matplotlib, Agg: no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    logging.getLogger("matplotlib").setLevel(logging.WARNING)

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], marker="o", label="val loss (contrastive)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for name in [*(f"f1_{a}" for a in attributes), "f1_joint", "score"]:
        ax_f1.plot(epochs, [row.get(name, float("nan")) for row in history], marker="o",
                   label="selection score" if name == "score" else name.replace("f1_", "macro-F1 "))
    for ax in (ax_loss, ax_f1):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("validation macro-F1")
    ax_f1.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def save_resume(path: Path, state: dict[str, Any]) -> None:
    """resume.pt after an epoch: weights, optimiser, scheduler, scaler, early stopping, history (tensors and
    plain values only, so that torch.load(weights_only=True) reads it)."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def jsonable(value: Any) -> Any:
    """NaN -> None throughout, so that meta.json and summary.json are strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU (the best epoch's, kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}



def mim_state_of(head: MIMHead) -> dict[str, torch.Tensor]:
    """The head's weights under FaRL's checkpoint names (visual.mask_token, visual.lm_head.*, ...)."""
    return {f"visual.{k}": v for k, v in head.state_dict().items()}


def mim_out(head: MIMHead | None, loaded: LoadedModel) -> dict[str, torch.Tensor] | None:
    """MIM weights for the checkpoint: the trained head, or the base model's (FaRL) passed through."""
    if head is not None:
        return mim_state_of(head)
    return dict(loaded.mim_state) or None


def run_meta(cfg: TrainConfig, seed: int, loaded: LoadedModel, prompts: PromptSet, data: TrainData,
             mim_info: dict[str, Any] | None, batch_size: int, world_size: int,
             autocast_dtype: torch.dtype | None) -> dict[str, Any]:
    """meta.json's record of the run (the epochs and the best epoch are added as training goes)."""
    return {
        "base_model": cfg.model, "base_name": loaded.name, "taxonomy": {a: list(CLASSES[a]) for a in ATTRIBUTE_NAMES},
        "attributes": list(cfg.attributes), "prompts": prompts.to_dict(),
        "attribute_scoring": cfg.attribute_scoring or declared_attribute_scoring(loaded.meta),
        **({"crop_margin": loaded.meta["crop_margin"]} if "crop_margin" in loaded.meta else {}),  # same crops
        "mean": list(loaded.mean),
        "std": list(loaded.std), "seed": seed,
        "loss": {"contrastive": "FLYP: CLIP symmetric InfoNCE, learnable temperature (max 100)",
                 "mim": mim_info},
        "optimizer": {"name": "AdamW", "lr": cfg.lr, "weight_decay": cfg.weight_decay, "min_lr": cfg.min_lr,
                      "betas": list(ADAM_BETAS), "eps": ADAM_EPS,
                      "warmup_fraction": cfg.warmup_fraction, "grad_clip": cfg.grad_clip,
                      "batch_size_per_process": batch_size, "world_size": world_size,
                      "precision": str(autocast_dtype or torch.float32).replace("torch.", "")},
        "selection": cfg.selection, "data": data.info, "package_version": __version__,
        "torch_version": torch.__version__, "config": cfg.to_dict(),
    }


def write_checkpoint(out: Path, clip: nn.Module, loaded: LoadedModel, meta: Mapping[str, Any],
                     history: Sequence[Mapping[str, Any]], best_epoch: int | None, best_score: float,
                     head: MIMHead | None, **extra: Any) -> None:
    """model.safetensors + meta.json of the given weights, with the history so far and the best epoch."""
    save_checkpoint(out, clip, loaded.model_cfg,
                    {**meta, "epochs": jsonable(list(history)), "best_epoch": best_epoch, "best_score": best_score,
                     **extra},
                    mim_state=mim_out(head, loaded))


@dataclass
class RunResult:
    """One seed's outcome: where it is, its best epoch and that epoch's metrics, the history."""

    seed: int
    output: Path
    best_epoch: int | None
    best_score: float
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    loaded: LoadedModel | None = None  # the best weights, in memory (rank 0)


def best_metrics(history: Sequence[Mapping[str, Any]], best_epoch: int | None) -> dict[str, Any]:
    """The F1 scores, validation loss and selection score of the best epoch."""
    best = next((r for r in history if r["epoch"] == best_epoch), {})
    return {k: v for k, v in best.items() if k.startswith("f1_") or k in ("val_loss", "score")}


def completed_run(out: Path, seed: int) -> RunResult | None:
    """The result of a finished run in `out` (meta.json says complete), else None."""
    if not (out / "model.safetensors").is_file():
        return None
    meta = read_meta(out)
    if not meta.get("complete"):
        return None
    history = [{k: (float("nan") if v is None else v) for k, v in row.items()} for row in meta.get("epochs", [])]
    return RunResult(seed, out, meta.get("best_epoch"), float(meta.get("best_score", float("nan"))),
                     best_metrics(history, meta.get("best_epoch")), history, load_model(str(out), device="cpu"))


def summarize(results: Sequence[RunResult], cfg: TrainConfig) -> dict[str, Any]:
    """Mean +- std (sample std, ddof=1; 0 for one seed) of the best epoch's metrics over the seeds."""
    keys = sorted({k for r in results for k in r.best_metrics})
    stats = {}
    for key in keys:
        values = np.array([r.best_metrics.get(key, float("nan")) for r in results], dtype=float)
        values = values[~np.isnan(values)]
        if len(values):
            stats[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                          "values": values.tolist()}
    return {"selection": cfg.selection, "seeds": [r.seed for r in results],
            "best_epochs": [r.best_epoch for r in results], "runs": [str(r.output) for r in results],
            "metrics": stats}


def write_summary(summary: Mapping[str, Any], cfg: TrainConfig) -> Path:
    """<output>/summary.json: the summary and the settings (strict JSON: NaN as null)."""
    path = Path(cfg.output) / SUMMARY_FILE
    path.write_text(json.dumps(jsonable({**summary, "config": cfg.to_dict()}), indent=2, default=str) + "\n",
                    encoding="utf-8")
    return path


def summary_line(summary: Mapping[str, Any], output: str) -> str:
    """The one line `demoprof train` prints at the end."""
    score = summary["metrics"].get("score")
    text = f"{score['mean']:.4f} ± {score['std']:.4f}" if score else "n/a"
    parts = [f"{k.replace('f1_', '')} {v['mean']:.3f}±{v['std']:.3f}" for k, v in summary["metrics"].items()
             if k.startswith("f1_")]
    return (f"demoprof-train: {len(summary['seeds'])} seed(s), val {summary['selection']} {text} "
            f"(best epochs {summary['best_epochs']}; {', '.join(parts)}) -> {output}")
