"""Training settings: the TrainConfig dataclass, and reading it from YAML (config/train.yaml) and the CLI.

Every setting has one name, shared by the YAML file, `demoprof train --<name>` and the experiment grid's
`training:` section; a bad value fails before anything loads, with the key and what was expected.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from ..core.model_meta import ATTRIBUTE_SCORING
from ..core.taxonomy import ATTRIBUTE_NAMES, CLASSES
from ..core.yaml_files import read_yaml
from .augment import AUGMENTATIONS
from .mim import MIM_TARGETS

SELECTIONS = ("mean_f1", "joint_f1")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INT_LISTS = ("seeds", "train_repeat")


class TrainConfigError(ValueError):
    """A training setting that cannot work; the message names the key and what was expected."""


@dataclass
class TrainConfig:
    """Every training setting; config/train.yaml documents each one."""

    model: str = "clip"
    models_dir: str = ""
    train: list[str] = field(default_factory=list)
    train_repeat: list[int] = field(default_factory=list)  # copies of each train source per epoch; [] = 1 each
    val: list[str] = field(default_factory=list)
    val_fraction: float = 0.2
    split_seed: int = 0
    attributes: list[str] = field(default_factory=lambda: list(ATTRIBUTE_NAMES))
    coarse_labels: str = "omit"   # omit | sample: caption UTKFace 'Asian'/'Others' rows without race, or with a drawn fine class
    prompts_file: str = ""
    attribute_scoring: str = ""   # "" = the base model's | prompts | descriptions (core/scorer.py)
    output: str = "runs/finetune"
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 10
    patience: int = 3
    selection: str = "mean_f1"
    batch_size: int = 64
    eval_batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    min_lr: float = 0.0
    grad_clip: float = 1.0
    augment: str = "none"         # none | faces: flip, zoom, shift, brightness/contrast (training/augment.py)
    precision: str = "auto"
    mim: bool = False
    mim_weight: float = 1.0
    mim_target: str = "codebook"
    mask_ratio: float = 0.4
    mim_fraction: float = 1.0
    mim_codebook_size: int = 512
    mim_head_layers: int = 1
    mim_kmeans_iters: int = 20
    mim_kmeans_vectors: int = 65536
    mim_kmeans_seed: int = 0
    max_steps_per_epoch: int = 0
    device: str = "auto"
    workers: int = 2
    cache: str = ""
    check_images: bool = True
    resume: bool = False
    strict: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        if not isinstance(data, Mapping):
            raise TrainConfigError(f"expected a mapping of settings, got {type(data).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise TrainConfigError(f"unknown settings {unknown}; expected some of {sorted(names)}")
        values = {}
        for key, value in data.items():
            values[key] = _coerce(key, value, cls.__dataclass_fields__[key])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise TrainConfigError(f"{key}={getattr(self, key)!r}: expected {expected}")

        need(bool(self.train), "train", "at least one training data set (CSV, JSONL or folder)")
        need(not self.train_repeat or len(self.train_repeat) == len(self.train), "train_repeat",
             f"one count per train source ({len(self.train)}), or none")
        need(all(n >= 1 for n in self.train_repeat), "train_repeat", "counts >= 1")
        need(bool(self.val) or all(n == 1 for n in self.train_repeat), "train_repeat",
             "a separate val set when a source is repeated (a split would put copies of one image on both sides)")
        need(0.0 < self.val_fraction < 1.0, "val_fraction", "a fraction in (0, 1)")
        need(bool(self.attributes) and all(a in CLASSES for a in self.attributes), "attributes",
             f"a non-empty subset of {list(ATTRIBUTE_NAMES)}")
        need(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds", "distinct integers")
        need(self.epochs >= 1, "epochs", ">= 1")
        need(self.patience >= 1, "patience", ">= 1")
        need(self.selection in SELECTIONS, "selection", f"one of {SELECTIONS}")
        need(self.batch_size >= 2, "batch_size", ">= 2 (the contrastive loss needs negatives)")
        need(self.eval_batch_size >= 1, "eval_batch_size", ">= 1")
        need(self.lr > 0, "lr", "> 0")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(0.0 <= self.warmup_fraction < 1.0, "warmup_fraction", "a fraction in [0, 1)")
        need(0.0 <= self.min_lr <= self.lr, "min_lr", "between 0 and lr")
        need(self.grad_clip >= 0, "grad_clip", ">= 0 (0 = off)")
        need(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        need(self.mim_weight >= 0, "mim_weight", ">= 0")
        need(self.mim_target in MIM_TARGETS, "mim_target", f"one of {MIM_TARGETS}")
        need(0.0 < self.mask_ratio < 1.0, "mask_ratio", "a fraction in (0, 1)")
        need(0.0 < self.mim_fraction <= 1.0, "mim_fraction",
             "a fraction in (0, 1]: the share of each batch that gets MIM (1 = every image, as FaRL)")
        need(self.mim_codebook_size >= 2, "mim_codebook_size", ">= 2")
        need(self.mim_head_layers >= 1, "mim_head_layers", ">= 1")
        need(self.mim_kmeans_iters >= 1, "mim_kmeans_iters", ">= 1")
        need(self.mim_kmeans_vectors >= self.mim_codebook_size, "mim_kmeans_vectors", ">= mim_codebook_size")
        need(self.max_steps_per_epoch >= 0, "max_steps_per_epoch", ">= 0 (0 = whole epochs)")
        need(self.workers >= 0, "workers", ">= 0")
        need(self.coarse_labels in ("omit", "sample"), "coarse_labels", "omit or sample")
        need(self.attribute_scoring in ("", *ATTRIBUTE_SCORING), "attribute_scoring",
             f"'' (the base model's) or one of {ATTRIBUTE_SCORING}")
        need(self.augment in AUGMENTATIONS, "augment", f"one of {AUGMENTATIONS}")
        need(not (self.mim and self.mim_target == "codebook" and self.augment != "none"), "augment",
             "none with mim_target codebook (its targets are computed once per un-augmented image)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, f: dataclasses.Field) -> Any:
    """YAML / argparse value -> the field's type, with an error naming the key."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if isinstance(default, list):
            items = [value] if isinstance(value, (str, int)) else list(value)
            if key in INT_LISTS:
                if any(isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()) for v in items):
                    raise ValueError
                return [int(v) for v in items]
            if key == "attributes" and len(items) == 1 and isinstance(items[0], str):
                items = [a.strip() for a in items[0].split(",") if a.strip()]
            return [str(v) for v in items]
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise TrainConfigError(f"{key}={value!r}: expected a {type(default).__name__}") from None


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Settings from a YAML file (None: defaults) with `overrides` (None values ignored) on top."""
    data: dict[str, Any] = {}
    if path:
        data.update(read_yaml(path, TrainConfigError, "config file") or {})
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.from_dict(data)
    except TrainConfigError as exc:
        raise TrainConfigError(f"{path}: {exc}" if path else str(exc)) from None



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with training settings (see config/train.yaml)")
    p.add_argument("--model", help="base model: clip | farl | tiny | checkpoint file | fine-tuned folder")
    p.add_argument("--models-dir", dest="models_dir", help="folder with downloaded weights")
    p.add_argument("--train", nargs="+", help="training data: CSV, JSONL, labels.csv folder or UTKFace folder")
    p.add_argument("--val", nargs="+", help="validation data (default: a stratified split of --train)")
    p.add_argument("--attributes", help="comma-separated subset of age,gender,race to train and select on")
    p.add_argument("--prompts", dest="prompts_file", help="YAML prompt file")
    p.add_argument("--epochs", type=int)
    p.add_argument("--patience", type=int, help="early stopping: epochs without improvement")
    p.add_argument("--seeds", nargs="+", type=int, help="one run per seed, e.g. --seeds 0 1 2 3 4")
    p.add_argument("--mim", action=argparse.BooleanOptionalAction, default=None,
                   help="add FaRL-style masked image modelling to the contrastive loss")
    p.add_argument("--mim-weight", dest="mim_weight", type=float, help="lambda of the MIM loss")
    p.add_argument("--mim-target", dest="mim_target", choices=MIM_TARGETS)
    p.add_argument("--mask-ratio", dest="mask_ratio", type=float)
    p.add_argument("--mim-fraction", dest="mim_fraction", type=float,
                   help="share of each batch that gets MIM, in (0, 1] (1 = every image, as FaRL)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--augment", choices=AUGMENTATIONS, help="none (FLYP's recipe) or faces (flip, zoom, shift, light)")
    p.add_argument("--selection", choices=SELECTIONS)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--output", help="output folder (one seed_<n> subfolder per seed)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, help="data loader worker processes")
    p.add_argument("--cache", help="folder for the decoded uint8 image cache and the MIM codebook")
    p.add_argument("--resume", action="store_true", default=None, help="continue each seed from its last epoch")
    p.add_argument("--strict", action="store_true", default=None, help="fail on the first bad data row")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


#: The argparse destinations that are TrainConfig settings (the rest: --config, -v).
ARG_KEYS = ("model", "models_dir", "train", "val", "attributes", "prompts_file", "epochs", "patience", "seeds",
            "mim", "mim_weight", "mim_target", "mask_ratio", "mim_fraction", "batch_size", "lr", "augment",
            "selection", "precision", "output", "device", "workers", "cache", "resume", "strict", "progress")

