"""Which crop margin suits a model: accuracy of detected face crops on the shipped recipe's val split, per margin.

`margin: auto` crops with the model's meta.json `crop_margin` (core/model_meta.py); for the shipped model that
number is chosen here, on val rows (never on test ones). Each val image is taken whole, as the recipe's data
sets hold it (framed rows are mapped back to their original file), its largest face found by each detector,
cropped at each margin and scored; a missed face counts as wrong. Race only where the label is a fine class.

    .venv/bin/python benchmarks/bench_margin.py [--model shipped] [--detectors mtcnn,blazeface]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_info, machine_line  # noqa: E402
from bench_shipped import accuracy, fine, labels_of  # noqa: E402

from demoprof_ros.core.detection import build_detector, crop_face  # noqa: E402
from demoprof_ros.core.images import load_image  # noqa: E402
from demoprof_ros.core.taxonomy import CLASSES  # noqa: E402
from demoprof_ros.evaluation.evaluate import make_scorer  # noqa: E402
from demoprof_ros.evaluation.shipped_recipe import data_root  # noqa: E402
from demoprof_ros.training.datasets import read_dataset  # noqa: E402


def whole_val_rows(config: Path, splits: Path) -> dict[str, list]:
    """The recipe's val rows per data set, each pointing at its original (whole) image."""
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    root = data_root(config, settings)
    originals = {}
    for name, spec in settings["datasets"].items():
        samples, _ = read_dataset(root / spec["path"])
        originals[name] = ((root / spec["path"]).resolve(), {s.path.stem: s for s in samples})
    val, _ = read_dataset(splits / "val.csv")
    rows: dict[str, list] = {}
    for s in val:
        path = s.path.resolve()
        if path.parent.parent.name == "framed":  # <splits>/framed/<set>_<fraction>/<stem>.png
            name = path.parent.name.rsplit("_", 1)[0]
            rows.setdefault(name, []).append(originals[name][1][path.stem])
            continue
        name = next(n for n, (folder, _) in originals.items() if folder in path.parents)
        rows.setdefault(name, []).append(s)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "config" / "train_shipped.yaml")
    p.add_argument("--splits", type=Path, default=ROOT / "runs" / "shipped" / "splits")
    p.add_argument("--model", default="shipped")
    p.add_argument("--detectors", default="mtcnn,blazeface", help="each one on its own (the CLI's, the node's)")
    p.add_argument("--margins", default="0,0.05,0.1,0.15,0.2,0.25,0.3")
    p.add_argument("--limit", type=int, default=0, help="val rows per data set (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "shipped" / "bench_margin.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    margins = [float(m) for m in args.margins.split(",")]
    scorer = make_scorer(args.model)
    info = machine_info()
    report = {"machine_line": machine_line(info), "model": scorer.loaded.name, "margins": margins,
              "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sets": {}}
    for name, samples in whole_val_rows(args.config, args.splits).items():
        samples = samples[:args.limit] if args.limit else samples
        images = [load_image(s.path) for s in samples]
        truth = {a: [fine(s.labels.get(a), a) for s in samples] for a in CLASSES}
        entry = report["sets"][name] = {"n": len(samples)}
        for chain in args.detectors.split(","):
            detector = build_detector((chain,), min_face_size=12, max_faces=4)
            faces = [max(found, key=lambda d: d.width * d.height) if (found := detector.detect(im)) else None
                     for im in images]
            hit = [i for i, f in enumerate(faces) if f is not None]
            per_margin = {}
            for margin in margins:
                pred = {a: ["missed"] * len(samples) for a in CLASSES}
                if hit:
                    crops = [crop_face(images[i], faces[i], margin=margin) for i in hit]
                    got = labels_of(scorer, scorer.encode_images(crops))
                    for a in CLASSES:
                        for j, i in enumerate(hit):
                            pred[a][i] = got[a][j]
                per_margin[f"{margin:g}"] = {a: accuracy(pred[a], truth[a], range(len(samples)))[0]
                                             for a in CLASSES if any(t is not None for t in truth[a])}
            entry[detector.name] = {"found": len(hit), "accuracy": per_margin}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """Per set and detector, each attribute's accuracy per margin, then the mean over sets and attributes."""
    margins = [f"{m:g}" for m in report["margins"]]
    lines = [f"Machine: {report['machine_line']}; model {report['model']}; val split, whole images, misses wrong", "",
             "| val set | detector (found/n) | attribute | " + " | ".join(f"margin {m}" for m in margins) + " |",
             "|---|---|---|" + "---:|" * len(margins)]
    means: dict[str, list[list[float]]] = {}
    for name, entry in report["sets"].items():
        for det, res in entry.items():
            if det == "n":
                continue
            for a in res["accuracy"][margins[0]]:
                row = [res["accuracy"][m][a] for m in margins]
                means.setdefault(det, []).append(row)
                lines.append(f"| {name} | {det} ({res['found']}/{entry['n']}) | {a} | "
                             + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
    for det, rows in means.items():
        lines.append(f"| mean of the rows above | {det} | all | "
                     + " | ".join(f"{100 * v:.1f}" for v in np.mean(rows, axis=0)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
