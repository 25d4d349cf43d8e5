"""`demoprof experiment CONFIG.yaml`: the paper's cross-dataset grid in one command.

A config names base models, data sets, training sets (lists of data sets; `zero-shot` = no training), test
sets and seeds. For every cell the experiment fine-tunes through the trainer's API (`TrainConfig` +
`trainer.run`) and tests through evaluate.py's, then writes:

- `table.md`: Table-I style, one table per metric, rows = model x training set, columns = test sets,
  mean ± sample std over seeds;
- `cross_dataset.md` + `cross_dataset.png`: the primary metric as a training set x test set matrix per model;
- `summary.json`: every cell's values; and per cell the evaluation's results.json / report.md.

The config itself is read and checked by experiment_config.py (load_experiment).

Cells whose results already exist are skipped, so an interrupted grid continues where it stopped (a training
run cut off mid-way resumes from its last epoch). Data sets given as one labelled set are split once into
train/test CSVs (stratified, a fixed seed independent of the training seeds), so every seed and every model
sees the same test images; sets given as explicit train/val/test files are used as they are.

Paths: data set paths are relative to `data_root`, which is relative to the config file; `${VAR}` and
`${VAR:-default}` are expanded (ci_small.yaml uses `${DEMOPROF_DATA:-...}`). `output` is relative to the
current directory (or --output).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..core.outputs import output_dir_arg
from ..core.taxonomy import ATTRIBUTE_NAMES
from ..training.datasets import DatasetError, read_dataset, stratified_split, write_labels_csv
from .experiment_config import (ZERO_SHOT, ExperimentConfig, ExperimentConfigError, ModelSpec,
                                load_experiment)

log = logging.getLogger("demoprof.experiment")

RESULTS = "results.json"


# --- splits ---------------------------------------------------------------------------------------------------


def prepare_splits(cfg: ExperimentConfig) -> dict[str, dict[str, list[Path]]]:
    """Per data set: {"train": [...], "val": [...], "test": [...]} files (split CSVs written once, then reused)."""
    from .evaluate import select

    trained = {m for members in cfg.train_sets.values() for m in members}
    out: dict[str, dict[str, list[Path]]] = {}
    split_dir = cfg.output / "splits"
    # Results on disk are only comparable if every cell saw the same split: refuse a changed recipe.
    manifest = {name: {"path": str(spec.path), "limit": spec.limit, "test_fraction": cfg.test_fraction,
                       "seed": cfg.split_seed, "trained": name in trained}
                for name, spec in cfg.datasets.items()
                if spec.path is not None and (name in trained or name in cfg.test_sets)}
    manifest_path = split_dir / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        changed = sorted(n for n in manifest if n in old and old[n] != manifest[n])
        if changed:
            raise ExperimentConfigError(
                f"{cfg.source}: the split of {changed} differs from the one {cfg.output} was run with "
                f"({manifest_path}); earlier results would not be comparable. Use another --output, or delete "
                f"{cfg.output} to start over")
        manifest = {**old, **manifest}
    split_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    for name, spec in cfg.datasets.items():
        if name not in trained and name not in cfg.test_sets:
            continue
        if spec.path is None:
            out[name] = {"train": spec.train, "val": spec.val, "test": spec.test}
            continue
        train_csv, test_csv = split_dir / f"{name}_train.csv", split_dir / f"{name}_test.csv"
        if not test_csv.is_file() or (name in trained and not train_csv.is_file()):
            samples, report = read_dataset(spec.path)
            if report.skipped:
                log.warning("%s", report.summary())
            samples = select(samples, spec.limit, cfg.split_seed)
            if name in trained:
                train, test = stratified_split(samples, cfg.test_fraction, seed=cfg.split_seed)
                write_labels_csv(train_csv, train)
            else:
                test = samples
            write_labels_csv(test_csv, test)
        out[name] = {"train": [train_csv] if name in trained else [], "val": [], "test": [test_csv]}
    return out


# --- cells ----------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One evaluation: a model (base or fine-tuned on a training set with a seed) on one test set."""

    model: str          # ModelSpec name, or the base for zero-shot rows
    base: str
    train_set: str
    seed: int | None    # None for zero-shot (deterministic: one run)
    test_set: str

    @property
    def row(self) -> str:
        return f"{self.model} / {self.train_set}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def train_dir(cfg: ExperimentConfig, model: ModelSpec, train_set: str) -> Path:
    return cfg.output / "models" / _slug(model.name) / _slug(train_set)


