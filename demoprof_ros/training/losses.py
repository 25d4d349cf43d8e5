"""FLYP's fine-tuning objective: CLIP's symmetric contrastive loss, unchanged.

FLYP ("Finetune like you pretrain", Goyal et al. 2023) fine-tunes with exactly the pre-training loss: the
image and caption embeddings of a batch are L2-normalised, their cosine similarities scaled by the model's
learnable temperature (`exp(logit_scale)`, capped at 100 as in CLIP), and cross-entropy is taken in both
directions with the matching pair as the target.

Duplicate captions. Here captions are generated from demographic labels, so several images of one batch can
share the same caption text (two "20-29 year old White man" photos). Their captions are then false negatives
for each other. FLYP keeps the plain objective and so do we: the row target stays the image's own caption,
the duplicates only soften the loss (they are identical embeddings, so the softmax splits between them), and
sampled templates and own captions make exact duplicates less frequent. A label-aware variant would no
longer be the pre-training objective FLYP argues for.

Under DistributedDataParallel every rank gathers all ranks' features so that each image meets the negatives
of the whole global batch; the gathered copies carry no gradient except the rank's own slice (the approach of
open_clip's ClipLoss with gather_with_grad=False, local_loss=False), and DDP's gradient averaging combines
the slices.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

#: CLIP caps the temperature at 100 so that logits cannot blow up.
MAX_LOGIT_SCALE = 100.0


def logit_scale_value(logit_scale: torch.Tensor) -> torch.Tensor:
    """The multiplier applied to cosine similarities: exp(parameter), capped at 100."""
    return logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)


@torch.no_grad()
def clamp_logit_scale_(logit_scale: torch.Tensor) -> None:
    """Keep the parameter itself within [0, ln 100] after an optimiser step, as CLIP's training does."""
    logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def gather_features(local: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """All ranks' rows concatenated in rank order; only this rank's rows keep their gradient.

    Every rank must pass the same number of rows (training batches are drop_last and evenly sharded).
    """
    if world_size <= 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts, dim=0)


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over a (global) batch of image/caption pairs (row i matches column i)."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.rank = rank
        self.world_size = world_size

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        """`logit_scale` is the raw parameter (log of the temperature multiplier)."""
        if image_features.shape != text_features.shape:
            raise ValueError(f"image and text features must match, got {tuple(image_features.shape)} "
                             f"and {tuple(text_features.shape)}")
        image = F.normalize(image_features.float(), dim=-1)
        text = F.normalize(text_features.float(), dim=-1)
        all_image = gather_features(image, self.rank, self.world_size)
        all_text = gather_features(text, self.rank, self.world_size)
        logits = logit_scale_value(logit_scale) * all_image @ all_text.T
        targets = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


__all__ = ["ContrastiveLoss", "gather_features", "logit_scale_value", "clamp_logit_scale_", "MAX_LOGIT_SCALE"]
