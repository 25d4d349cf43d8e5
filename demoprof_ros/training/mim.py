"""FaRL-style masked image modelling (MIM) for open_clip ViT image encoders, with stand-in targets.

What FaRL does (Zheng et al., CVPR 2022): blockwise-masked patches (BEiT's block masking, ~40 %) are replaced
by a learnable mask token right after the patch embedding; the masked sequence goes through the image
encoder, a small transformer head (`lm_transformer`), a LayerNorm (`ln_lm`) and a linear head (`lm_head`)
that predicts, for every masked patch, the discrete visual token a frozen dVAE tokenizer (BEiT's / DALL-E's)
assigns to the unmasked image. Cross-entropy on masked positions only; the total loss is contrastive +
lambda * MIM. FaRL feeds the clean and the masked copy of a batch through the encoder in one pass and takes
the contrastive image feature from the clean copy; `encode_with_mim` does the same.

What differs here, honestly:
- The dVAE tokenizer is not available, so the discrete target is a stand-in: **codebook indices from
  k-means** over the patch features of a *frozen copy of the starting image encoder* (spherical k-means,
  torch, seeded, deterministic; built once and cached in a file keyed by the encoder weights and the
  training data). This is closer to "predict what the teacher encoder sees" (as in BEiT v2 / MaskFeat
  with a feature teacher) than to FaRL's pixel-reconstruction tokens; it gives the same *kind* of objective
  (classification of masked patches into K discrete tokens), not FaRL's numbers.
- A cheap alternative, `target="pixels"`: MAE-style per-patch normalised pixels (regression, mean squared
  error on masked patches, a linear head of patch*patch*3 outputs). No teacher forward, no codebook.
- The encoder is open_clip's `VisionTransformer`, used unmodified: `encode_with_mim` re-states its input
  stem (conv1 -> flatten -> class token + positional embedding -> ln_pre) so that the mask token can be
  inserted after the patch embedding, then calls its own transformer and pooling. Patch dropout is
  bypassed on this path (it would break the correspondence of tokens and mask positions).
- Every image masks exactly round(ratio * patches) patches (blocks first, a few single patches to top up
  when blocks do not fit), so each image weighs the same in the loss.
- Starting from FaRL, its released MIM weights (mask_token, lm_transformer, ln_lm, lm_head) are reused
  where names and shapes fit; `lm_head` only fits when the codebook has FaRL's vocabulary size.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import random
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

MIM_TARGETS: tuple[str, ...] = ("codebook", "pixels")
#: Names FaRL uses for its MIM parameters (inside its visual tower); ours match so that they load as is.
MIM_PARAM_PREFIXES: tuple[str, ...] = ("mask_token", "lm_transformer.", "ln_lm.", "lm_head.")


class MIMError(ValueError):
    """MIM cannot run with this model or these settings."""


# --- masking -------------------------------------------------------------------------------------

def block_mask(height: int, width: int, ratio: float, rng: random.Random, min_block: int = 4,
               max_aspect: float = 3.0) -> torch.Tensor:
    """Bool mask over a height x width patch grid (row-major, flattened) with round(ratio * N) True.

    BEiT-style: rectangles of random area (at least `min_block` patches, at most what is still needed) and
    log-uniform aspect ratio are placed at random until the budget is met; after ten placements in a row
    that add nothing usable, the rest is topped up with random single patches. (Python's RNG and numpy:
    this runs per image per step on the CPU, where torch's per-op overhead would dominate.)
    """
    if not 0.0 <= ratio < 1.0:
        raise MIMError(f"mask ratio must be in [0, 1), got {ratio}")
    target = int(round(ratio * height * width))
    mask = np.zeros((height, width), dtype=bool)
    count, failures = 0, 0
    log_aspect = math.log(max_aspect)
    while count < target and failures < 10:
        remaining = target - count
        area = rng.uniform(min(min_block, remaining), remaining)
        aspect = math.exp(rng.uniform(-log_aspect, log_aspect))
        h = max(1, min(height, round(math.sqrt(area * aspect))))
        w = max(1, min(width, round(math.sqrt(area / aspect))))
        top, left = rng.randint(0, height - h), rng.randint(0, width - w)
        region = mask[top:top + h, left:left + w]
        new = h * w - int(region.sum())
        if 0 < new <= remaining:
            region[...] = True
            count += new
            failures = 0
        else:
            failures += 1
    flat = mask.reshape(-1)
    if count < target:
        free = np.flatnonzero(~flat).tolist()
        flat[rng.sample(free, target - count)] = True
    return torch.from_numpy(flat)


def block_masks(batch_size: int, grid: tuple[int, int], ratio: float, seed: int | Iterable[int],
                min_block: int = 4) -> torch.Tensor:
    """B x N bool masks from one seed (an int or a tuple such as (run seed, epoch, step, rank))."""
    entropy = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    rng = random.Random(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
    return torch.stack([block_mask(grid[0], grid[1], ratio, rng, min_block) for _ in range(batch_size)])


# --- encoder path with a mask token --------------------------------------------------------------

def check_vit(visual: nn.Module) -> nn.Module:
    """The image tower, if MIM can hook into it (an open_clip VisionTransformer with token pooling)."""
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise MIMError(f"MIM needs a ViT image encoder (open_clip VisionTransformer), got {type(visual).__name__}")
    if getattr(visual, "attn_pool", None) is not None:
        raise MIMError("MIM does not support ViTs with attentional pooling")
    return visual


def grid_size(visual: nn.Module) -> tuple[int, int]:
    return tuple(int(g) for g in check_vit(visual).grid_size)  # type: ignore[return-value]


def _patch_embed(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """B x N x width patch embeddings (open_clip's conv1 -> flatten -> permute)."""
    x = visual.conv1(images)
    return x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)


def _sequence(visual: nn.Module, patches: torch.Tensor) -> torch.Tensor:
    """Class token + positional embedding + ln_pre, then the transformer: B x (1+N) x width."""
    cls = visual.class_embedding.to(patches.dtype).view(1, 1, -1).expand(patches.shape[0], -1, -1)
    x = torch.cat([cls, patches], dim=1) + visual.positional_embedding.to(patches.dtype)
    return visual.transformer(visual.ln_pre(x))


def _pool_project(visual: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    pooled, _ = visual._pool(hidden)
    return pooled @ visual.proj if visual.proj is not None else pooled


def encode_with_mim(visual: nn.Module, images: torch.Tensor, mask: torch.Tensor | None = None,
                    mask_token: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(clean image features B x D, masked-copy hidden states K x (1+N) x width or None).

    A K x N mask (1 <= K <= B) gives the first K images a masked copy; the clean batch and the masked
    copies go through the encoder as one B + K batch (FaRL: K = B). K < B is the `mim_fraction` setting:
    the masked copy is what makes MIM expensive, so its cost scales with K / B. Without a mask, this
    equals `visual(images)` minus patch dropout.
    """
    check_vit(visual)
    patches = _patch_embed(visual, images)
    if mask is None:
        return _pool_project(visual, _sequence(visual, patches)), None
    if mask_token is None:
        raise MIMError("a mask needs a mask token")
    if mask.ndim != 2 or mask.shape[1] != patches.shape[1] or not 1 <= mask.shape[0] <= patches.shape[0]:
        raise MIMError(f"mask shape {tuple(mask.shape)} does not fit the patch grid {tuple(patches.shape[:2])}: "
                       f"expected K x {patches.shape[1]} with 1 <= K <= {patches.shape[0]}")
    k = mask.shape[0]
    masked = torch.where(mask.unsqueeze(-1), mask_token.to(patches.dtype).view(1, 1, -1), patches[:k])
    hidden = _sequence(visual, torch.cat([patches, masked], dim=0))
    batch = images.shape[0]
    return _pool_project(visual, hidden[:batch]), hidden[batch:]


# --- the trainable MIM part ----------------------------------------------------------------------

class MIMHead(nn.Module):
    """Mask token + FaRL's prediction head (small transformer, LayerNorm, linear) for one ViT."""

    def __init__(self, width: int, heads: int, out_dim: int, layers: int = 1, mlp_ratio: float = 4.0,
                 act_layer: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        from open_clip.transformer import LayerNorm, Transformer

        self.mask_token = nn.Parameter(width ** -0.5 * torch.randn(width))
        self.lm_transformer = Transformer(width, layers, heads, mlp_ratio, act_layer=act_layer)
        self.ln_lm = LayerNorm(width)
        self.lm_head = nn.Linear(width, out_dim)
        nn.init.trunc_normal_(self.lm_head.weight, std=0.02)
        nn.init.zeros_(self.lm_head.bias)

    @classmethod
    def for_visual(cls, visual: nn.Module, out_dim: int, layers: int = 1) -> "MIMHead":
        """A head matching the encoder's width, head count, MLP ratio and activation."""
        block = check_vit(visual).transformer.resblocks[0]
        width = visual.transformer.width
        return cls(width, block.attn.num_heads, out_dim, layers,
                   mlp_ratio=block.mlp.c_fc.out_features / width, act_layer=type(block.mlp.gelu))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """M x out_dim predictions for the masked patches (M = mask.sum(), row-major per image)."""
        x = self.ln_lm(self.lm_transformer(hidden)[:, 1:])
        return self.lm_head(x[mask])


def mim_loss(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Loss on masked positions only: cross-entropy for token targets (B x N, integer), mean squared error
    for pixel targets (B x N x P). Unmasked targets are never read."""
    picked = targets[mask]
    if picked.numel() == 0:
        return predictions.sum() * 0.0
    if not picked.is_floating_point():
        return F.cross_entropy(predictions.float(), picked)
    return F.mse_loss(predictions.float(), picked.float())


# --- targets ---------------------------------------------------------------------------------------

def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """B x 3 x H x W -> B x N x (patch*patch*3), patches in the conv1 (row-major) order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def pixel_targets(images: torch.Tensor, patch: int, eps: float = 1e-6) -> torch.Tensor:
    """MAE's target: each patch's pixels standardised by that patch's own mean and variance."""
    x = patchify(images.float(), patch)
    mean, var = x.mean(dim=-1, keepdim=True), x.var(dim=-1, keepdim=True)
    return (x - mean) / (var + eps).sqrt()


@torch.no_grad()
def patch_features(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """B x N x width L2-normalised patch tokens of the encoder's last layer (after ln_post)."""
    hidden = _sequence(visual, _patch_embed(visual, images))
    return F.normalize(visual.ln_post(hidden[:, 1:]).float(), dim=-1)


@torch.no_grad()
def kmeans(vectors: torch.Tensor, k: int, iters: int = 20, seed: int = 0, chunk: int = 16384) -> torch.Tensor:
    """k x D unit centroids of spherical k-means (cosine similarity), deterministic for a seed and device.

    Initialised from k distinct random vectors; an empty cluster takes the vector its centroid set explains
    worst, so every centroid stays in use.
    """
    vectors = F.normalize(vectors.float(), dim=-1)
    n = vectors.shape[0]
    if n < k:
        raise MIMError(f"k-means needs at least k={k} patch vectors, got {n}; use fewer codes or more images")
    generator = torch.Generator().manual_seed(int(seed))
    centroids = vectors[torch.randperm(n, generator=generator)[:k].to(vectors.device)].clone()
    for _ in range(iters):
        assign, best = _assign(vectors, centroids, chunk)
        sums = torch.zeros_like(centroids)
        for i in range(0, n, chunk):  # one-hot matmul: deterministic on GPUs too, unlike index_add_
            sums += F.one_hot(assign[i:i + chunk], k).to(vectors.dtype).T @ vectors[i:i + chunk]
        counts = torch.bincount(assign, minlength=k)
        empty = (counts == 0).nonzero().squeeze(1)
        if len(empty):
            worst = best.argsort()[:len(empty)]
            sums[empty] = vectors[worst]
        centroids = F.normalize(sums, dim=-1)
    return centroids


def _assign(vectors: torch.Tensor, centroids: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    best, index = [], []
    for i in range(0, vectors.shape[0], chunk):
        values, indices = (vectors[i:i + chunk] @ centroids.T).max(dim=1)
        best.append(values)
        index.append(indices)
    return torch.cat(index), torch.cat(best)


def model_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's parameter names, shapes and values (identifies the teacher encoder)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class CodebookTargets:
    """Token targets: each patch's nearest k-means centroid in a frozen copy of the starting encoder."""

    def __init__(self, teacher: nn.Module, centroids: torch.Tensor) -> None:
        self.teacher = teacher
        self.centroids = centroids

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        features = patch_features(self.teacher, images.to(next(self.teacher.parameters()).dtype))
        return (features @ self.centroids.to(features.device).T).argmax(dim=-1)

    @classmethod
    def build(cls, visual: nn.Module, batches: Callable[[], Iterable[torch.Tensor]], k: int,
              cache_dir: str | Path, data_fingerprint: str, iters: int = 20, seed: int = 0,
              max_vectors: int = 65536, device: str | torch.device = "cpu",
              build: bool = True) -> tuple["CodebookTargets", Path]:
        """Freeze a copy of `visual`; load the codebook from `cache_dir`, or build it from the images that
        `batches()` yields (normalised model input) and save it there. `build=False` only loads (the
        non-zero ranks of a distributed run wait for rank 0 and then load)."""
        teacher = copy.deepcopy(check_vit(visual)).to(device).eval().requires_grad_(False)
        settings = {"k": k, "iters": iters, "seed": seed, "max_vectors": max_vectors, "features": "ln_post+l2",
                    "encoder": model_fingerprint(teacher), "data": data_fingerprint}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        path = Path(cache_dir) / f"mim-codebook-{key[:16]}.safetensors"
        centroids = _load_codebook(path, key)
        if centroids is None:
            if not build:
                raise MIMError(f"codebook cache {path} is missing or does not match")
            log.info("building the MIM codebook (k=%d) from the starting encoder's patch features", k)
            centroids = kmeans(_collect(teacher, batches(), max_vectors, seed), k, iters, seed)
            _save_codebook(path, centroids, key, settings)
        return cls(teacher, centroids.to(device)), path


class CachedTargets:
    """Token targets per training image, computed once and then looked up by the image's dataset index.

    Valid because the teacher is frozen and the trainer feeds every image unaugmented (decode, resize, centre
    crop): an image's targets never change, so recomputing the teacher's forward every step is waste.
    Filled lazily (each process computes only the images it sees, each once); the table is N x patches
    int16 (int32 for codebooks over 32767 codes): 2200 images x 196 patches = 0.9 MB.
    """

    def __init__(self, codebook: CodebookTargets, n_images: int, n_patches: int) -> None:
        self.codebook = codebook
        device = codebook.centroids.device
        dtype = torch.int16 if codebook.size <= torch.iinfo(torch.int16).max else torch.int32
        self.table = torch.zeros(int(n_images), int(n_patches), dtype=dtype, device=device)
        self.known = torch.zeros(int(n_images), dtype=torch.bool, device=device)

    @property
    def size(self) -> int:
        return self.codebook.size

    @property
    def filled(self) -> int:
        """How many images have their targets in the table."""
        return int(self.known.sum())

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """B x N int64 targets of `images` (normalised model input), whose dataset indices are `index`."""
        index = index.to(self.table.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.table.shape[0]):
            raise MIMError(f"image index out of range 0..{self.table.shape[0] - 1} of the target cache")
        missing = (~self.known[index]).nonzero().squeeze(1)
        if missing.numel():
            fresh = self.codebook(images[missing.to(images.device)])
            if fresh.shape[1] != self.table.shape[1]:
                raise MIMError(f"{fresh.shape[1]} patches per image, the target cache holds {self.table.shape[1]}")
            self.table[index[missing]] = fresh.to(self.table.device, self.table.dtype)
            self.known[index[missing]] = True
        return self.table[index].long()


def _collect(teacher: nn.Module, batches: Iterable[torch.Tensor], max_vectors: int, seed: int) -> torch.Tensor:
    """Patch vectors from the batches, subsampled with the seed to at most `max_vectors`."""
    dtype = next(teacher.parameters()).dtype
    device = next(teacher.parameters()).device
    parts = [patch_features(teacher, images.to(device, dtype)).flatten(0, 1).cpu() for images in batches]
    if not parts:
        raise MIMError("no images to build the MIM codebook from")
    vectors = torch.cat(parts)
    if vectors.shape[0] > max_vectors:
        keep = torch.randperm(vectors.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:max_vectors]
        vectors = vectors[keep.sort().values]
    return vectors.to(device)


def _load_codebook(path: Path, key: str) -> torch.Tensor | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            return f.get_tensor("centroids")
    except Exception as exc:  # a truncated or foreign file: rebuild rather than fail
        log.warning("ignoring unreadable codebook cache %s: %s", path, exc)
        return None


def _save_codebook(path: Path, centroids: torch.Tensor, key: str, settings: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"centroids": centroids.float().cpu().contiguous()}, str(tmp),
              metadata={"key": key, "settings": json.dumps(settings, sort_keys=True)})
    tmp.replace(path)


# --- reuse of FaRL's released MIM weights --------------------------------------------------------

def _strip(name: str) -> str:
    return name[len("visual."):] if name.startswith("visual.") else name


def farl_head_layers(mim_state: Mapping[str, torch.Tensor]) -> int | None:
    """Depth of the lm_transformer in a FaRL MIM state (None when it has none)."""
    indices = {int(_strip(k).split(".")[2]) for k in mim_state if _strip(k).startswith("lm_transformer.resblocks.")}
    return max(indices) + 1 if indices else None


def load_mim_state(head: MIMHead, mim_state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy the tensors of `mim_state` whose names and shapes fit `head`.

    Returns (reused names, skipped 'name: reason' lines) so that the caller can report both.
    """
    own = head.state_dict()
    reused, skipped = [], []
    with torch.no_grad():
        for name, tensor in mim_state.items():
            target = _strip(name)
            if target not in own:
                skipped.append(f"{name}: no such parameter in the MIM head")
            elif tuple(own[target].shape) != tuple(tensor.shape):
                skipped.append(f"{name}: shape {tuple(tensor.shape)} != {tuple(own[target].shape)}")
            else:
                own[target].copy_(tensor.to(own[target].dtype))
                reused.append(target)
    return reused, skipped


__all__ = [
    "CachedTargets", "MIMError", "MIMHead", "MIM_TARGETS", "CodebookTargets", "block_mask", "block_masks",
    "check_vit", "encode_with_mim", "farl_head_layers", "grid_size", "kmeans", "load_mim_state", "mim_loss",
    "model_fingerprint", "patch_features", "patchify", "pixel_targets",
]
