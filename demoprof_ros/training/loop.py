"""The training loop of one seed: FineTuneModule, one optimisation step (`train_step`), epochs, resume.

`train_step` is the loop body, used as it is by benchmarks/bench_train.py, so the benchmark times exactly
what a run does. Per step: uint8 images normalised on the device, the first mim_count(B) images masked
(block masks seeded by (seed, epoch, step, rank)) when MIM is on, contrastive (+ weighted MIM) loss under
autocast, backward through a GradScaler, gradient clipping, AdamW, the LR schedule, logit_scale clamped.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..core.models import LoadedModel, load_model
from ..core.prompts import PromptError, PromptSet, load_prompts
from ..core.scorer import encode_text_trimmed
from ..core.transforms import normalize_uint8
from . import outputs
from .augment import make_augment
from .config import TrainConfig, TrainConfigError
from .data import RunLoaders, TrainData, make_loaders
from .datasets import FaceImageDataset, fingerprint
from .distributed import Dist, mean_across, resolve_precision, seed_everything
from .losses import ContrastiveLoss, clamp_logit_scale_
from .mim import (CachedTargets, CodebookTargets, MIMError, MIMHead, block_masks, check_vit, encode_with_mim,
                  farl_head_layers, grid_size, load_mim_state, mim_loss, pixel_targets)
from .optim import CosineWithWarmup, EarlyStopping, make_adamw, param_groups
from .outputs import (RunResult, best_metrics, completed_run, cpu_state, plot_curves, run_meta, write_checkpoint,
                      write_log)
from .validation import selection_score, validate

log = logging.getLogger("demoprof.train")


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


# --- one step ---------------------------------------------------------------------------------------------------

@dataclass
class StepParts:
    """What one optimisation step needs: train_one builds it for a run, bench_train.py for its variants."""

    module: FineTuneModule
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: ContrastiveLoss
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    autocast_dtype: torch.dtype | None = None  # None: plain fp32
    wrapped: nn.Module | None = None  # the DistributedDataParallel wrapper of `module`, if any
    scheduler: Any = None  # stepped after every optimiser step
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # MIM: (x, index) -> targets
    grid: tuple[int, int] | None = None  # MIM: the patch grid
    mask_ratio: float = 0.4
    mim_weight: float = 1.0
    grad_clip: float = 1.0  # 0: off
    augment: Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor] | None = None  # (x, seed) -> x


def train_step(parts: StepParts, images: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor,
               mask_seed: tuple[int, ...]) -> torch.Tensor:
    """One FLYP (+ MIM) step on a batch of uint8 images and tokenised captions (augmented, if the parts say so,
    with `mask_seed` as the seed); the detached
    [loss, contrastive, mim] (mim 0 without a head). A non-finite loss raises FloatingPointError."""
    module, device, optimizer, scaler = parts.module, parts.device, parts.optimizer, parts.scaler
    x = normalize_uint8(images.to(device, non_blocking=True), parts.mean, parts.std)
    if parts.augment is not None:
        x = parts.augment(x, mask_seed)
    tokens = tokens.to(device, non_blocking=True)
    mask = target = None
    if module.mim_head is not None:
        k = module.mim_count(x.shape[0])  # the first k images get MIM (the order is shuffled)
        mask = block_masks(k, parts.grid, parts.mask_ratio, mask_seed).to(device)
        target = parts.targets(x[:k], index[:k])
    with torch.autocast(device.type, dtype=parts.autocast_dtype or torch.float32,
                        enabled=parts.autocast_dtype is not None):
        image_features, text_features, logit_scale, predictions = (parts.wrapped or module)(x, tokens, mask)
    contrastive = parts.loss_fn(image_features, text_features, logit_scale)
    mim = mim_loss(predictions, target, mask) if module.mim_head is not None else torch.zeros((), device=device)
    loss = contrastive + parts.mim_weight * mim
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {float(loss)}; lower --lr or use --precision fp32")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if parts.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(module.parameters(), parts.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if parts.scheduler is not None:
        parts.scheduler.step()
    clamp_logit_scale_(module.clip.logit_scale)
    return torch.stack([loss.detach(), contrastive.detach(), mim.detach()])


# --- MIM parts --------------------------------------------------------------------------------------------------

@dataclass
class MimParts:
    """The MIM head (FaRL weights reused where they fit), its targets and patch grid; empty without MIM."""

    head: MIMHead | None = None
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    grid: tuple[int, int] | None = None
    info: dict[str, Any] | None = None  # meta.json's loss.mim


def build_mim(cfg: TrainConfig, clip: nn.Module, loaded: LoadedModel, data: TrainData, env: Dist) -> MimParts:
    """MimParts for the run's settings (cfg.mim off: empty)."""
    if not cfg.mim:
        return MimParts()
    check_vit(clip.visual)
    patch = int(clip.visual.patch_size[0])
    out_dim = cfg.mim_codebook_size if cfg.mim_target == "codebook" else patch * patch * 3
    layers = farl_head_layers(loaded.mim_state) or cfg.mim_head_layers
    head = MIMHead.for_visual(clip.visual, out_dim, layers).to(env.device)
    reused, skipped = load_mim_state(head, loaded.mim_state) if loaded.mim_state else ([], [])
    if loaded.mim_state:
        log.info("MIM head: reused %s from %s; skipped %s", reused or "nothing", loaded.name, skipped or "none")
    info = {"target": cfg.mim_target, "weight": cfg.mim_weight, "mask_ratio": cfg.mask_ratio,
            "fraction": cfg.mim_fraction, "head_layers": layers, "reused": reused, "skipped": skipped}
    if cfg.mim_target == "codebook":
        codebook, cache = _codebook(cfg, clip, loaded, data, env)
        # the teacher is frozen and images are not augmented: each image's targets are computed once
        targets = CachedTargets(codebook, len(data.train), int(np.prod(grid_size(clip.visual))))
        info.update({"codebook_size": codebook.size, "codebook_cache": str(cache),
                     "kmeans_seed": cfg.mim_kmeans_seed, "kmeans_iters": cfg.mim_kmeans_iters,
                     "targets": "computed once per image (frozen teacher, no augmentation)"})
    else:
        targets = lambda x, index: pixel_targets(x, patch)  # noqa: E731
    return MimParts(head, targets, grid_size(clip.visual), info)


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
    kwargs = dict(k=cfg.mim_codebook_size, cache_dir=cache_dir, data_fingerprint=fingerprint(subset),
                  iters=cfg.mim_kmeans_iters, seed=cfg.mim_kmeans_seed, max_vectors=cfg.mim_kmeans_vectors,
                  device=env.device)
    result = None
    if env.main:
        result = CodebookTargets.build(clip.visual, batches, **kwargs)
    env.barrier()
    if not env.main:
        result = CodebookTargets.build(clip.visual, batches, build=False, **kwargs)
    return result


