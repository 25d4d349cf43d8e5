"""Rebuild the shipped model in one command: splits, ImageNet start, FLYP training, test, install.

    python -m demoprof_ros.evaluation.shipped_recipe --config config/train_shipped.yaml [--install]

1. Splits (written as CSVs under <output>/splits, absolute paths, no images copied): a test split that is
   never trained or selected on, stratified by race x gender (FairFace sets: `test_fraction` of each;
   UTKFace: all of `utkface_crop_part1`, which is disjoint from `utkface_extra` by name and near-duplicate,
   see its SOURCE.md); a validation split for model selection (stratified; from `utkface_extra` only images
   with no look-alike in that folder, so look-alike pairs never straddle train and validation). A set with
   `framing: f` trains and validates on PNG copies of its images' central squares (side f), and is tested
   both whole and framed (`test_<set>_framed.csv`).
2. The starting point: core.shipped_model.initial_checkpoint (ImageNet MobileNetV2, random text tower).
3. `demoprof train` (training.trainer.run) with the `training:` settings of the config.
4. `demoprof eval` metrics of the best epoch on each test split, scored whole (test_results.json) and, for
   each set's own images, on the largest face MTCNN finds cropped with the config's `crop_margin`
   (`--detect`: what the CLI and the node score; test_results_detected.json); with --install,
   model.safetensors + meta.json (training record, sha256, the config's `crop_margin`) and a MODEL_CARD.md
   with both are copied to models/<SHIPPED_NAME>/.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from ..core.images import load_image
from ..core.shipped_model import PACKAGE_MODELS, SHIPPED_NAME, initial_checkpoint
from ..training.datasets import Sample, read_dataset, stratified_split, write_labels_csv
from ..training.trainer import load_config, run

log = logging.getLogger(__name__)
DHASH_MAX_DISTANCE = 3   # as utkface_extra/SOURCE.md: 8x8 difference hash within Hamming distance 3


def dhash(path: Path) -> int:
    """64-bit difference hash (grayscale, 9x8 area resize), the look-alike test of utkface_extra/SOURCE.md."""
    import cv2
    gray = cv2.cvtColor(load_image(path), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def lookalike_mask(samples: Sequence[Sample]) -> np.ndarray:
    """True for each sample with a dHash look-alike (Hamming <= 3) elsewhere in the list."""
    hashes = np.array([dhash(s.path) for s in samples], dtype=np.uint64)
    has = np.zeros(len(hashes), dtype=bool)
    for start in range(0, len(hashes), 512):
        block = hashes[start:start + 512, None] ^ hashes[None, :]
        close = np.bitwise_count(block) <= DHASH_MAX_DISTANCE
        close[np.arange(close.shape[0]), np.arange(start, start + close.shape[0])] = False
        has[start:start + close.shape[0]] |= close.any(axis=1)
    return has


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The central square whose side is `fraction` of the image's shorter side."""
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def reframe(samples: Sequence[Sample], fraction: float, folder: Path) -> list[Sample]:
    """Copies of `samples` whose images are center_crop(fraction), written losslessly as PNG into `folder`.

    Why: FairFace's images carry 1.25x padding, so its face fills about half of the side that UTKFace's tight
    crops (94 % of the training faces) give it; trained whole, the few FairFace faces look like another domain.
    """
    import cv2
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"framing: expected a fraction in (0, 1], got {fraction!r}")
    folder.mkdir(parents=True, exist_ok=True)
    out, seen = [], set()
    for s in samples:
        target = folder / f"{s.path.stem}.png"
        if target in seen:
            raise ValueError(f"framing: two images of one set are named {s.path.stem!r}; {folder} keeps one")
        seen.add(target)
        if not target.is_file():
            if not cv2.imwrite(str(target), center_crop(load_image(s.path), fraction)):
                raise OSError(f"could not write {target}")
        out.append(Sample(target, s.labels, s.caption, s.where))
    return out


