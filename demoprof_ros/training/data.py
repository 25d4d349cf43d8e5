"""The data of one training run: the sets read and split (`prepare_data`), FLYP captions, the DataLoaders.

The file formats and the image dataset itself are datasets.py's; this module decides what a run trains and
validates on, and how batches are drawn (seeded per seed, epoch and rank, so a resumed run draws the same).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core.prompts import PromptSet
from .config import TrainConfig
from .datasets import (DatasetError, FaceImageDataset, Sample, captions_for, description_of, fingerprint,
                       has_coarse_label, label_counts, read_dataset, stratified_split)
from .distributed import Dist, subseed

log = logging.getLogger("demoprof.train")


@dataclass
class TrainData:
    """The samples a run trains and validates on, and what meta.json records about them."""

    train: list[Sample]
    val: list[Sample]
    info: dict[str, Any]


def read_sets(paths: Sequence[str], strict: bool, check_images: bool,
              repeat: Sequence[int] = ()) -> tuple[list[Sample], list[dict]]:
    """Every sample of several data sets (set i `repeat[i]` times: oversampling a small set), and each
    reader's report (skipped rows are logged)."""
    samples, reports = [], []
    for i, path in enumerate(paths):
        part, report = read_dataset(path, strict=strict, check_images=check_images)
        if report.skipped:
            log.warning("%s", report.summary())
        samples.extend(part * (repeat[i] if repeat else 1))
        reports.append(report.to_dict())
    return samples, reports


def prepare_data(cfg: TrainConfig) -> TrainData:
    """Read the training (and validation) sets; split off validation when none is given."""
    train, train_reports = read_sets(cfg.train, cfg.strict, cfg.check_images, cfg.train_repeat)
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
    usable = [s for s in train if s.caption or description_of(s, cfg.attributes, cfg.coarse_labels).as_dict()]
    coarse = sum(1 for s in usable if not s.caption and has_coarse_label(s, cfg.attributes))
    if coarse:
        log.warning("%d training samples have a coarse label (e.g. UTKFace Asian/Others): %s (coarse_labels: %s)",
                    coarse, "captioned without that attribute" if cfg.coarse_labels == "omit"
                    else "captioned with one of its fine classes, drawn per caption", cfg.coarse_labels)
    if len(usable) < len(train):
        log.warning("%d training samples have neither a caption nor a label for %s; left out of training",
                    len(train) - len(usable), "/".join(cfg.attributes))
    if len(usable) < 2:
        raise DatasetError(f"too few usable training samples ({len(usable)}) in {', '.join(cfg.train)}")
    info = {
        "train": {"sources": list(cfg.train), "repeat": list(cfg.train_repeat) or [1] * len(cfg.train), "n": len(usable), "fingerprint": fingerprint(usable),
                  "reports": train_reports, "left_out_unlabelled": len(train) - len(usable),
                  "coarse_labelled": coarse, "coarse_labels": cfg.coarse_labels,
                  "labels": label_counts(usable)},
        "val": {"sources": list(cfg.val), "split": split, "n": len(val), "fingerprint": fingerprint(val),
                "reports": val_reports, "labels": label_counts(val)},
    }
    return TrainData(usable, val, info)


class Captioner:
    """FLYP captions: the row's own caption, else a template sampled per call from the description.

    Picklable; each DataLoader worker reseeds its copy (`seed_worker`), the main process per epoch.
    """

    def __init__(self, prompts: PromptSet, attributes: Sequence[str], seed: int | None,
                 coarse: str = "omit") -> None:
        self.prompts, self.attributes, self.coarse = prompts, tuple(attributes), coarse
        self.rng = random.Random(seed) if seed is not None else None

    def __call__(self, sample: Sample) -> str:
        return captions_for(sample, self.prompts, self.rng, self.attributes, self.coarse)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: reseed python / numpy and the worker's captioner from torch's worker seed."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    captioner = getattr(info.dataset, "captioner", None)
    if isinstance(captioner, Captioner) and captioner.rng is not None:
        captioner.rng = random.Random(seed)


def collate(batch: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 images, sample indices, captions) of a batch."""
    images, index, captions = zip(*batch)
    return torch.stack(images), torch.tensor(index), list(captions)



@dataclass
class RunLoaders:
    """A seed's training set, sampler and captioner (a fresh, seeded DataLoader per epoch) and validation."""

    train_set: FaceImageDataset
    sampler: torch.utils.data.DistributedSampler
    captioner: Captioner
    batch_size: int
    steps: int  # per epoch and process
    val_loader: torch.utils.data.DataLoader | None  # rank 0 only
    workers: int
    seed: int
    rank: int
    pin_memory: bool

    def epoch_loader(self, epoch: int) -> torch.utils.data.DataLoader:
        """The epoch's batches: shuffled by (seed, epoch), captions sampled by (seed, epoch, rank)."""
        self.sampler.set_epoch(epoch)
        self.captioner.rng = random.Random(subseed(self.seed, epoch, self.rank))
        return torch.utils.data.DataLoader(
            self.train_set, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=self.workers, collate_fn=collate, worker_init_fn=seed_worker, pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(subseed(self.seed, epoch, self.rank)))


def make_loaders(cfg: TrainConfig, data: TrainData, image_size: int, prompts: PromptSet, seed: int,
                 env: Dist) -> RunLoaders:
    """Batch size (lowered, with a warning, when a process has fewer samples), steps per epoch, loaders."""
    per_rank = len(data.train) // env.world_size
    batch_size = min(cfg.batch_size, per_rank)
    if batch_size < 2:
        raise DatasetError(f"{len(data.train)} training samples are too few for {env.world_size} process(es)")
    if batch_size < cfg.batch_size:
        log.warning("batch size lowered from %d to %d (only %d training samples per process)",
                    cfg.batch_size, batch_size, per_rank)
    cache_dir = cfg.cache or None
    captioner = Captioner(prompts, cfg.attributes, seed=subseed(seed, env.rank), coarse=cfg.coarse_labels)
    train_set = FaceImageDataset(data.train, image_size, captioner=captioner, cache_dir=cache_dir,
                                 write_cache=env.main)
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank,
                                                  shuffle=True, seed=seed, drop_last=True)
    steps = per_rank // batch_size
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    val_loader = None
    if env.main:
        val_set = FaceImageDataset(data.val, image_size, captioner=Captioner(prompts, cfg.attributes, None),
                                   cache_dir=cache_dir)
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.eval_batch_size, shuffle=False,
                                                 num_workers=cfg.workers, collate_fn=collate)
    return RunLoaders(train_set, sampler, captioner, batch_size, steps, val_loader, cfg.workers, seed, env.rank,
                      env.device.type == "cuda")