# --- one seed -------------------------------------------------------------------------------------------------

@dataclass
class SeedRun:
    """Everything one seed's training holds, and its progress (history, early stopping, best weights)."""

    cfg: TrainConfig
    seed: int
    env: Dist
    out: Path
    data: TrainData
    loaded: LoadedModel
    prompts: PromptSet
    mim: MimParts
    parts: StepParts
    loaders: RunLoaders
    meta: dict[str, Any] = field(default_factory=dict)
    stopper: EarlyStopping = field(default_factory=EarlyStopping)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    @property
    def clip(self) -> nn.Module:
        return self.parts.module.clip

    @property
    def resume_path(self) -> Path:
        return self.out / outputs.RESUME_FILE


def train_one(cfg: TrainConfig, seed: int, data: TrainData, env: Dist) -> RunResult:
    """Train one seed into <output>/seed_<seed>; returns the best epoch's model and metrics."""
    out = Path(cfg.output) / f"seed_{seed}"
    done = _check_output(cfg, out, seed, env)
    if done is not None:
        return done
    run = _setup(cfg, seed, data, env, out)
    if cfg.resume:
        _resume(run)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        log.info("seed %d: %d train / %d val samples, %d steps per epoch of %d x %d, up to %d epochs -> %s",
                 seed, len(data.train), len(data.val), run.loaders.steps, run.loaders.batch_size, env.world_size,
                 cfg.epochs, out)
    for epoch in range(run.start_epoch, cfg.epochs):
        started = time.perf_counter()
        train_stats = _train_epoch(run, epoch)
        if env.main:
            _end_epoch(run, epoch, train_stats, started)
        if env.broadcast(run.stopper.should_stop if env.main else None):
            if env.main:
                log.info("seed %d: early stop after epoch %d (no gain for %d epochs)", seed, epoch + 1,
                         cfg.patience)
            break
    return _finish(run)