def eval_dir(cfg: ExperimentConfig, cell: Cell) -> Path:
    if cell.train_set == ZERO_SHOT:
        return cfg.output / "eval" / ZERO_SHOT / _slug(cell.base) / _slug(cell.test_set)
    return cfg.output / "eval" / _slug(cell.model) / _slug(cell.train_set) / f"seed_{cell.seed}" / _slug(cell.test_set)


def rows(cfg: ExperimentConfig) -> list[tuple[str, str, str]]:
    """(row model name, base, training set) in table order: per model, its training sets in config order; the
    zero-shot row once per distinct base (named by the base, since no training makes models differ)."""
    out, seen = [], set()
    for m in cfg.models:
        for train_set in cfg.train_sets:
            if train_set == ZERO_SHOT:
                if m.base in seen:
                    continue
                seen.add(m.base)
                out.append((m.base, m.base, train_set))
            else:
                out.append((m.name, m.base, train_set))
    return out


def plan(cfg: ExperimentConfig) -> list[Cell]:
    cells = []
    for model, base, train_set in rows(cfg):
        seeds: list[int | None] = [None] if train_set == ZERO_SHOT else list(cfg.seeds)
        for seed in seeds:
            for test_set in cfg.test_sets:
                cells.append(Cell(model, base, train_set, seed, test_set))
    return cells


def _checkpoint_state(seed_dir: Path) -> str:
    """'done' (complete checkpoint), 'partial' (resume it) or 'none'."""
    meta = seed_dir / "meta.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("complete"):
                return "done"
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    return "partial" if seed_dir.exists() and any(seed_dir.iterdir()) else "none"


def _train(cfg: ExperimentConfig, model: ModelSpec, train_set: str, seed: int,
           splits: Mapping[str, Mapping[str, list[Path]]], progress: bool):
    """Fine-tune one (model, training set, seed) through training.trainer.run; the best epoch's LoadedModel."""
    from ..core.models import load_model
    from ..training.config import TrainConfig
    from ..training.trainer import run

    out = train_dir(cfg, model, train_set)
    seed_dir = out / f"seed_{seed}"
    state = _checkpoint_state(seed_dir)
    if state == "done":
        log.info("training %s on %s seed %d: done earlier (%s)", model.name, train_set, seed, seed_dir)
        return load_model(str(seed_dir), device=cfg.device)
    members = cfg.train_sets[train_set]
    train_files = [str(p) for m in members for p in splits[m]["train"]]
    val_files = [str(p) for m in members for p in splits[m]["val"]]
    if val_files and len(val_files) != sum(1 for m in members for _ in splits[m]["train"]):
        val_files = []  # some members have no validation file: let training split all of them
    settings = {**cfg.training, **model.training, "model": model.base, "models_dir": cfg.models_dir,
                "train": train_files, "val": val_files, "output": str(out), "seeds": [seed],
                "attributes": list(cfg.attributes), "device": cfg.device, "resume": state == "partial"}
    settings.setdefault("progress", progress)
    train_cfg = TrainConfig.from_dict(settings)
    log.info("training %s on %s seed %d -> %s", model.name, train_set, seed, seed_dir)
    results, _ = run(train_cfg)
    loaded = results[0].loaded
    return loaded if loaded is not None else load_model(str(seed_dir), device=cfg.device)


def run_experiment(cfg: ExperimentConfig, progress: bool = True, force_eval: bool = False,
                   dry_run: bool = False) -> dict[str, Any]:
    """Run every missing cell, then write summary.json, table.md, cross_dataset.{md,png}."""
    from .evaluate import EvalSettings, evaluate, make_scorer, write_outputs
    from ..core.models import load_model

    cells = plan(cfg)
    todo = [c for c in cells if force_eval or not (eval_dir(cfg, c) / RESULTS).is_file()]
    if dry_run:
        for c in cells:
            print(f"{'run ' if c in todo else 'done'}  {c.row:40} seed {c.seed if c.seed is not None else '-':>3}"
                  f"  -> {c.test_set}")
        return {"cells": len(cells), "todo": len(todo)}
    cfg.output.mkdir(parents=True, exist_ok=True)
    splits = prepare_splits(cfg)
    ev = dict(cfg.evaluation)
    plots = bool(ev.pop("plots", False))
    settings = EvalSettings(attributes=cfg.attributes, progress=progress, plots=plots, **ev)
    started = time.perf_counter()
    by_model = {m.name: m for m in cfg.models}
    groups: dict[tuple, list[Cell]] = {}
    for c in todo:
        groups.setdefault((c.model, c.base, c.train_set, c.seed), []).append(c)
    for (model_name, base, train_set, seed), group in groups.items():
        if train_set == ZERO_SHOT:
            loaded = load_model(base, device=cfg.device, models_dir=cfg.models_dir or None)
        else:
            loaded = _train(cfg, by_model[model_name], train_set, seed, splits, progress)
        scorer = make_scorer(loaded, attributes=cfg.attributes, batch_size=settings.batch_size)
        for cell in group:
            results = evaluate(scorer, [str(splits[cell.test_set]["test"][0])], settings, names=[cell.test_set],
                               spec=base if train_set == ZERO_SHOT else str(loaded.source))
            results["cell"] = {"model": cell.model, "base": cell.base, "train_set": train_set,
                               "train_data": cfg.train_sets[train_set], "seed": cell.seed, "test_set": cell.test_set,
                               "experiment": cfg.name}
            write_outputs(results, eval_dir(cfg, cell), plots=plots)
            log.info("%s seed %s on %s: done", cell.row, cell.seed, cell.test_set)
    summary = collect(cfg, cells)
    summary["seconds_this_run"] = round(time.perf_counter() - started, 1)
    write_tables(cfg, summary)
    return summary


