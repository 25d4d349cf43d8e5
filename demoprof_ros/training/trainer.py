"""Fine-tuning CLIP / FaRL on demographic image-caption pairs: FLYP contrastive loss + optional FaRL-style MIM.

One run per seed (`seeds`), each writing `<output>/seed_<seed>/` with what the scorer and the ROS node load
directly (`model.safetensors` + `meta.json`, via models.save_checkpoint) and the run's record (`log.csv`,
`curves.png`). `<output>/summary.json` gives mean +- std over the seeds.

Recipe (FLYP, Goyal et al. 2023): the pre-training objective (losses.ContrastiveLoss) on captions built
from the labels ("a photo of a 20-29 year old East Asian woman.", one template sampled per step, or the
row's own caption), AdamW (lr 1e-5, weight decay 0.1, betas (0.9, 0.98), eps 1e-6 as in CLIP's training;
no decay on biases, norms, embeddings, the mask token and logit_scale), cosine schedule with linear warm-up,
gradient clipping, bf16/fp16 autocast on GPU and fp32 on CPU. After every epoch the zero-shot head is rebuilt from the fine-tuned text tower (a fresh
scorer.ZeroShotScorer) and validation macro-F1 is measured per enabled attribute.

Model selection: `selection: mean_f1` (default) is the mean macro-F1 over the enabled attributes that have
validation labels - each attribute counts the same however many classes it has; `joint_f1` is the macro-F1
of the arg-max full description (the paper's joint task) over samples labelled for every enabled attribute.
Coarse validation labels (UTKFace race 'Asian', 'Others') are scored in the coarse vocabulary with the
predicted probabilities merged into it (metrics.merge_to_coarse); samples without a label for an attribute
do not count for it. Early stopping after `patience` epochs without improvement; the best epoch's weights
are what the output holds.

Bookkeeping: everything is seeded (python, numpy, torch, the data order and the caption sampling per epoch,
the MIM masks per step), so a run resumed from `resume.pt` (weights, optimiser, scheduler, scaler, early
stopping, history; saved after every epoch, loaded with weights_only=True, removed when the run completes)
continues exactly where it stopped. GPU kernels are not forced deterministic (too slow), so GPU runs match
closely rather than bit for bit.

Multi-GPU: `torchrun --nproc_per_node N -m demoprof_ros.train ...` runs DistributedDataParallel (NCCL on
GPUs, gloo on CPU). `batch_size` is per process; the contrastive loss sees the global batch. Validation,
checkpoints and logs happen on rank 0 only.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn

from .. import __version__
from .datasets import (DatasetError, FaceImageDataset, Sample, captions_for, description_of, fingerprint,
                       label_counts, read_dataset, stratified_split)
from .losses import ContrastiveLoss, clamp_logit_scale_
from ..evaluation.metrics import classification_report, coarse_vocab_for, merge_to_coarse
from .mim import (MIM_TARGETS, CachedTargets, CodebookTargets, MIMError, MIMHead, block_masks, check_vit,
                  encode_with_mim, farl_head_layers, grid_size, load_mim_state, mim_loss, pixel_targets)
from ..core.models import LoadedModel, ModelLoadError, load_model, save_checkpoint
from ..core.prompts import PromptError, PromptSet, load_prompts
from ..core.scorer import ZeroShotScorer, encode_text_trimmed
from ..core.taxonomy import ATTRIBUTE_NAMES, CLASSES, Description
from ..core.transforms import normalize_uint8

log = logging.getLogger("demoprof.train")

RESUME_FILE = "resume.pt"
LOG_FILE = "log.csv"
PLOT_FILE = "curves.png"
SUMMARY_FILE = "summary.json"
SELECTIONS = ("mean_f1", "joint_f1")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ADAM_BETAS, ADAM_EPS = (0.9, 0.98), 1e-6  # CLIP's / open_clip's choice for ViTs


class TrainConfigError(ValueError):
    """A training setting that cannot work; the message names the key and what was expected."""


@dataclass
class TrainConfig:
    """Every training setting; config/train.yaml documents each one."""

    model: str = "clip"
    models_dir: str = ""
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    val_fraction: float = 0.2
    split_seed: int = 0
    attributes: list[str] = field(default_factory=lambda: list(ATTRIBUTE_NAMES))
    prompts_file: str = ""
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
            if key == "seeds":
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
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise TrainConfigError(f"config file {path}: expected a mapping at the top level")
        data.update(loaded or {})
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.from_dict(data)
    except TrainConfigError as exc:
        raise TrainConfigError(f"{path}: {exc}" if path else str(exc)) from None


# --- early stopping and schedule -------------------------------------------------------------------------

class EarlyStopping:
    """Tracks the best validation score (higher is better); stops after `patience` epochs without a gain."""

    def __init__(self, patience: int = 3, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best: float = -math.inf
        self.best_epoch: int | None = None
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's score; True when it is a new best (NaN never is)."""
        if not math.isnan(value) and (self.best_epoch is None or value > self.best + self.min_delta):
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