def _check_output(cfg: TrainConfig, out: Path, seed: int, env: Dist) -> RunResult | None:
    """Refuse to overwrite a run unless resuming; a finished run found when resuming is returned as it is."""
    resume_path = out / outputs.RESUME_FILE
    occupied = env.broadcast(resume_path.exists() or (out / "model.safetensors").exists() if env.main else None)
    if occupied and not cfg.resume:
        raise TrainConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --output")
    if cfg.resume and not resume_path.exists():
        done = completed_run(out, seed)
        if done is not None:
            if env.main:
                log.info("seed %d: %s already holds a complete run; kept as it is", seed, out)
            return done
    return None


def _setup(cfg: TrainConfig, seed: int, data: TrainData, env: Dist, out: Path) -> SeedRun:
    """Seeded model, MIM parts, module (DDP-wrapped on several processes), loaders, optimiser, schedule."""
    seed_everything(seed)
    device = env.device
    autocast_dtype = resolve_precision(cfg.precision, device)
    loaded = load_model(cfg.model, device=device, models_dir=cfg.models_dir or None)
    clip = loaded.model.float().train()
    try:
        prompts = load_prompts(cfg.prompts_file or None)
    except PromptError as exc:
        raise TrainConfigError(str(exc)) from None
    mim = build_mim(cfg, clip, loaded, data, env)
    module = FineTuneModule(clip, mim.head, cfg.mim_fraction)
    wrapped: nn.Module = module
    if env.world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    loaders = make_loaders(cfg, data, loaded.image_size, prompts, seed, env)
    optimizer = make_adamw(param_groups(module, cfg.weight_decay), cfg.lr)
    total = loaders.steps * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, CosineWithWarmup(round(cfg.warmup_fraction * total), total, cfg.min_lr / cfg.lr))
    parts = StepParts(module, optimizer, torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16),
                      ContrastiveLoss(env.rank, env.world_size), loaded.mean, loaded.std, device, autocast_dtype,
                      wrapped, scheduler, mim.targets, mim.grid, cfg.mask_ratio, cfg.mim_weight, cfg.grad_clip,
                      make_augment(cfg.augment))
    meta = run_meta(cfg, seed, loaded, prompts, data, mim.info, loaders.batch_size, env.world_size, autocast_dtype)
    return SeedRun(cfg, seed, env, out, data, loaded, prompts, mim, parts, loaders, meta,
                   EarlyStopping(cfg.patience))