# --- aggregation ----------------------------------------------------------------------------------------------


def metric_value(results: Mapping[str, Any], metric: str) -> float | None:
    """A number from results.json by a dotted name, pooled over the file's data sets (one, in the grid).

    `joint.accuracy`, `joint.top5_accuracy`, `joint_coarse.accuracy`, `<attribute>.<accuracy|macro_f1|
    macro_precision|macro_recall|ece>`, `retrieval.<attribute|full>` (mean precision@k). None when the data
    set has no rows for it.
    """
    head, _, key = metric.partition(".")
    if not key:
        raise ValueError(f"metric {metric!r}: expected <part>.<name>, e.g. joint.accuracy")
    datasets = list(results["datasets"].values())
    if len(datasets) != 1:
        raise ValueError(f"metric_value expects results for one data set, got {len(datasets)}")
    ds = datasets[0]
    if head in ("joint", "joint_coarse"):
        part = ds.get(head) or {}
        source = part if key in ("top5_accuracy", "ece") else (part.get("metrics") or {})
    elif head in ATTRIBUTE_NAMES:
        part = ds["attributes"].get(head) or {}
        source = part if key in ("ece", "mean_confidence") else (part.get("metrics") or {})
    elif head == "retrieval":
        source = {k: v["mean_precision"] for k, v in ((ds.get("retrieval") or {}).get("summary") or {}).items()}
    else:
        raise ValueError(f"metric {metric!r}: unknown part {head!r}; expected joint, joint_coarse, "
                         f"{', '.join(ATTRIBUTE_NAMES)} or retrieval")
    value = source.get(key)
    return None if value is None else float(value)


