#!/usr/bin/env python3
"""Every face detector side by side: precision / recall on annotated photos, counts on group photos, latency.

Accuracy: ../shared/data/face_boxes (PASCAL VOC photos with dlib's face boxes, boxes.csv): a detection is a hit
when its IoU with a still unmatched annotated box is >= --iou (greedy, best IoU first); every other detection
is a false positive. That set does not box every small background face, so each false positive is listed
(file, box) to be looked at. Counts on the group photos (test/data/group_photos: Solvay 1927 has 29 people,
the Obama family photo 4; ../shared/data/group_photos adds the European Council photo, ~35 small faces).
Latency: p50 / p95 of FaceDetector.detect on the Obama photo letterboxed into 640x480 and 1280x720 frames,
each detector in turn inside every round (interleaved, so load on a shared machine hits all alike), with 1
and 2 threads (cv2.setNumThreads and torch.set_num_threads), and each p50 as a ratio to Haar's in the same run.

Rows: each back-end present at the same settings (--min-face-size, --max-side, no max_faces cap), BlazeFace
also with tiles and on OpenCV's dnn (the fallback when LiteRT is not installed), plus the two shipped defaults
exactly as configured: "node default" (ProfilerConfig()) and "cli default" (profiler.PHOTO_DEFAULTS, what
`demoprof profile` uses). Latency is timed for the back-end rows,
the node default and Haar at the node's settings (min_face_size changes the cost of MTCNN and Haar, not of
BlazeFace; each ratio is to the Haar row with the same min_face_size); the CLI default is the mtcnn row.
Where the node default is BlazeFace, its time is also split into stages (letterbox, network, decode, weighted
NMS, the rest of detect) at each size and thread count.

    python benchmarks/bench_detection.py                            # everything (~5 min on 2 busy cores)
    python benchmarks/bench_detection.py --runs 3 --threads 1 --sizes 640x480   # smoke
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ROOT, command_line, machine_info, machine_line, markdown_table, summary, timed,  # noqa: E402
                     write_json)

import torch  # noqa: E402

from demoprof_ros.core.detection import DetectorUnavailable, FaceDetector, build_detector  # noqa: E402
from demoprof_ros.core.detection.blazeface import BlazeFaceDetector  # noqa: E402
from demoprof_ros.core.detection.nms import box_overlap, weighted_nms  # noqa: E402
from demoprof_ros.core.images import load_image  # noqa: E402
from demoprof_ros.core.profiler import PHOTO_DEFAULTS, ProfilerConfig  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
GROUP_PHOTOS = {"obama_family_2011.jpg": 4, "solvay_conference_1927.jpg": 29, "european_council_2011.jpg": None}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--face-boxes", default=str(SHARED / "face_boxes"), help="folder with boxes.csv and images/")
    p.add_argument("--iou", type=float, default=0.5, help="least IoU of a hit")
    p.add_argument("--min-face-size", type=int, default=12, help="min_face_size of the back-end rows")
    p.add_argument("--max-side", type=int, default=1920, help="max_side of the back-end rows")
    p.add_argument("--tiles", type=int, nargs="+", default=[2], help="BlazeFace tile settings to add as rows")
    p.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"], help="latency frame sizes WxH")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts for the latency runs")
    p.add_argument("--runs", type=int, default=11, help="timed runs per detector, size and thread count")
    p.add_argument("--annotate", default="", help="write each group photo with every row's boxes to this folder")
    p.add_argument("--out", default="", help="write every number to this JSON file")
    return p.parse_args(argv)


# --- the detectors ------------------------------------------------------------------------------------------

def detector_rows(args: argparse.Namespace) -> list[tuple[str, FaceDetector, dict[str, Any]]]:
    """(row label, detector, settings) for each back-end that runs here and for the two shipped defaults."""
    common = dict(min_face_size=args.min_face_size, max_faces=10_000, max_side=args.max_side)
    wanted: list[tuple[str, str, dict[str, Any]]] = [(n, n, {}) for n in ("scrfd", "yunet", "mtcnn", "blazeface")]
    wanted += [(f"blazeface tiles={t}", "blazeface", {"tiles": t}) for t in args.tiles if t > 0]
    wanted += [("blazeface on opencv dnn", "blazeface", {"runtime": "opencv"}), ("haar", "haar", {})]
    rows = []
    for label, name, extra in wanted:
        settings = {**common, **extra}
        try:
            detector = (BlazeFaceDetector(**settings) if "runtime" in extra
                        else build_detector((name,), **settings))
            rows.append((label, detector, {**settings, "source": detector.source}))
        except DetectorUnavailable as error:
            print(f"# {label}: unavailable here ({error})")
    for label, cfg in (("node default", ProfilerConfig()), ("cli default", ProfilerConfig(**PHOTO_DEFAULTS))):
        settings = dict(min_face_size=cfg.min_face_size, max_faces=cfg.max_faces, max_side=cfg.max_side,
                        tiles=cfg.tiles, score_threshold=cfg.detection_threshold)
        detector = build_detector(cfg.detectors, **settings)
        rows.append((f"{label} ({detector.name})", detector,
                     {"chain": list(cfg.detectors), **settings, "source": detector.source}))
    return rows


# --- accuracy -----------------------------------------------------------------------------------------------

def load_face_boxes(folder: Path) -> dict[str, np.ndarray]:
    """file -> (N, 4) x1, y1, x2, y2 boxes from boxes.csv (file,x,y,w,h)."""
    boxes: dict[str, list[list[float]]] = {}
    with open(folder / "boxes.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
            boxes.setdefault(row["file"], []).append([x, y, x + w, y + h])
    return {k: np.array(v) for k, v in boxes.items()}


def match(found: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[list[float], list[int]]:
    """Greedy best-IoU matching: (IoU of each hit, indices of the unmatched detections)."""
    pairs = sorted(((float(box_overlap(d, truth[t:t + 1])[0]), i, t) for i, d in enumerate(found)
                    for t in range(len(truth))), reverse=True)
    used_d, used_t, ious = set(), set(), []
    for iou, i, t in pairs:
        if iou >= threshold and i not in used_d and t not in used_t:
            used_d.add(i), used_t.add(t), ious.append(iou)
    return ious, [i for i in range(len(found)) if i not in used_d]


def accuracy(detector: FaceDetector, images: dict[str, np.ndarray], truth: dict[str, np.ndarray],
             threshold: float) -> dict[str, Any]:
    hits, ious, false_pos, n_truth = 0, [], [], 0
    for name, image in images.items():
        found = np.array([d.box for d in detector.detect(image)]).reshape(-1, 4)
        iou, unmatched = match(found, truth[name], threshold)
        hits += len(iou)
        ious += iou
        n_truth += len(truth[name])
        false_pos += [{"file": name, "box": [round(float(v)) for v in found[i]]} for i in unmatched]
    n_found = hits + len(false_pos)
    return {"annotated": n_truth, "hits": hits, "false_positives": len(false_pos),
            "recall": hits / n_truth if n_truth else 0.0, "precision": hits / n_found if n_found else 1.0,
            "mean_iou": float(np.mean(ious)) if ious else 0.0, "false_positive_boxes": false_pos}


def group_counts(rows, photos: dict[str, np.ndarray], annotate: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for name, image in photos.items():
        canvas = image.copy() if annotate else None
        for index, (label, detector, _) in enumerate(rows):
            found = detector.detect(image)
            counts.setdefault(label, {})[name] = len(found)
            if canvas is not None:
                colour = tuple(int(c) for c in cv2.applyColorMap(np.uint8([[index * 40 % 256]]),
                                                                 cv2.COLORMAP_JET)[0, 0])
                for d in found:
                    x1, y1, x2, y2 = (int(round(v)) for v in d.box)
                    cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 1)
        if canvas is not None:
            Path(annotate).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(Path(annotate) / name), canvas)
    return counts


# --- latency ------------------------------------------------------------------------------------------------

def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    frame = np.full((height, width, 3), 96, np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    frame[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return frame


def latency(rows, image: np.ndarray, sizes: Sequence[str], threads: Sequence[int], runs: int) -> list[dict]:
    """p50 / p95 wall time per row, frame size and thread count, plus the process CPU time: with one thread
    that is close to what the frame costs on an idle core (the wall time on a shared machine is not)."""
    out = []
    haar_for = {s["min_face_size"]: label for label, d, s in rows if d.name == "haar"}
    for t in threads:
        cv2.setNumThreads(t)
        torch.set_num_threads(t)
        for size in sizes:
            width, height = (int(v) for v in size.lower().split("x"))
            frame = letterbox(image, width, height)
            wall: dict[str, list[float]] = {label: [] for label, _, _ in rows}
            cpu: dict[str, list[float]] = {label: [] for label, _, _ in rows}
            for label, detector, _ in rows:
                detector.detect(frame)  # warm-up: first-call allocations
            for _ in range(runs):
                for label, detector, _ in rows:
                    start = time.process_time()
                    wall[label].append(timed(lambda: detector.detect(frame))[0])
                    cpu[label].append(time.process_time() - start)
            for label, detector, settings in rows:
                stats = summary(wall[label])
                haar = haar_for.get(settings["min_face_size"])
                ratio = stats["median_ms"] / summary(wall[haar])["median_ms"] if haar else None
                out.append({"detector": label, "size": size, "threads": t, **stats, "ratio_to_haar": ratio,
                            "haar_row": haar, "cpu_median_ms": summary(cpu[label])["median_ms"]})
    return out


def blazeface_stages(detector: BlazeFaceDetector, image: np.ndarray, sizes: Sequence[str],
                     threads: Sequence[int], runs: int) -> list[dict]:
    """p50 ms of each stage of one whole-frame BlazeFace detect (the node default's path, no tiles): letterbox
    into the input, the network, anchor decoding, weighted NMS, and the rest of detect() (checks, mapping,
    sorting), the last as the p50 of detect minus the p50s of the others."""
    out = []
    for t in threads:
        cv2.setNumThreads(t)
        for size in sizes:
            width, height = (int(v) for v in size.lower().split("x"))
            frame = letterbox(image, width, height)
            times: dict[str, list[float]] = {k: [] for k in ("letterbox", "network", "decode", "nms", "detect")}
            detector.detect(frame)
            for _ in range(runs):
                clock = time.perf_counter()
                scale, pad = detector._prepare(frame)
                times["letterbox"].append(time.perf_counter() - clock)
                clock = time.perf_counter()
                outputs = detector.runner(detector._input)
                times["network"].append(time.perf_counter() - clock)
                clock = time.perf_counter()
                boxes, scores, points = detector._decode(outputs, scale, pad)
                times["decode"].append(time.perf_counter() - clock)
                clock = time.perf_counter()
                weighted_nms(boxes, scores, points, detector.nms_threshold)
                times["nms"].append(time.perf_counter() - clock)
                clock = time.perf_counter()
                detector.detect(frame)
                times["detect"].append(time.perf_counter() - clock)
            p50 = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
            p50["rest"] = p50["detect"] - sum(p50[k] for k in ("letterbox", "network", "decode", "nms"))
            out.append({"size": size, "threads": t, "runtime": detector.runner.name,
                        **{f"{k}_ms": round(v, 3) for k, v in p50.items()}})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    print(f"# bench_detection | {machine_line(machine, with_threads=False)}\n# {command_line()}\n")
    rows = detector_rows(args)
    folder = Path(args.face_boxes)
    truth = load_face_boxes(folder) if (folder / "boxes.csv").is_file() else {}
    images = {name: load_image(folder / name) for name in truth}
    photos = {}
    for name in GROUP_PHOTOS:
        for base in (ROOT / "test" / "data" / "group_photos", SHARED / "group_photos"):
            if (base / name).is_file():
                photos[name] = load_image(base / name)
                break
    cv2.setNumThreads(max(args.threads))
    torch.set_num_threads(max(args.threads))
    results: dict[str, Any] = {"machine": machine, "command": command_line(), "iou": args.iou,
                               "rows": {label: settings for label, _, settings in rows}}
    if truth:
        results["face_boxes"] = {label: accuracy(d, images, truth, args.iou) for label, d, _ in rows}
    results["group_photos"] = group_counts(rows, photos, args.annotate)
    # Back-end rows, the node default, and Haar at the node's settings (its ratio's baseline); the CLI default
    # is the mtcnn row.
    node = next(r for r in rows if r[0].startswith("node default"))
    haar_node = build_detector(("haar",), **{k: node[2][k] for k in ("min_face_size", "max_faces", "max_side")})
    timed_rows = [r for r in rows if "default" not in r[0]] + [
        node, ("haar (node settings)", haar_node, {**node[2], "chain": ["haar"]})]
    results["latency"] = latency(timed_rows, photos["obama_family_2011.jpg"], args.sizes, args.threads, args.runs)
    if isinstance(node[1], BlazeFaceDetector):
        results["node_stages"] = blazeface_stages(node[1], photos["obama_family_2011.jpg"], args.sizes,
                                                  args.threads, max(args.runs, 20))
    print_tables(results, list(photos))
    write_json(args.out, results)
    return 0


def print_tables(results: dict[str, Any], photos: list[str]) -> None:
    expected = {name: GROUP_PHOTOS[name] for name in photos}
    header = ["detector"]
    if "face_boxes" in results:
        header += [f"recall @IoU{results['iou']}", "precision", "FP", "mean IoU"]
    header += [f"{Path(p).stem.split('_')[0]} ({n if n else '~35'})" for p, n in expected.items()]
    table = []
    for label in results["rows"]:
        row: list[Any] = [label]
        if "face_boxes" in results:
            acc = results["face_boxes"][label]
            row += [f"{acc['hits']}/{acc['annotated']} = {acc['recall']:.2f}", round(acc["precision"], 2),
                    acc["false_positives"], round(acc["mean_iou"], 2)]
        row += [results["group_photos"][label][p] for p in photos]
        table.append(row)
    print(markdown_table(header, table))
    print()
    lat = results["latency"]
    print(markdown_table(["detector", "frame", "threads", "p50 ms", "p95 ms", "x Haar", "CPU p50 ms"],
                         [[r["detector"], r["size"], r["threads"], r["median_ms"], r["p95_ms"],
                           "" if r["ratio_to_haar"] is None else f"{r['ratio_to_haar']:.2f}", r["cpu_median_ms"]]
                          for r in lat]))
    if results.get("node_stages"):
        keys = ("letterbox", "network", "decode", "nms", "rest", "detect")
        print()
        print(markdown_table(["node default stages, p50 ms", "frame", "threads", *keys],
                             [[r["runtime"], r["size"], r["threads"], *(r[f"{k}_ms"] for k in keys)]
                              for r in results["node_stages"]]))


if __name__ == "__main__":
    raise SystemExit(main())