def _resume(run: SeedRun) -> None:
    """Load resume.pt (weights, optimiser, scheduler, scaler, early stopping, history) when there is one."""
    path, parts = run.resume_path, run.parts
    if not path.exists():
        if run.env.main:
            log.info("nothing to resume in %s; starting afresh", run.out)
        return
    state = torch.load(path, map_location=parts.device, weights_only=True)
    parts.module.clip.load_state_dict(state["model"])
    if run.mim.head is not None:
        if "mim_head" not in state:
            raise TrainConfigError(f"{path} was written without MIM; resume with the same --mim setting")
        run.mim.head.load_state_dict(state["mim_head"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    run.stopper.load_state_dict(state["stopper"])
    run.history = list(state["history"])
    run.start_epoch = int(state["epoch"]) + 1
    if run.env.main:
        log.info("resuming %s after epoch %d (best %s at epoch %s)", run.out, run.start_epoch - 1,
                 run.stopper.best, run.stopper.best_epoch)
    if run.stopper.should_stop:
        run.start_epoch = run.cfg.epochs


def _train_epoch(run: SeedRun, epoch: int) -> dict[str, float]:
    """One epoch of train_step; the mean losses over every process."""
    cfg, env, steps = run.cfg, run.env, run.loaders.steps
    loader = run.loaders.epoch_loader(epoch)
    (run.parts.wrapped or run.parts.module).train()
    sums = {"loss": 0.0, "contrastive": 0.0, "mim": 0.0}
    bar = _progress(cfg.progress and env.main, steps, f"seed {run.seed} epoch {epoch + 1}/{cfg.epochs}")
    for step, (images, index, captions) in enumerate(loader):
        if step >= steps:
            break
        tokens = run.loaded.tokenizer(captions)
        try:
            values = train_step(run.parts, images, tokens, index, (run.seed, epoch, step, env.rank)).tolist()
        except FloatingPointError as exc:
            raise FloatingPointError(f"seed {run.seed} epoch {epoch + 1} step {step}: {exc}") from None
        for key, value in zip(("loss", "contrastive", "mim"), values):
            sums[key] += value
        bar.update(1)
        bar.set_postfix(loss=f"{values[0]:.3f}")
    bar.close()
    return {k: mean_across(v / max(steps, 1), env, run.parts.device) for k, v in sums.items()}


def _end_epoch(run: SeedRun, epoch: int, train_stats: dict[str, float], started: float) -> None:
    """Rank 0: validate, log, keep the best weights (checkpoint), write log.csv, curves.png, resume.pt."""
    cfg, parts, clip, head = run.cfg, run.parts, run.clip, run.mim.head
    metrics = validate(dataclasses.replace(run.loaded, model=clip), run.prompts, cfg.attributes, run.data.val,
                       run.loaders.val_loader, parts.device, parts.autocast_dtype,
                       loss_batch_size=run.loaders.batch_size, attribute_scoring=run.meta["attribute_scoring"])
    score = selection_score(metrics, cfg.attributes, cfg.selection)
    improved = run.stopper.update(score, epoch + 1)
    row = {"epoch": epoch + 1, "train_loss": train_stats["loss"], "train_contrastive": train_stats["contrastive"],
           "train_mim": train_stats["mim"] if head is not None else float("nan"),
           **metrics, "score": score, "best": improved, "lr": parts.optimizer.param_groups[0]["lr"],
           "seconds": round(time.perf_counter() - started, 2)}
    run.history.append(row)
    log.info("seed %d epoch %d: train loss %.4f, val loss %.4f, %s %.4f%s", run.seed, epoch + 1,
             row["train_loss"], row["val_loss"], cfg.selection, score, " (best)" if improved else "")
    if improved:
        run.best_state = cpu_state(clip)
        write_checkpoint(run.out, clip, run.loaded, run.meta, run.history, epoch + 1, score, head, complete=False)
    write_log(run.out / outputs.LOG_FILE, run.history)
    plot_curves(run.out / outputs.PLOT_FILE, run.history, cfg.attributes)
    outputs.save_resume(run.resume_path, {
        "model": clip.state_dict(), **({"mim_head": head.state_dict()} if head is not None else {}),
        "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(), "stopper": run.stopper.state_dict(), "epoch": epoch,
        "history": run.history, "seed": run.seed})


def _finish(run: SeedRun) -> RunResult:
    """Rank 0: the best epoch's weights back in the model, the final checkpoint, resume.pt removed."""
    stopper, clip, env = run.stopper, run.clip, run.env
    result = RunResult(run.seed, run.out, stopper.best_epoch, stopper.best, {}, run.history)
    if env.main:
        if stopper.best_epoch is None:
            raise RuntimeError(f"seed {run.seed}: no epoch produced a finite validation score; check the "
                               "validation labels and the enabled attributes")
        best_state = run.best_state
        if best_state is None:  # resumed after the best epoch: its weights are the saved checkpoint
            best_state = load_model(str(run.out), device="cpu").model.state_dict()
        clip.load_state_dict(best_state)
        clip.eval()
        write_checkpoint(run.out, clip, run.loaded, run.meta, run.history, stopper.best_epoch, stopper.best,
                         run.mim.head, complete=True, stopped_early=len(run.history) < run.cfg.epochs)
        run.resume_path.unlink(missing_ok=True)
        result.best_metrics = best_metrics(run.history, stopper.best_epoch)
        result.loaded = dataclasses.replace(run.loaded, model=clip,
                                            mim_state=outputs.mim_out(run.mim.head, run.loaded) or {},
                                            source=run.out)
    env.barrier()
    return result


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)