class CosineWithWarmup:
    """LR factor: linear warm-up over `warmup` steps, then cosine from 1 to min_ratio at `total` steps."""

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0) -> None:
        self.warmup, self.total, self.min_ratio = int(warmup), max(int(total), 1), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only; biases, norms, embeddings, mask token, logit_scale not."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        skip = (param.ndim < 2 or "embedding" in name or name.endswith("mask_token") or "logit_scale" in name)
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    """AdamW, fused where torch supports it for these parameters (CPU and CUDA: one kernel instead of a
    loop over tensors - 30x faster steps for a tiny model on CPU), else the default implementation."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)


# --- distributed and seeding -----------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's object on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    want = device if device not in ("", "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(want)
    except RuntimeError:
        raise TrainConfigError(f"device={device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainConfigError(f"device={device!r}: CUDA is not available here; use --device cpu")
        if world > 1:
            dev = torch.device("cuda", local)
        if dev.index is not None:
            torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _subseed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for plain fp32 (always on CPU)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


# --- data --------------------------------------------------------------------------------------------------

@dataclass
class TrainData:
    train: list[Sample]
    val: list[Sample]
    info: dict[str, Any]


def read_sets(paths: Sequence[str], strict: bool, check_images: bool) -> tuple[list[Sample], list[dict]]:
    samples, reports = [], []
    for path in paths:
        part, report = read_dataset(path, strict=strict, check_images=check_images)
        if report.skipped:
            log.warning("%s", report.summary())
        samples.extend(part)
        reports.append(report.to_dict())
    return samples, reports


def prepare_data(cfg: TrainConfig) -> TrainData:
    """Read the training (and validation) sets; split off validation when none is given."""
    train, train_reports = read_sets(cfg.train, cfg.strict, cfg.check_images)
    val_reports: list[dict] = []
    if cfg.val:
        val, val_reports = read_sets(cfg.val, cfg.strict, cfg.check_images)
        split = "given"
    else:
        keys = [a for a in ("gender", "race", "age") if a in cfg.attributes]
        try:
            train, val = stratified_split(train, cfg.val_fraction, seed=cfg.split_seed, keys=keys)
        except ValueError as exc:
            raise DatasetError(f"cannot split a validation set off the training data: {exc}") from None
        split = f"stratified by {'/'.join(keys)}, fraction {cfg.val_fraction}, seed {cfg.split_seed}"
    usable = [s for s in train if s.caption or description_of(s, cfg.attributes).as_dict()]
    if len(usable) < len(train):
        log.warning("%d training samples have neither a caption nor a label for %s; left out of training",
                    len(train) - len(usable), "/".join(cfg.attributes))
    if len(usable) < 2:
        raise DatasetError(f"too few usable training samples ({len(usable)}) in {', '.join(cfg.train)}")
    info = {
        "train": {"sources": list(cfg.train), "n": len(usable), "fingerprint": fingerprint(usable),
                  "reports": train_reports, "left_out_unlabelled": len(train) - len(usable),
                  "labels": label_counts(usable)},
        "val": {"sources": list(cfg.val), "split": split, "n": len(val), "fingerprint": fingerprint(val),
                "reports": val_reports, "labels": label_counts(val)},
    }
    return TrainData(usable, val, info)


class Captioner:
    """FLYP captions: the row's own caption, else a template sampled per call from the description.

    Picklable; each DataLoader worker reseeds its copy (`seed_worker`), the main process per epoch.
    """

    def __init__(self, prompts: PromptSet, attributes: Sequence[str], seed: int | None) -> None:
        self.prompts, self.attributes = prompts, tuple(attributes)
        self.rng = random.Random(seed) if seed is not None else None

    def __call__(self, sample: Sample) -> str:
        return captions_for(sample, self.prompts, self.rng, self.attributes)


def seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    captioner = getattr(info.dataset, "captioner", None)
    if isinstance(captioner, Captioner) and captioner.rng is not None:
        captioner.rng = random.Random(seed)


def _collate(batch: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images, index, captions = zip(*batch)
    return torch.stack(images), torch.tensor(index), list(captions)


# --- the trained module -------------------------------------------------------------------------------------

class FineTuneModule(nn.Module):
    """CLIP plus the optional MIM head, as one module so that DDP sees every trained parameter.

    `mim_fraction` < 1: MIM (masked copy, head, loss) runs on the first `mim_count(B)` images of each batch
    only (the batch order is shuffled); the contrastive loss still sees every image. The masked copy is
    what makes MIM cost (it doubles the image tower), so the extra cost scales with the fraction.
    """

    def __init__(self, clip: nn.Module, mim_head: MIMHead | None = None, mim_fraction: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < mim_fraction <= 1.0:
            raise MIMError(f"mim_fraction must be in (0, 1], got {mim_fraction}")
        self.clip = clip
        self.mim_head = mim_head
        self.mim_fraction = float(mim_fraction)

    def mim_count(self, batch_size: int) -> int:
        """How many images of a batch get MIM: ceil(fraction x B), at least 1."""
        return max(1, min(batch_size, math.ceil(round(self.mim_fraction * batch_size, 6))))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None):
        """(image features, text features, logit_scale parameter, MIM predictions or None).

        `mask` is mim_count(B) x patches: the masks of the images that get MIM (the first ones)."""
        predictions = None
        if self.mim_head is not None and mask is not None:
            if mask.shape[0] != self.mim_count(images.shape[0]):
                raise MIMError(f"{mask.shape[0]} masks for a batch of {images.shape[0]}; expected "
                               f"{self.mim_count(images.shape[0])} (mim_fraction {self.mim_fraction})")
            image_features, hidden = encode_with_mim(self.clip.visual, images, mask, self.mim_head.mask_token)
            predictions = self.mim_head(hidden, mask)
        else:
            image_features = self.clip.encode_image(images)
        text_features = encode_text_trimmed(self.clip, tokens, normalize=False)  # exact, ~3x less text work
        return image_features, text_features, self.clip.logit_scale, predictions


def mim_state_of(head: MIMHead) -> dict[str, torch.Tensor]:
    """The head's weights under FaRL's checkpoint names (visual.mask_token, visual.lm_head.*, ...)."""
    return {f"visual.{k}": v for k, v in head.state_dict().items()}


# --- validation ---------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(loaded: LoadedModel, prompts: PromptSet, attributes: Sequence[str], samples: Sequence[Sample],
             loader: Iterable, device: torch.device, autocast_dtype: torch.dtype | None,
             loss_batch_size: int = 64) -> dict[str, Any]:
    """Validation loss and zero-shot macro-F1 per attribute and for the joint description, with the text
    head rebuilt from the model's current text tower (a fresh ZeroShotScorer).

    The loss uses fixed captions (first template) over chunks of `loss_batch_size` (pass the training batch
    size: the contrastive loss grows with the number of negatives, so only equal sizes compare)."""
    model = loaded.model
    was_training = model.training
    model.eval()
    scorer = ZeroShotScorer(loaded, prompts, attributes=attributes, joint_top_k=0)
    loss_fn = ContrastiveLoss()
    probs: dict[str, list[torch.Tensor]] = {a: [] for a in scorer.attributes}
    joint: list[torch.Tensor] = []
    order: list[torch.Tensor] = []
    loss_sum, n = 0.0, 0
    for images, index, captions in loader:
        x = normalize_uint8(images.to(device, non_blocking=True), loaded.mean, loaded.std)
        tokens = loaded.tokenizer(captions).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            image_features = model.encode_image(x)
            text_features = encode_text_trimmed(model, tokens, normalize=False)
        for i in range(0, len(captions), loss_batch_size):  # the training batch size: comparable losses
            if len(captions[i:i + loss_batch_size]) > 1:
                chunk = slice(i, i + loss_batch_size)
                loss_sum += float(loss_fn(image_features[chunk], text_features[chunk], model.logit_scale)) \
                    * len(captions[chunk])
                n += len(captions[chunk])
        embeddings = F.normalize(image_features.float(), dim=-1)
        for attribute, p in scorer.attribute_probs(embeddings).items():
            probs[attribute].append(p.cpu())
        joint.append(scorer.joint_probs(embeddings).argmax(dim=-1).cpu())
        order.append(index)
    model.train(was_training)
    index = torch.cat(order).tolist()
    ordered = [samples[i] for i in index]
    result: dict[str, Any] = {"val_loss": loss_sum / n if n else float("nan")}
    for attribute in scorer.attributes:
        result[f"f1_{attribute}"] = attribute_f1(attribute, torch.cat(probs[attribute]).numpy(),
                                                 [s.labels.get(attribute) for s in ordered])
    result["f1_joint"] = joint_f1(scorer.descriptions, torch.cat(joint).tolist(), ordered, scorer.attributes)
    return result


def attribute_f1(attribute: str, probs: np.ndarray, labels: Sequence[str | None]) -> float:
    """Macro-F1 of the arg-max class; coarse labels scored in their coarse vocabulary; NaN if unlabelled."""
    keep = np.array([label is not None for label in labels], dtype=bool)
    if not keep.any():
        return float("nan")
    labels = [label for label in labels if label is not None]
    probs = probs[keep]
    vocab = coarse_vocab_for(labels, attribute)
    if tuple(vocab) != tuple(CLASSES[attribute]):
        probs = merge_to_coarse(probs, attribute, vocab).values
        merged = merge_to_coarse(labels, attribute, vocab)
        labels, probs = merged.values, probs[merged.kept]
    predicted = [vocab[i] for i in probs.argmax(axis=1)]
    return float(classification_report(labels, predicted, vocab)["macro_f1"])


def joint_f1(descriptions: Sequence[Description], predicted: Sequence[int], samples: Sequence[Sample],
             attributes: Sequence[str]) -> float:
    """Macro-F1 over full descriptions for samples with a fine label for every enabled attribute."""
    y_true, y_pred = [], []
    for sample, index in zip(samples, predicted):
        labels = {a: sample.labels.get(a) for a in attributes}
        if all(labels[a] in CLASSES[a] for a in attributes):
            y_true.append(Description(**labels))
            y_pred.append(descriptions[index])
    if not y_true:
        return float("nan")
    return float(classification_report(y_true, y_pred, list(descriptions))["macro_f1"])


def selection_score(metrics: Mapping[str, float], attributes: Sequence[str], selection: str) -> float:
    if selection == "joint_f1":
        return float(metrics["f1_joint"])
    values = [metrics[f"f1_{a}"] for a in attributes if not math.isnan(metrics[f"f1_{a}"])]
    return float(np.mean(values)) if values else float("nan")


# --- outputs ------------------------------------------------------------------------------------------------

LOG_COLUMNS = ("epoch", "train_loss", "train_contrastive", "train_mim", "val_loss", "f1_age", "f1_gender",
               "f1_race", "f1_joint", "score", "best", "lr", "seconds")


def write_log(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
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


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    """NaN -> None throughout, so that meta.json and summary.json are strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# --- one training run -----------------------------------------------------------------------------------------

