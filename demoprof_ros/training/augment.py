"""Batch augmentation of face images on the device, seeded per step so a run is reproducible.

Why: the face sets frame faces differently (UTKFace crops are tight, FairFace crops carry 1.25x padding, a
detector's crop something in between). A model trained on one framing and scored on another loses accuracy,
so the `faces` policy varies the framing (zoom out and in, small shifts), mirrors, and jitters brightness and
contrast. `none` (the default) keeps FLYP's recipe, which fine-tunes CLIP without augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "faces")


@dataclass(frozen=True)
class FaceAugment:
    """Random flip, zoom (< 1: the face gets smaller, the border repeats), shift and brightness/contrast."""

    zoom: tuple[float, float] = (0.7, 1.1)
    shift: float = 0.06  # of the half-width, in the sampling grid's [-1, 1] units
    brightness: float = 0.15  # in normalised units (about 0.15 x the channel std)
    contrast: float = 0.2

    def __call__(self, x: torch.Tensor, seed: tuple[int, ...]) -> torch.Tensor:
        """x: a normalised float batch B x C x H x W; returns an augmented batch of the same shape."""
        b = x.shape[0]
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([0xA06, *seed]).generate_state(1)[0]))
        u = torch.rand(b, 5, generator=g)
        zoom = self.zoom[0] + (self.zoom[1] - self.zoom[0]) * u[:, 0]
        flip = torch.where(u[:, 1] < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = flip / zoom
        theta[:, 1, 1] = 1.0 / zoom
        theta[:, :, 2] = (u[:, 2:4] * 2 - 1) * self.shift
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        scale = (1 + (u[:, 4:5] * 2 - 1) * self.contrast).to(x)
        shift = ((torch.rand(b, 1, generator=g) * 2 - 1) * self.brightness).to(x)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        return (out - mean) * scale[:, :, None, None] + mean + shift[:, :, None, None]


def make_augment(name: str) -> FaceAugment | None:
    """The augmentation policy of a training setting (`augment:`); None for `none`."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment={name!r}: expected one of {AUGMENTATIONS}")
    return FaceAugment() if name == "faces" else None
