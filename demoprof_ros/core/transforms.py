"""Image preprocessing shared by the profiler, training and evaluation.

CLIP's own transform goes through PIL; frames here are already BGR numpy arrays, so resizing with OpenCV
and normalising once on the batch tensor saves a conversion and a copy per face. The geometry matches
open_clip's eval transform: resize the shorter side to the model size (bicubic), centre crop.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size`, then the central size x size square (uint8 HxWx3 in, same out)."""
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"cannot resize an empty image ({w}x{h})")
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[top:top + size, left:left + size]


def stack_uint8(images_bgr: Sequence[np.ndarray], size: int) -> np.ndarray:
    """N x size x size x 3 RGB uint8 array (the form the on-disk training cache stores)."""
    out = np.empty((len(images_bgr), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images_bgr):
        cv2.cvtColor(resize_center_crop(image, size), cv2.COLOR_BGR2RGB, dst=out[i])
    return out


def normalize_uint8(batch: torch.Tensor, mean: Sequence[float] = OPENAI_MEAN,
                    std: Sequence[float] = OPENAI_STD, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N x H x W x 3 RGB uint8 tensor (any device) -> N x 3 x H x W normalised float tensor."""
    mean_t = torch.tensor(mean, device=batch.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
    inv_std_t = 1.0 / (torch.tensor(std, device=batch.device, dtype=dtype).view(1, 3, 1, 1) * 255.0)
    return (batch.permute(0, 3, 1, 2).to(dtype) - mean_t) * inv_std_t


def preprocess_bgr(images_bgr: Sequence[np.ndarray], size: int, mean: Sequence[float] = OPENAI_MEAN,
                   std: Sequence[float] = OPENAI_STD, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """BGR uint8 crops -> the model's normalised input batch on `device`."""
    batch = torch.from_numpy(stack_uint8(images_bgr, size)).to(device, non_blocking=True)
    return normalize_uint8(batch, mean, std, dtype)