@dataclass
class RunResult:
    seed: int
    output: Path
    best_epoch: int | None
    best_score: float
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    loaded: LoadedModel | None = None  # the best weights, in memory (rank 0)


def train_one(cfg: TrainConfig, seed: int, data: TrainData, env: Dist) -> RunResult:
    """Train one seed into <output>/seed_<seed>; returns the best epoch's model and metrics."""
    out = Path(cfg.output) / f"seed_{seed}"
    resume_path = out / RESUME_FILE
    occupied = env.broadcast(resume_path.exists() or (out / "model.safetensors").exists() if env.main else None)
    if occupied and not cfg.resume:
        raise TrainConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --output")
    if cfg.resume and not resume_path.exists():
        done = _completed_run(out, seed)
        if done is not None:
            if env.main:
                log.info("seed %d: %s already holds a complete run; kept as it is", seed, out)
            return done
    seed_everything(seed)
    device = env.device
    autocast_dtype = resolve_precision(cfg.precision, device)
    loaded = load_model(cfg.model, device=device, models_dir=cfg.models_dir or None)
    clip = loaded.model.float().train()
    try:
        prompts = load_prompts(cfg.prompts_file or None)
    except PromptError as exc:
        raise TrainConfigError(str(exc)) from None

    # --- MIM parts: head (FaRL weights reused where they fit) and targets ---------------------------------
    head, targets, mim_info = None, None, None
    if cfg.mim:
        check_vit(clip.visual)
        patch = int(clip.visual.patch_size[0])
        out_dim = cfg.mim_codebook_size if cfg.mim_target == "codebook" else patch * patch * 3
        layers = farl_head_layers(loaded.mim_state) or cfg.mim_head_layers
        head = MIMHead.for_visual(clip.visual, out_dim, layers).to(device)
        reused, skipped = load_mim_state(head, loaded.mim_state) if loaded.mim_state else ([], [])
        if loaded.mim_state:
            log.info("MIM head: reused %s from %s; skipped %s", reused or "nothing", loaded.name, skipped or "none")
        mim_info = {"target": cfg.mim_target, "weight": cfg.mim_weight, "mask_ratio": cfg.mask_ratio,
                    "fraction": cfg.mim_fraction, "head_layers": layers, "reused": reused, "skipped": skipped}
        if cfg.mim_target == "codebook":
            codebook, cache = _codebook(cfg, clip, loaded, data, env)
            # the teacher is frozen and images are not augmented: each image's targets are computed once
            targets = CachedTargets(codebook, len(data.train), int(np.prod(grid_size(clip.visual))))
            mim_info.update({"codebook_size": codebook.size, "codebook_cache": str(cache),
                             "kmeans_seed": cfg.mim_kmeans_seed, "kmeans_iters": cfg.mim_kmeans_iters,
                             "targets": "computed once per image (frozen teacher, no augmentation)"})
        else:
            targets = lambda x, index: pixel_targets(x, patch)  # noqa: E731

    module = FineTuneModule(clip, head, cfg.mim_fraction)
    wrapped: nn.Module = module
    if env.world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)

    # --- data -------------------------------------------------------------------------------------------------
    per_rank = len(data.train) // env.world_size
    batch_size = min(cfg.batch_size, per_rank)
    if batch_size < 2:
        raise DatasetError(f"{len(data.train)} training samples are too few for {env.world_size} process(es)")
    if batch_size < cfg.batch_size:
        log.warning("batch size lowered from %d to %d (only %d training samples per process)",
                    cfg.batch_size, batch_size, per_rank)
    cache_dir = cfg.cache or None
    captioner = Captioner(prompts, cfg.attributes, seed=_subseed(seed, env.rank))
    train_set = FaceImageDataset(data.train, loaded.image_size, captioner=captioner, cache_dir=cache_dir,
                                 write_cache=env.main)
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank,
                                                  shuffle=True, seed=seed, drop_last=True)
    steps = per_rank // batch_size
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    val_loader = None
    if env.main:
        val_set = FaceImageDataset(data.val, loaded.image_size, captioner=Captioner(prompts, cfg.attributes, None),
                                   cache_dir=cache_dir)
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.eval_batch_size, shuffle=False,
                                                 num_workers=cfg.workers, collate_fn=_collate)

    # --- optimisation -----------------------------------------------------------------------------------------
    optimizer = make_adamw(param_groups(module, cfg.weight_decay), cfg.lr)
    total = steps * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, CosineWithWarmup(round(cfg.warmup_fraction * total), total, cfg.min_lr / cfg.lr))
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    loss_fn = ContrastiveLoss(env.rank, env.world_size)
    stopper = EarlyStopping(cfg.patience)
    history: list[dict[str, Any]] = []
    start_epoch, best_state = 0, None

    if cfg.resume and resume_path.exists():
        state = torch.load(resume_path, map_location=device, weights_only=True)
        module.clip.load_state_dict(state["model"])
        if head is not None:
            if "mim_head" not in state:
                raise TrainConfigError(f"{resume_path} was written without MIM; resume with the same --mim setting")
            head.load_state_dict(state["mim_head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["stopper"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        if env.main:
            log.info("resuming %s after epoch %d (best %s at epoch %s)", out, start_epoch - 1, stopper.best,
                     stopper.best_epoch)
        if stopper.should_stop:
            start_epoch = cfg.epochs
    elif cfg.resume and env.main:
        log.info("nothing to resume in %s; starting afresh", out)

    meta_base = {
        "base_model": cfg.model, "base_name": loaded.name, "taxonomy": {a: list(CLASSES[a]) for a in ATTRIBUTE_NAMES},
        "attributes": list(cfg.attributes), "prompts": prompts.to_dict(), "mean": list(loaded.mean),
        "std": list(loaded.std), "seed": seed,
        "loss": {"contrastive": "FLYP: CLIP symmetric InfoNCE, learnable temperature (max 100)",
                 "mim": mim_info},
        "optimizer": {"name": "AdamW", "lr": cfg.lr, "weight_decay": cfg.weight_decay, "min_lr": cfg.min_lr,
                      "betas": list(ADAM_BETAS), "eps": ADAM_EPS,
                      "warmup_fraction": cfg.warmup_fraction, "grad_clip": cfg.grad_clip,
                      "batch_size_per_process": batch_size, "world_size": env.world_size,
                      "precision": str(autocast_dtype or torch.float32).replace("torch.", "")},
        "selection": cfg.selection, "data": data.info, "package_version": __version__,
        "torch_version": torch.__version__, "config": cfg.to_dict(),
    }
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        log.info("seed %d: %d train / %d val samples, %d steps per epoch of %d x %d, up to %d epochs -> %s",
                 seed, len(data.train), len(data.val), steps, batch_size, env.world_size, cfg.epochs, out)

    grid = grid_size(clip.visual) if head is not None else None
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        captioner.rng = random.Random(_subseed(seed, epoch, env.rank))
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=cfg.workers,
            collate_fn=_collate, worker_init_fn=seed_worker, pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(_subseed(seed, epoch, env.rank)))
        wrapped.train()
        sums = {"loss": 0.0, "contrastive": 0.0, "mim": 0.0}
        bar = _progress(cfg.progress and env.main, steps, f"seed {seed} epoch {epoch + 1}/{cfg.epochs}")
        for step, (images, index, captions) in enumerate(loader):
            if step >= steps:
                break
            x = normalize_uint8(images.to(device, non_blocking=True), loaded.mean, loaded.std)
            tokens = loaded.tokenizer(captions).to(device, non_blocking=True)
            mask = target = None
            if head is not None:
                k = module.mim_count(x.shape[0])  # the first k images get MIM (the order is shuffled)
                mask = block_masks(k, grid, cfg.mask_ratio, (seed, epoch, step, env.rank)).to(device)
                target = targets(x[:k], index[:k])
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                image_features, text_features, logit_scale, predictions = wrapped(x, tokens, mask)
            contrastive = loss_fn(image_features, text_features, logit_scale)
            mim = mim_loss(predictions, target, mask) if head is not None else torch.zeros((), device=device)
            loss = contrastive + cfg.mim_weight * mim
            if not torch.isfinite(loss):
                raise FloatingPointError(f"seed {seed} epoch {epoch + 1} step {step}: loss is {float(loss)}; "
                                         "lower --lr or use --precision fp32")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            clamp_logit_scale_(clip.logit_scale)
            values = torch.stack([loss.detach(), contrastive.detach(), mim.detach()]).tolist()
            for key, value in zip(("loss", "contrastive", "mim"), values):
                sums[key] += value
            bar.update(1)
            bar.set_postfix(loss=f"{values[0]:.3f}")
        bar.close()
        train_stats = {k: _mean_across(v / max(steps, 1), env, device) for k, v in sums.items()}

        row: dict[str, Any] | None = None
        if env.main:
            metrics = evaluate(dataclasses.replace(loaded, model=clip), prompts, cfg.attributes, data.val,
                               val_loader, device, autocast_dtype, loss_batch_size=batch_size)
            score = selection_score(metrics, cfg.attributes, cfg.selection)
            improved = stopper.update(score, epoch + 1)
            row = {"epoch": epoch + 1, "train_loss": train_stats["loss"],
                   "train_contrastive": train_stats["contrastive"],
                   "train_mim": train_stats["mim"] if head is not None else float("nan"),
                   **metrics, "score": score, "best": improved, "lr": optimizer.param_groups[0]["lr"],
                   "seconds": round(time.perf_counter() - started, 2)}
            history.append(row)
            log.info("seed %d epoch %d: train loss %.4f, val loss %.4f, %s %.4f%s", seed, epoch + 1,
                     row["train_loss"], row["val_loss"], cfg.selection, score, " (best)" if improved else "")
            if improved:
                best_state = _cpu_state(clip)
                save_checkpoint(out, clip, loaded.model_cfg,
                                {**meta_base, "epochs": _jsonable(history), "best_epoch": epoch + 1, "best_score": score,
                                 "complete": False},
                                mim_state=_mim_out(head, loaded))
            write_log(out / LOG_FILE, history)
            plot_curves(out / PLOT_FILE, history, cfg.attributes)
            _save_resume(resume_path, {
                "model": clip.state_dict(), **({"mim_head": head.state_dict()} if head is not None else {}),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "stopper": stopper.state_dict(), "epoch": epoch,
                "history": history, "seed": seed})
        stop = env.broadcast(stopper.should_stop if env.main else None)
        if stop:
            if env.main:
                log.info("seed %d: early stop after epoch %d (no gain for %d epochs)", seed, epoch + 1,
                         cfg.patience)
            break

    result = RunResult(seed, out, stopper.best_epoch, stopper.best, {}, history)
    if env.main:
        if stopper.best_epoch is None:
            raise RuntimeError(f"seed {seed}: no epoch produced a finite validation score; check the "
                               "validation labels and the enabled attributes")
        if best_state is None:  # resumed after the best epoch: its weights are the saved checkpoint
            best_state = load_model(str(out), device="cpu").model.state_dict()
        clip.load_state_dict(best_state)
        clip.eval()
        best = next(r for r in history if r["epoch"] == stopper.best_epoch)
        save_checkpoint(out, clip, loaded.model_cfg,
                        {**meta_base, "epochs": _jsonable(history), "best_epoch": stopper.best_epoch,
                         "best_score": stopper.best, "complete": True,
                         "stopped_early": len(history) < cfg.epochs},
                        mim_state=_mim_out(head, loaded))
        resume_path.unlink(missing_ok=True)
        result.best_metrics = {k: best[k] for k in best if k.startswith("f1_") or k in ("val_loss", "score")}
        result.loaded = dataclasses.replace(loaded, model=clip, mim_state=_mim_out(head, loaded) or {},
                                            source=out)
    env.barrier()
    return result


def _completed_run(out: Path, seed: int) -> RunResult | None:
    """The result of a finished run in `out` (meta.json says complete), else None."""
    from ..core.models import read_meta

    if not (out / "model.safetensors").is_file():
        return None
    meta = read_meta(out)
    if not meta.get("complete"):
        return None
    history = [{k: (float("nan") if v is None else v) for k, v in row.items()} for row in meta.get("epochs", [])]
    best = next((r for r in history if r["epoch"] == meta.get("best_epoch")), {})
    metrics = {k: v for k, v in best.items() if k.startswith("f1_") or k in ("val_loss", "score")}
    return RunResult(seed, out, meta.get("best_epoch"), float(meta.get("best_score", float("nan"))), metrics,
                     history, load_model(str(out), device="cpu"))


def _mim_out(head: MIMHead | None, loaded: LoadedModel) -> dict[str, torch.Tensor] | None:
    """MIM weights for the checkpoint: the trained head, or the base model's (FaRL) passed through."""
    if head is not None:
        return mim_state_of(head)
    return dict(loaded.mim_state) or None


def _codebook(cfg: TrainConfig, clip: nn.Module, loaded: LoadedModel, data: TrainData,
              env: Dist) -> tuple[CodebookTargets, Path]:
    """Rank 0 builds (or loads) the k-means codebook of the starting encoder; the other ranks then load it."""
    n_patches = int(np.prod(grid_size(clip.visual)))
    n_images = min(len(data.train), math.ceil(cfg.mim_kmeans_vectors / n_patches))
    subset = [data.train[i] for i in sorted(random.Random(cfg.mim_kmeans_seed).sample(range(len(data.train)),
                                                                                       n_images))]

    def batches() -> Iterable[torch.Tensor]:
        dataset = FaceImageDataset(subset, loaded.image_size)
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval_batch_size, num_workers=cfg.workers)
        for images, _ in loader:
            yield normalize_uint8(images.to(env.device), loaded.mean, loaded.std)

    cache_dir = Path(cfg.cache) if cfg.cache else Path(cfg.output) / "cache"
    fp = fingerprint(subset)
    kwargs = dict(k=cfg.mim_codebook_size, cache_dir=cache_dir, data_fingerprint=fp, iters=cfg.mim_kmeans_iters,
                  seed=cfg.mim_kmeans_seed, max_vectors=cfg.mim_kmeans_vectors, device=env.device)
    result = None
    if env.main:
        result = CodebookTargets.build(clip.visual, batches, **kwargs)
    env.barrier()
    if not env.main:
        result = CodebookTargets.build(clip.visual, batches, build=False, **kwargs)
    return result