def make_splits(settings: Mapping[str, Any], data_root: Path, out: Path, limit: int | None = None) -> dict:
    """Write train/val/test CSVs; returns {"train": [path per set], "repeat": [n per set], "val": path,
    "test": {name: path}, "counts": {...}}.

    Splits already written for the same datasets, seed and limit are reused (the look-alike hashes take minutes).
    """
    seed = int(settings.get("split_seed", 0))
    recipe = {"datasets": settings["datasets"], "seed": seed, "limit": limit, "data_root": str(data_root)}
    manifest = out / "splits.json"
    if manifest.is_file():
        done = json.loads(manifest.read_text(encoding="utf-8"))
        if done.get("recipe") == recipe and all(Path(p).is_file() for p in [*done["train"], done["val"],
                                                                              *done["test"].values()]):
            log.info("reusing the splits in %s", out)
            return {**done, "train": [Path(p) for p in done["train"]], "val": Path(done["val"]),
                    "test": {k: Path(v) for k, v in done["test"].items()}}
    keys = ("race", "gender")
    train, repeat, val, tests, counts = [], [], [], {}, {}
    for name, spec in settings["datasets"].items():
        samples, report = read_dataset(data_root / spec["path"])
        if report.skipped:
            log.warning("%s", report.summary())
        if limit:
            samples = random.Random(seed).sample(samples, min(limit, len(samples)))
        role = spec.get("role", "train")
        if role == "test":
            test, rest = samples, []
        elif "test_fraction" in spec:
            rest, test = stratified_split(samples, spec["test_fraction"], seed=seed, keys=keys)
        else:
            rest, test = samples, []
        if test:
            tests[name] = write_labels_csv(out / f"test_{name}.csv", test)
        fraction = float(spec.get("val_fraction", 0.0))
        if rest and fraction > 0:
            pool, kept = rest, []
            if spec.get("group_lookalikes"):
                mask = lookalike_mask(rest)
                pool = [s for s, m in zip(rest, mask) if not m]
                kept = [s for s, m in zip(rest, mask) if m]
                log.info("%s: %d of %d images have a look-alike; kept in train", name, len(kept), len(rest))
            part_train, part_val = stratified_split(pool, fraction * len(rest) / len(pool), seed=seed, keys=keys)
            rest = part_train + kept
        else:
            part_val = []
        if "framing" in spec:  # train and select on the face framed as the other sets frame it
            framing = float(spec["framing"])
            folder = out / "framed" / f"{name}_{framing:g}"
            framed = reframe([*rest, *part_val, *test], framing, folder)  # one call: names checked set-wide
            rest, part_val, framed_test = (framed[:len(rest)], framed[len(rest):len(rest) + len(part_val)],
                                           framed[len(rest) + len(part_val):])
            if framed_test:
                tests[f"{name}_framed"] = write_labels_csv(out / f"test_{name}_framed.csv", framed_test)
        val += part_val
        if rest:  # one train CSV per set, so that `repeat` can oversample a small one (train_repeat)
            train.append(write_labels_csv(out / f"train_{name}.csv", rest))
            repeat.append(int(spec.get("repeat", 1)))
        counts[name] = {"train": len(rest), "val": len(part_val), "test": len(test)}
    splits = {"train": train, "repeat": repeat, "val": write_labels_csv(out / "val.csv", val),
              "test": tests, "counts": counts}
    manifest.write_text(json.dumps({"recipe": recipe, **splits}, indent=1, default=str) + "\n", encoding="utf-8")
    return splits


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install_half(source: Path, target: Path, meta: Mapping[str, Any]) -> str:
    """Copy a checkpoint with its floating-point tensors stored as float16 (<= 30 MB in the repo); its sha256."""
    from ..core.models import read_weights, write_safetensors
    tensors, file_meta = read_weights(source)
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    write_safetensors(target, half, {**file_meta, "name": meta["name"]})
    return sha256(target)


CARD_HEADER = """\
# {name}: the model shipped with demoprof_ros

**Licence: non-commercial research only.** It was trained on UTKFace (non-commercial research only) besides
FairFace (CC BY 4.0) and SDFD; the weights inherit UTKFace's restriction. The image tower started from
torchvision's ImageNet MobileNetV2 weights (BSD-3-Clause).

- Architecture: open_clip CLIP; image tower timm `mobilenetv2_100` (ImageNet start) + linear projection to 256,
  112 px input, ImageNet mean/std; text tower a 4-layer, 128-wide CLIP transformer (random start), context 32,
  CLIP's BPE tokenizer. Scored like CLIP/FaRL against the same 126 full descriptions, each attribute as the
  marginal of that joint softmax (`attribute_scoring: descriptions`, `core/scorer.py`): it was trained on them.
- Crops: 94 % of its training faces are UTKFace's tight crops, so the profiler crops a detected face with
  {margin} of the box around it (`margin: auto` reads meta.json `crop_margin`; CLIP/FaRL and models that
  declare none get FairFace's 0.25).
- `--model auto` uses it when no CLIP/FaRL weights and no fine-tuned run are in the models folder;
  `--model shipped` asks for it by name.
- File: `model.safetensors` (float16 storage, loaded as float32), sha256 `{sha256}`.
- Rebuild: `make shipped-model` (= `python -m demoprof_ros.evaluation.shipped_recipe --config
  config/train_shipped.yaml --install`) on ../shared/data; recipe and data splits are in that config
  (test split never trained or selected on; see the module doc of `evaluation/shipped_recipe.py`).
- Split sizes (train / val / test): {counts}

"""


DETECTED = " (detected face)"  # the card's name suffix of a test set scored on its detected faces


def model_card(test: Mapping[str, Any], meta: Mapping[str, Any], detected: Mapping[str, Any] | None = None) -> str:
    """MODEL_CARD.md: the shipped model's facts, then `demoprof card`'s sections from the test results, each
    test set scored whole and (`detected`) on its detected faces."""
    from .card import render_card
    counts = "; ".join(f"{k} {v['train']} / {v['val']} / {v['test']}" for k, v in meta["split_counts"].items())
    margin = f"{meta['crop_margin']:g}" if "crop_margin" in meta else "0.25 (none declared)"
    header = CARD_HEADER.format(name=meta["name"], sha256=meta["sha256"], counts=counts, margin=margin)
    datasets = {**test["datasets"], **{f"{k}{DETECTED}": v for k, v in ((detected or {}).get("datasets") or {}).items()}}
    installed = {**test, "datasets": datasets,
                 "model": {**test.get("model", {}), "name": meta["name"], "spec": "shipped",
                           "source": f"models/{meta['name']}/model.safetensors"}}
    return header + render_card(installed, meta).split("\n", 1)[1]