def collect(cfg: ExperimentConfig, cells: Sequence[Cell]) -> dict[str, Any]:
    """Every cell's metric values (from the results files on disk) and their mean ± std per table cell."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in cells:
        path = eval_dir(cfg, cell) / RESULTS
        if not path.is_file():
            continue
        results = json.loads(path.read_text(encoding="utf-8"))
        entry = table.setdefault(cell.row, {}).setdefault(cell.test_set, {
            "model": cell.model, "train_set": cell.train_set, "test_set": cell.test_set, "runs": [], "values": {}})
        entry["runs"].append({"seed": cell.seed, "results": str(path)})
        for metric in dict.fromkeys([*cfg.metrics, cfg.primary_metric]):
            entry["values"].setdefault(metric, []).append(metric_value(results, metric))
    for row in table.values():
        for entry in row.values():
            entry["stats"] = {m: _stats(v) for m, v in entry["values"].items()}
    return {"experiment": cfg.name, "config": str(cfg.source), "seeds": cfg.seeds, "metrics": cfg.metrics,
            "primary_metric": cfg.primary_metric, "rows": [f"{m} / {t}" for m, _, t in rows(cfg)],
            "test_sets": cfg.test_sets, "cells": table}


def _stats(values: Sequence[float | None]) -> dict[str, Any] | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return None
    arr = np.asarray(finite, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr)}


def _cell_text(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return "n/a"
    text = f"{100 * stats['mean']:.1f}"
    return text + (f" ± {100 * stats['std']:.1f}" if stats["n"] > 1 else "")


def render_tables(cfg: ExperimentConfig, summary: Mapping[str, Any]) -> str:
    lines = [f"# {cfg.name}: cross-dataset results", ""]
    if cfg.description:
        lines += [cfg.description.strip(), ""]
    lines.append(f"Values in %, mean ± sample std over seeds {cfg.seeds} (zero-shot rows: one deterministic run). "
                 f"Rows: model / training set; columns: test sets. Config: `{cfg.source}`.")
    for metric in cfg.metrics:
        lines += ["", f"## {metric}", "", "| model / training set | " + " | ".join(cfg.test_sets) + " |",
                  "|---|" + "---:|" * len(cfg.test_sets)]
        for row in summary["rows"]:
            cells = summary["cells"].get(row, {})
            lines.append(f"| {row} | " + " | ".join(
                _cell_text((cells.get(t) or {}).get("stats", {}).get(metric)) for t in cfg.test_sets) + " |")
    return "\n".join(lines) + "\n"


def cross_dataset_matrix(cfg: ExperimentConfig, summary: Mapping[str, Any], metric: str | None = None):
    """(panels, row labels, column labels, means P x R x C, stds) of a metric: train set x test set per model."""
    metric = metric or cfg.primary_metric
    train_sets = list(cfg.train_sets)
    panels = [m.name for m in cfg.models]
    means = np.full((len(panels), len(train_sets), len(cfg.test_sets)), np.nan)
    stds = np.full_like(means, np.nan)
    for p, model in enumerate(cfg.models):
        for i, train_set in enumerate(train_sets):
            row = f"{model.base} / {train_set}" if train_set == ZERO_SHOT else f"{model.name} / {train_set}"
            for j, test_set in enumerate(cfg.test_sets):
                stats = ((summary["cells"].get(row) or {}).get(test_set) or {}).get("stats", {}).get(metric)
                if stats:  # one run (zero-shot): no spread to show
                    means[p, i, j] = stats["mean"]
                    stds[p, i, j] = stats["std"] if stats["n"] > 1 else np.nan
    return panels, train_sets, list(cfg.test_sets), means, stds


def write_tables(cfg: ExperimentConfig, summary: Mapping[str, Any]) -> dict[str, Path]:
    from .plots import plot_matrix

    out = cfg.output
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text(render_tables(cfg, summary), encoding="utf-8")
    panels, train_sets, test_sets, means, stds = cross_dataset_matrix(cfg, summary)
    lines = [f"# {cfg.name}: cross-dataset matrix ({cfg.primary_metric}, %)", ""]
    for p, model in enumerate(panels):
        lines += [f"## {model}", "", "| training set \\ test set | " + " | ".join(test_sets) + " |",
                  "|---|" + "---:|" * len(test_sets)]
        for i, t in enumerate(train_sets):
            cells = []
            for j in range(len(test_sets)):
                m, s = means[p, i, j], stds[p, i, j]
                cells.append("n/a" if not np.isfinite(m) else f"{100 * m:.1f}"
                             + (f" ± {100 * s:.1f}" if np.isfinite(s) else ""))
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
    (out / "cross_dataset.md").write_text("\n".join(lines), encoding="utf-8")
    png = plot_matrix(100 * means, train_sets, test_sets, out / "cross_dataset.png", errors=100 * stds,
                      title=f"{cfg.name}: {cfg.primary_metric} (%)", value_format="{:.1f}", panels=panels)
    return {"summary": out / "summary.json", "table": out / "table.md", "matrix": out / "cross_dataset.md",
            "png": png}


# --- CLI ------------------------------------------------------------------------------------------------------


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("experiment", help="run a train x test grid and write Table-I style results",
                              description=__doc__.splitlines()[0])
    p.add_argument("config", help="experiment YAML (see config/experiments/)")
    p.add_argument("--output", type=output_dir_arg("--output"), help="output folder (default: the config's `output`)")
    p.add_argument("--device", help="override the config's device (cpu | cuda | cuda:N)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and whether they are done; run nothing")
    p.add_argument("--force-eval", action="store_true", help="re-evaluate cells that already have results")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_experiment)


def cmd_experiment(args: argparse.Namespace) -> int:
    from ..core.models import ModelLoadError
    from ..training.config import TrainConfigError

    try:
        cfg = load_experiment(args.config, output=args.output, device=args.device, check_paths=not args.dry_run)
        summary = run_experiment(cfg, progress=args.progress, force_eval=args.force_eval, dry_run=args.dry_run)
    except (ExperimentConfigError, TrainConfigError, DatasetError, ModelLoadError) as exc:
        print(f"demoprof experiment: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:  # a training or evaluation run failed; finished cells are kept
        print(f"demoprof experiment: failed: {exc} (finished cells are kept; run again to continue)",
              file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"{summary['todo']} of {summary['cells']} cells to run")
        return 0
    print(render_tables(cfg, summary))
    print(f"wrote {cfg.output / 'table.md'}, {cfg.output / 'cross_dataset.md'}, {cfg.output / 'cross_dataset.png'} "
          f"({summary['seconds_this_run']} s)")
    return 0