def _mean_across(value: float, env: Dist, device: torch.device) -> float:
    if env.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / env.world_size


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)


# --- all seeds ------------------------------------------------------------------------------------------------

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


def run(cfg: TrainConfig) -> tuple[list[RunResult], dict[str, Any]]:
    """Every seed of `cfg`, then the summary (written by rank 0 to <output>/summary.json)."""
    env = setup_distributed(cfg.device)
    try:
        data = prepare_data(cfg)
        results = [train_one(cfg, seed, data, env) for seed in cfg.seeds]
        summary = summarize(results, cfg)
        if env.main:
            path = Path(cfg.output) / SUMMARY_FILE
            path.write_text(json.dumps(_jsonable({**summary, "config": cfg.to_dict()}), indent=2, default=str) + "\n",
                            encoding="utf-8")
        return results, summary
    finally:
        if env.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def summary_line(summary: Mapping[str, Any], output: str) -> str:
    score = summary["metrics"].get("score")
    text = f"{score['mean']:.4f} ± {score['std']:.4f}" if score else "n/a"
    parts = [f"{k.replace('f1_', '')} {v['mean']:.3f}±{v['std']:.3f}" for k, v in summary["metrics"].items()
             if k.startswith("f1_")]
    return (f"demoprof-train: {len(summary['seeds'])} seed(s), val {summary['selection']} {text} "
            f"(best epochs {summary['best_epochs']}; {', '.join(parts)}) -> {output}")