def test_results(model_dir: Path, tests: Mapping[str, Path], detect: str | None = None,
                 margin: float | str = "auto") -> dict[str, Any]:
    """`demoprof eval` results of the trained model on each test split (no retrieval, no plots); with
    `detect` on each image's largest detected face, cropped with `margin` (evaluate.EvalSettings)."""
    from .evaluate import EvalSettings, evaluate, make_scorer
    scorer = make_scorer(str(model_dir))
    settings = EvalSettings(retrieval_k=0, progress=False, plots=False, batch_size=64, detect=detect, margin=margin)
    return evaluate(scorer, [str(p) for p in tests.values()], settings)


def install_model(best: Path, models_root: Path, counts: Mapping[str, Any], config: Path,
                  test: Mapping[str, Any], crop_margin: float | None = None,
                  detected: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """models_root/SHIPPED_NAME/: float16 weights, meta.json (training record + sha256), MODEL_CARD.md.

    crop_margin: what `margin: auto` crops with for this model (core/model_meta.declared_crop_margin);
    detected: the test results on detected faces (test_results with detect), for the card.
    """
    target = models_root / SHIPPED_NAME
    target.mkdir(parents=True, exist_ok=True)
    meta = json.loads((best / "meta.json").read_text(encoding="utf-8"))
    meta.update({"name": SHIPPED_NAME, "shipped": True, "split_counts": dict(counts), "recipe": str(config),
                 "storage": "float16 (loaded as float32; half the file of the fp32 training result)",
                 **({"crop_margin": float(crop_margin)} if crop_margin is not None else {})})
    meta["sha256"] = install_half(best / "model.safetensors", target / "model.safetensors", meta)
    (target / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
    (target / "MODEL_CARD.md").write_text(model_card(test, meta, detected), encoding="utf-8")
    return str(target), meta["sha256"]


def data_root(config: Path, settings: Mapping[str, Any]) -> Path:
    """The shared data folder: $DEMOPROF_DATA, else the config's data_root (relative to the config file)."""
    root = Path(os.path.expandvars(os.environ.get("DEMOPROF_DATA") or settings["data_root"]))
    return root if root.is_absolute() else (config.parent / root).resolve()


def build(config: Path, output: Path | None = None, limit: int | None = None,
          overrides: Mapping[str, Any] | None = None, install: Path | None = None) -> dict[str, Any]:
    """Run the whole recipe; returns a summary (paths, counts, test results)."""
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    root = data_root(config, settings)
    out = Path(output or settings["output"])
    splits = make_splits(settings, root, out / "splits", limit)
    init = initial_checkpoint(out / "init", seed=int(settings.get("init_seed", 0)))
    training = {**settings["training"], **(overrides or {}), "model": str(init), "train": [str(p) for p in splits["train"]],
                "train_repeat": splits["repeat"],
                "val": [str(splits["val"])], "output": str(out / "train"),
                **({"cache": str(out / "cache")} if settings["training"].get("cache") else {})}
    cfg = load_config(None, training)
    results, summary = run(cfg)
    best = results[0].output
    test = test_results(best, splits["test"])
    (out / "test_results.json").write_text(json.dumps(test, indent=1, default=str) + "\n", encoding="utf-8")
    own = {k: v for k, v in splits["test"].items() if k in settings["datasets"]}  # not the framed copies
    detected = test_results(best, own, detect="photo", margin=settings.get("crop_margin", "auto"))
    (out / "test_results_detected.json").write_text(json.dumps(detected, indent=1, default=str) + "\n",
                                                    encoding="utf-8")
    info = {"splits": {k: str(v) for k, v in splits.items() if k != "test"} | {"counts": splits["counts"]},
            "model_dir": str(best), "sha256": sha256(best / "model.safetensors"), "test_results": str(out / "test_results.json"),
            "test_results_detected": str(out / "test_results_detected.json")}
    if install is not None:
        info["installed"], info["sha256"] = install_model(best, install, splits["counts"], config, test,
                                                          settings.get("crop_margin"), detected)
    (out / "recipe_summary.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demoprof_ros.evaluation.shipped_recipe", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=Path("config/train_shipped.yaml"))
    p.add_argument("--output", type=Path, help="run folder (default: the config's output)")
    p.add_argument("--limit", type=int, help="use at most this many images per data set (quick check)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps-per-epoch", type=int)
    p.add_argument("--install", action="store_true", help=f"copy the result to models/{SHIPPED_NAME}/")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in {"epochs": args.epochs, "max_steps_per_epoch": args.max_steps_per_epoch}.items()
                 if v is not None}
    info = build(args.config, args.output, args.limit, overrides, PACKAGE_MODELS if args.install else None)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