# --- command line -----------------------------------------------------------------------------------------------

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
    p.add_argument("--selection", choices=SELECTIONS)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--output", help="output folder (one seed_<n> subfolder per seed)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, help="data loader worker processes")
    p.add_argument("--cache", help="folder for the decoded uint8 image cache and the MIM codebook")
    p.add_argument("--resume", action="store_true", default=None, help="continue each seed from its last epoch")
    p.add_argument("--strict", action="store_true", default=None, help="fail on the first bad data row")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


_ARG_KEYS = ("model", "models_dir", "train", "val", "attributes", "prompts_file", "epochs", "patience", "seeds",
             "mim", "mim_weight", "mim_target", "mask_ratio", "mim_fraction", "batch_size", "lr", "selection",
             "precision", "output", "device", "workers", "cache", "resume", "strict", "progress")


def cmd_train(args: argparse.Namespace) -> int:
    """`demoprof train`: exit 0 done, 2 bad settings or data, 1 the run failed."""
    overrides = {k: getattr(args, k, None) for k in _ARG_KEYS}
    try:
        cfg = load_config(args.config, overrides)
        results, summary = run(cfg)
    except (TrainConfigError, DatasetError, ModelLoadError, MIMError) as exc:
        print(f"demoprof train: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, FloatingPointError, OSError) as exc:
        print(f"demoprof train: failed: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary_line(summary, cfg.output))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="fine-tune CLIP / FaRL (FLYP + optional MIM)",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=cmd_train)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (`python -m demoprof_ros.train`, torchrun); same options as `demoprof train`."""
    parser = argparse.ArgumentParser(prog="demoprof-train", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose + 1, 2),
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return cmd_train(args)


train_main = main

if __name__ == "__main__":
    sys.exit(main())
