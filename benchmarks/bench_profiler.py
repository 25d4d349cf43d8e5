#!/usr/bin/env python3
"""Frames/s and faces/s of the per-frame pipeline against a naive open_clip baseline, in the same run.

Ours: `Profiler.__call__` exactly as the CLI and the ROS node run it (to_bgr8, crop_face, one batched image
forward, cached text heads, FaceProfile records), on a random-weight checkpoint loaded through `load_model`.
Baseline: what a first script does: per frame, re-encode every prompt (all captions in one batched
`encode_text`, the kindest naive form), then one `encode_image` forward per face, under `torch.no_grad`.
Both see the same synthetic frames: real face crops (Haar detections on the bundled public-domain group
photos) tiled N to a frame; the detector is bypassed for the scaling study (a stub returns the known boxes)
and timed on its own. Runs of ours and the baseline are interleaved so that load on a shared machine hits
both alike; outputs are compared face by face (labels, joint top-k, probabilities within --atol).

    python benchmarks/bench_profiler.py                       # ViT-B/16 (random weights), CPU, 1/4/8 faces
    python benchmarks/bench_profiler.py --arch tiny-64 --runs 3 --baseline-runs 2   # smoke
"""
from __future__ import annotations

import argparse
import gc
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RANDOM_WEIGHTS_NOTE, ROOT, command_line, cuda_sync, machine_info, machine_line,  # noqa: E402
                     markdown_table, random_checkpoint, set_threads, summary, timed, write_json)

import torch  # noqa: E402

from demoprof_ros.core.detection import build_detector, crop_face  # noqa: E402
from demoprof_ros.core.images import load_image  # noqa: E402
from demoprof_ros.core.profiler import Profiler, ProfilerConfig  # noqa: E402
from demoprof_ros.core.results import Detection  # noqa: E402
from demoprof_ros.core.scorer import ZeroShotScorer, encode_text_trimmed  # noqa: E402
from demoprof_ros.core.taxonomy import CLASSES  # noqa: E402
from demoprof_ros.core.transforms import normalize_uint8, resize_center_crop  # noqa: E402

PHOTOS = ("group_photos/obama_family_2011.jpg", "group_photos/solvay_conference_1927.jpg")
MARGIN = 0.25


# --- synthetic frames ---------------------------------------------------------------------------------------

def face_crops(min_side: int = 40) -> list[np.ndarray]:
    """Face crops (the profiler's 0.25 margin) of the Haar detections in the bundled public-domain group photos,
    largest first (faces smaller than min_side are left out: 3 faces at the default)."""
    detector = build_detector(("haar",), min_face_size=min_side, max_faces=64)
    crops = []
    for name in PHOTOS:
        image = load_image(ROOT / "test" / "data" / name)
        crops += [crop_face(image, d, margin=MARGIN) for d in detector.detect(image)]
    if not crops:
        raise SystemExit("no faces found in test/data/group_photos: cannot build synthetic frames")
    return sorted(crops, key=lambda c: -c.shape[0])


def tiled_frame(crops: Sequence[np.ndarray], n: int, width: int, height: int) -> tuple[np.ndarray, list[Detection]]:
    """A width x height frame holding n face crops on a grid, and their face boxes (margin removed)."""
    cols = math.ceil(math.sqrt(n * width / height))
    rows = math.ceil(n / cols)
    side = int(min(width / cols, height / rows) * 0.9)
    frame = np.full((height, width, 3), 96, np.uint8)
    boxes = []
    for i in range(n):
        r, c = divmod(i, cols)
        x0 = int(c * width / cols + (width / cols - side) / 2)
        y0 = int(r * height / rows + (height / rows - side) / 2)
        frame[y0:y0 + side, x0:x0 + side] = cv2_resize(crops[i % len(crops)], side)
        face = side / (1 + 2 * MARGIN)  # crop_face(margin) of this box gives back the whole tile
        inset = (side - face) / 2
        boxes.append(Detection(box=(x0 + inset, y0 + inset, x0 + inset + face, y0 + inset + face), score=0.99))
    return frame, boxes


def cv2_resize(image: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if image.shape[0] > side else cv2.INTER_CUBIC)


class FixedDetector:
    """Stands in for the detector in the scaling study: returns the boxes the frame was built with."""

    name = "fixed-boxes"

    def __init__(self, boxes: Sequence[Detection]) -> None:
        self.boxes = list(boxes)

    def detect(self, image: np.ndarray) -> list[Detection]:
        return list(self.boxes)


# --- the naive baseline -------------------------------------------------------------------------------------

class NaiveBaseline:
    """Per frame: every prompt re-encoded, one image forward per face, results as plain dicts.

    The text side is the *kindest* naive form: all captions in one `encode_text` batch (chunks of 256, the
    full 77-token context, as open_clip runs them); a loop of one call per class, as the CLIP notebooks
    write it, is slower still (many small batches), so it would only flatter the ratio.
    """

    def __init__(self, loaded, prompts, attributes, descriptions, preprocess: str = "same") -> None:
        self.loaded, self.prompts, self.attributes, self.descriptions = loaded, prompts, attributes, descriptions
        self.device = next(loaded.model.parameters()).device
        self.dtype = next(loaded.model.parameters()).dtype
        self.preprocess = preprocess
        self.last_text_s = 0.0
        if preprocess == "pil":
            from open_clip.transform import image_transform
            self.pil_transform = image_transform(loaded.image_size, is_train=False, mean=loaded.mean,
                                                 std=loaded.std)

    def _ensembles(self, ensembles: list[list[str]]) -> torch.Tensor:
        flat = [t for e in ensembles for t in e]
        tokens = self.loaded.tokenizer(flat).to(self.device)
        emb = torch.cat([self.loaded.model.encode_text(tokens[i:i + 256]) for i in range(0, len(flat), 256)])
        emb = emb.float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        out, start = [], 0
        for e in ensembles:
            mean = emb[start:start + len(e)].mean(dim=0)
            out.append(mean / mean.norm())
            start += len(e)
        return torch.stack(out)

    def _image(self, crop: np.ndarray) -> torch.Tensor:
        if self.preprocess == "pil":
            from PIL import Image
            x = self.pil_transform(Image.fromarray(crop[:, :, ::-1].copy()))[None]
        else:  # the same geometry and normalisation as ours, one face at a time
            rgb = np.ascontiguousarray(resize_center_crop(crop, self.loaded.image_size)[:, :, ::-1])
            x = normalize_uint8(torch.from_numpy(rgb)[None], self.loaded.mean, self.loaded.std)
        return x.to(self.device, self.dtype)

    @torch.no_grad()
    def __call__(self, frame: np.ndarray, boxes: Sequence[Detection], top_k: int) -> list[dict[str, Any]]:
        model = self.loaded.model
        started = time.perf_counter()
        groups = [self.prompts.class_prompts(a, c) for a in self.attributes for c in CLASSES[a]]
        groups += [self.prompts.description_prompts(d) for d in self.descriptions]
        text = self._ensembles(groups)
        heads, start = {}, 0
        for a in self.attributes:
            heads[a] = text[start:start + len(CLASSES[a])]
            start += len(CLASSES[a])
        joint = text[start:]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_text_s = time.perf_counter() - started
        scale = float(model.logit_scale.detach().float().exp().clamp(max=100.0))
        out = []
        for box in boxes:
            crop = crop_face(frame, box, margin=MARGIN)
            emb = model.encode_image(self._image(crop)).float()
            emb = emb / emb.norm(dim=-1, keepdim=True)
            face = {a: (scale * emb @ h.T).softmax(-1)[0].cpu().numpy() for a, h in heads.items()}
            jp = (scale * emb @ joint.T).softmax(-1)[0]
            values, indices = jp.topk(min(top_k, jp.numel()))
            face["joint"] = (values.cpu().numpy(), indices.cpu().numpy())
            out.append(face)
        return out


def compare(ours, theirs, atol: float) -> dict[str, Any]:
    """Face-by-face agreement of the pipeline's FaceProfiles with the baseline's dicts."""
    max_diff, label_mismatch, joint_mismatch = 0.0, 0, 0
    for profile, ref in zip(ours, theirs, strict=True):
        for attribute, result in profile.scores.attributes.items():
            p = np.array(list(result.distribution.values()))
            max_diff = max(max_diff, float(np.abs(p - ref[attribute]).max()))
            label_mismatch += result.top != CLASSES[attribute][int(np.argmax(ref[attribute]))]
        probs = np.array([c.probability for c in profile.scores.joint])
        max_diff = max(max_diff, float(np.abs(probs - ref["joint"][0]).max())) if len(probs) else max_diff
        texts = [c.text for c in profile.scores.joint]
        joint_mismatch += texts != ref["joint_texts"]
    return {"max_abs_prob_diff": max_diff, "label_mismatches": int(label_mismatch),
            "joint_topk_mismatches": int(joint_mismatch), "atol": atol,
            "identical": label_mismatch == 0 and joint_mismatch == 0 and max_diff <= atol}


# --- measurements -------------------------------------------------------------------------------------------

def build_profiler(checkpoint: Path, args, warm: bool, dtype: str = "") -> tuple[Profiler, float, float]:
    """(profiler, load seconds, warm-up seconds) through the production from_config path."""
    cfg = ProfilerConfig(model=str(checkpoint), device=args.device, dtype=dtype or args.dtype, detectors=("haar",),
                         joint_top_k=args.joint_top_k, max_faces=max(args.faces), batch_size=args.batch_size)
    load_s, profiler = timed(lambda: Profiler.from_config(cfg))
    warm_s = 0.0
    if warm:
        warm_s, _ = timed(lambda: profiler.warmup(sizes=tuple(sorted(set(args.faces)))), cuda_sync(args.device))
    return profiler, load_s, warm_s


def first_frame(checkpoint: Path, args, crops) -> dict[str, Any]:
    """Latency of the first frame of a fresh profiler, without and with warmup() (as the node calls it at
    configure: prompts encoded, one one-face forward) before it."""
    frame, boxes = tiled_frame(crops, args.first_frame_faces, *args.frame_size)
    out: dict[str, Any] = {"faces": args.first_frame_faces}
    for warm in (False, True):
        profiler, load_s, _ = build_profiler(checkpoint, args, warm=False)
        profiler.detector = FixedDetector(boxes)
        sync = cuda_sync(args.device)
        warm_s = timed(profiler.warmup, sync)[0] if warm else 0.0  # what the node runs at configure
        first, _ = timed(lambda: profiler(frame), sync)
        second, _ = timed(lambda: profiler(frame), sync)
        out["with_warmup" if warm else "without_warmup"] = {
            "load_s": load_s, "warmup_s": warm_s, "first_frame_ms": first * 1000, "second_frame_ms": second * 1000}
        del profiler
        gc.collect()
    return out


def detector_times(crops, args) -> list[dict[str, Any]]:
    """The real detector chain (Haar unless SCRFD/YuNet files are present) on tiled and real frames."""
    detector = build_detector(args.detectors, max_faces=max(args.faces))
    rows = []
    frames = [(f"{w}x{h} tiled, {n} faces", tiled_frame(crops, n, w, h)[0])
              for (w, h) in ((640, 480), (1280, 720)) for n in (1, max(args.faces))]
    frames.append(("obama_family_2011.jpg", load_image(ROOT / "test" / "data" / PHOTOS[0])))
    for label, frame in frames:
        found = len(detector.detect(frame))
        times = [timed(lambda: detector.detect(frame))[0] for _ in range(args.detector_runs)]
        rows.append({"frame": label, "size": f"{frame.shape[1]}x{frame.shape[0]}", "detector": detector.name,
                     "faces_found": found, **summary(times)})
    return rows


def variants(profiler: Profiler, checkpoint: Path, args) -> list[tuple[str, Profiler, float]]:
    """(name, profiler, identity tolerance) of each pipeline measured against the baseline."""
    out = [("ours", profiler, args.atol)]
    if args.compile:
        scorer = profiler.scorer
        compiled = ZeroShotScorer(scorer.loaded, scorer.prompts, scorer.attributes, scorer.min_confidence,
                                  scorer.joint_top_k, scorer.batch_size)
        compiled.compile_image_encoder(mode=args.compile)
        started = time.perf_counter()
        warm = Profiler(profiler.detector, compiled, margin=profiler.margin, align=profiler.align)
        warm.warmup(sizes=compiled.buckets)
        print(f"  compiled image tower ({args.compile}) for batch sizes {compiled.buckets} in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        out.append((f"ours + compile ({args.compile})", warm, max(args.atol, 1e-3)))
    for dtype in args.also_dtype:
        other, _, _ = build_profiler(checkpoint, args, warm=True, dtype=dtype)
        out.append((f"ours {dtype}", other, 5e-2))
    return out


def scaling(pipelines: list[tuple[str, Profiler, float]], args, crops) -> list[dict[str, Any]]:
    """Per face count: every pipeline and the naive baseline, interleaved; outputs checked against it."""
    scorer = pipelines[0][1].scorer
    baseline = NaiveBaseline(scorer.loaded, scorer.prompts, scorer.attributes, scorer.descriptions,
                             args.baseline_preprocess)
    sync = cuda_sync(args.device)
    rows: list[dict[str, Any]] = []
    for k, n in enumerate(args.faces):
        frame, boxes = tiled_frame(crops, n, *args.frame_size)
        for _, p, _ in pipelines:
            p.detector = FixedDetector(boxes)
            p(frame)  # one untimed call each: allocator and oneDNN primitive caches for this batch size

        def base():
            result = baseline(frame, boxes, args.joint_top_k)
            for face in result:
                face["joint_texts"] = [scorer.prompts.description_text(scorer.descriptions[int(i)])
                                       for i in face["joint"][1]]
            return result, baseline.last_text_s

        if args.baseline_runs and k == 0:
            base()  # the baseline's shapes do not depend on the face count: one warm call in all
        times: dict[str, list[float]] = {name: [] for name, _, _ in pipelines}
        outputs: dict[str, Any] = {}
        t_base, t_text = [], []
        base_out = None
        for r in range(max(args.runs, args.baseline_runs)):  # interleaved: load spikes hit all alike
            if r < args.runs:
                for name, p, _ in pipelines:
                    s, outputs[name] = timed(lambda: p(frame), sync)
                    times[name].append(s)
            if r < args.baseline_runs:
                s, (base_out, text_s) = timed(base, sync)
                t_base.append(s)
                t_text.append(text_s)
        for name, _, atol in pipelines:
            row: dict[str, Any] = {"faces": n, "pipeline": name, **summary(times[name])}
            row["frames_per_s"] = 1000.0 / row["median_ms"]
            row["faces_per_s"] = n * row["frames_per_s"]
            if args.baseline_runs:
                b = summary(t_base)
                row["speedup"] = b["median_ms"] / row["median_ms"]
                row["speedup_without_text"] = (b["median_ms"] - summary(t_text)["median_ms"]) / row["median_ms"]
                row["check"] = compare(outputs[name], base_out, atol)
            rows.append(row)
        if args.baseline_runs:
            b = {"faces": n, "pipeline": "naive baseline", **summary(t_base)}
            b["frames_per_s"] = 1000.0 / b["median_ms"]
            b["faces_per_s"] = n * b["frames_per_s"]
            b["text_reencode_median_ms"] = summary(t_text)["median_ms"]
            rows.append(b)
        print("  " + "; ".join(f"{r['pipeline']} {n} faces {r['median_ms']:.1f} ms"
                               + (f" (x{r['speedup']:.2f}, identical={r['check']['identical']})" if "speedup" in r
                                  else "") for r in rows if r["faces"] == n), flush=True)
    return rows


def batch_sweep(profiler: Profiler, args, crops) -> list[dict[str, Any]]:
    """The same frame (most faces) with ProfilerConfig.batch_size = each of --batch-sweep, interleaved."""
    if not args.batch_sweep:
        return []
    n = max(args.faces)
    frame, boxes = tiled_frame(crops, n, *args.frame_size)
    profiler.detector = FixedDetector(boxes)
    scorer, original = profiler.scorer, profiler.scorer.batch_size
    sync = cuda_sync(args.device)
    times: dict[int, list[float]] = {b: [] for b in args.batch_sweep}
    try:
        for b in args.batch_sweep:
            scorer.batch_size = b
            profiler(frame)
        for _ in range(args.runs):
            for b in args.batch_sweep:
                scorer.batch_size = b
                times[b].append(timed(lambda: profiler(frame), sync)[0])
    finally:
        scorer.batch_size = original
    rows = [{"faces": n, "batch_size": b, **summary(t)} for b, t in times.items()]
    for r in rows:
        r["faces_per_s"] = n * 1000.0 / r["median_ms"]
    return rows


def text_encoding(profiler: Profiler, args) -> dict[str, Any] | None:
    """All prompts of the scorer through the text tower: trimmed to the longest caption vs the full context."""
    if not args.text_runs:
        return None
    scorer = profiler.scorer
    texts = [t for a in scorer.attributes for c in CLASSES[a] for t in scorer.prompts.class_prompts(a, c)]
    texts += [t for d in scorer.descriptions for t in scorer.prompts.description_prompts(d)]
    model, tokens = scorer.loaded.model, scorer.loaded.tokenizer(texts).to(scorer.device)
    sync = cuda_sync(args.device)

    def run(fn):
        with torch.inference_mode():
            return torch.cat([fn(tokens[i:i + 256]) for i in range(0, len(texts), 256)])

    full_t, trim_t = [], []
    for _ in range(args.text_runs):
        s, full = timed(lambda: run(lambda t: model.encode_text(t, normalize=True)), sync)
        full_t.append(s)
        s, trim = timed(lambda: run(lambda t: encode_text_trimmed(model, t)), sync)
        trim_t.append(s)
    return {"captions": len(texts), "context": int(tokens.shape[1]),
            "longest_tokens": int(tokens.argmax(-1).max()) + 1, "full_ms": summary(full_t)["median_ms"],
            "trimmed_ms": summary(trim_t)["median_ms"], "speedup": summary(full_t)["median_ms"] /
            summary(trim_t)["median_ms"], "max_abs_diff": float((full.float() - trim.float()).abs().max())}


def pil_vs_opencv(profiler: Profiler, crops) -> dict[str, Any]:
    """Per-face preprocessing cost and probability change: open_clip's PIL transform vs transforms.py."""
    scorer = profiler.scorer
    base = NaiveBaseline(scorer.loaded, scorer.prompts, scorer.attributes, scorer.descriptions, "pil")
    sample = crops[:8]
    t_pil = [timed(lambda: [base._image(c) for c in sample])[0] / len(sample) for _ in range(15)]
    base.preprocess = "same"
    t_same = [timed(lambda: [base._image(c) for c in sample])[0] / len(sample) for _ in range(15)]
    from demoprof_ros.core.transforms import preprocess_bgr
    loaded = scorer.loaded
    t_batch = [timed(lambda: preprocess_bgr(sample, loaded.image_size, loaded.mean, loaded.std))[0] / len(sample)
               for _ in range(15)]
    with torch.inference_mode():
        base.preprocess = "pil"
        x_pil = torch.cat([base._image(c) for c in sample])
        x_ours = preprocess_bgr(sample, loaded.image_size, loaded.mean, loaded.std, scorer.device, scorer.dtype)
        p_pil = scorer.attribute_probs(loaded.model.encode_image(x_pil, normalize=True).float())
        p_ours = scorer.attribute_probs(loaded.model.encode_image(x_ours, normalize=True).float())
    diff = max(float((p_pil[a] - p_ours[a]).abs().max()) for a in p_ours) if p_ours else 0.0
    return {"pil_ms_per_face": summary(t_pil)["median_ms"], "opencv_ms_per_face": summary(t_same)["median_ms"],
            "opencv_batched_ms_per_face": summary(t_batch)["median_ms"], "faces": len(sample),
            "max_abs_prob_diff_pil_vs_opencv": diff}


# --- main ---------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-16-quickgelu",
                   help="open_clip architecture with random weights: ViT-B-16-quickgelu, tiny-224, tiny-64 (smoke)")
    p.add_argument("--faces", type=int, nargs="+", default=[1, 4, 8], help="faces per frame")
    p.add_argument("--runs", type=int, default=7, help="timed frames of ours per face count")
    p.add_argument("--baseline-runs", type=int, default=3,
                   help="timed frames of the baseline per face count (0 = no baseline)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--batch-size", type=int, default=16, help="ProfilerConfig.batch_size")
    p.add_argument("--joint-top-k", type=int, default=3)
    p.add_argument("--frame-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    p.add_argument("--compile", default="", choices=("", "default", "reduce-overhead", "max-autotune"),
                   help="also measure ours with the image tower torch.compile'd for fixed batch sizes (off by "
                        "default; reduce-overhead = CUDA graphs on GPU)")
    p.add_argument("--also-dtype", nargs="*", default=[], choices=("fp32", "fp16", "bf16"),
                   help="also measure ours with the model in these dtypes (e.g. bf16 on a CPU with AVX512-BF16)")
    p.add_argument("--batch-sweep", type=int, nargs="*", default=[1, 2, 4, 8],
                   help="ProfilerConfig.batch_size values timed on the frame with the most faces ([] = skip)")
    p.add_argument("--text-runs", type=int, default=1,
                   help="timed encodings of all prompts, trimmed vs full 77-token context (0 = skip)")
    p.add_argument("--baseline-preprocess", default="same", choices=("same", "pil"),
                   help="baseline preprocessing: 'same' (OpenCV, per face: outputs comparable to --atol) or "
                        "'pil' (open_clip's transform: labels compared, probabilities differ slightly)")
    p.add_argument("--atol", type=float, default=None,
                   help="probability tolerance of the identity check (default 1e-4 fp32, 2e-2 fp16/bf16)")
    p.add_argument("--first-frame-faces", type=int, default=1)
    p.add_argument("--no-first-frame", action="store_true", help="skip the first-frame latency study")
    p.add_argument("--detectors", nargs="+", default=["scrfd", "yunet", "haar"])
    p.add_argument("--detector-runs", type=int, default=10)
    p.add_argument("--checkpoint-dir", default="", help="where to write/reuse the random-weight checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.atol is None:
        args.atol = 1e-4 if args.dtype == "fp32" else 2e-2
    if args.baseline_preprocess == "pil" and args.atol < 1e-2:
        args.atol = 1e-2
    if args.runs < 1 or args.baseline_runs < 0 or min(args.faces) < 1:
        p.error("--runs >= 1, --baseline-runs >= 0 and --faces >= 1 expected")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"bench_profiler: {args.arch} on {args.device} ({args.dtype}); {RANDOM_WEIGHTS_NOTE}", flush=True)
    with tempfile.TemporaryDirectory(prefix="demoprof-bench-") as tmp:
        checkpoint = random_checkpoint(args.arch, args.checkpoint_dir or Path(tmp) / args.arch, args.seed)
        crops = face_crops()
        started = time.perf_counter()
        results: dict[str, Any] = {"benchmark": "profiler", "command": command_line(), "args": vars(args),
                                   "machine": machine_info(args.device), "note": RANDOM_WEIGHTS_NOTE}
        profiler, load_s, warm_s = build_profiler(checkpoint, args, warm=True)
        results["load_s"], results["warmup_s"] = load_s, warm_s
        pipelines = variants(profiler, checkpoint, args)
        results["scaling"] = scaling(pipelines, args, crops)
        results["preprocess"] = pil_vs_opencv(profiler, crops)
        results["batch_sweep"] = batch_sweep(profiler, args, crops)
        results["text"] = text_encoding(profiler, args)
        del profiler, pipelines
        gc.collect()
        if not args.no_first_frame:
            results["first_frame"] = first_frame(checkpoint, args, crops)
        results["detector"] = detector_times(crops, args)
        results["wall_s"] = time.perf_counter() - started
    print_report(results, args)
    write_json(args.out, results)
    return 0


def print_report(results: dict[str, Any], args) -> None:
    m = results["machine"]
    print(f"\n## Profiler pipeline: {args.arch}, {args.device} {args.dtype}, frame {args.frame_size[0]}x"
          f"{args.frame_size[1]}\n")
    print(machine_line(m))
    print(f"Note: {RANDOM_WEIGHTS_NOTE}.\n")
    rows = []
    for r in results["scaling"]:
        check = r.get("check")
        rows.append([r["faces"], r["pipeline"], r["median_ms"], r["p95_ms"], r["frames_per_s"], r["faces_per_s"],
                     f"{r['speedup']:.2f}x" if "speedup" in r else "-",
                     f"{r['speedup_without_text']:.2f}x" if "speedup_without_text" in r else
                     (f"text {r['text_reencode_median_ms']:.0f} ms" if "text_reencode_median_ms" in r else "-"),
                     (("yes" if check["identical"] else "NO") + f" ({check['max_abs_prob_diff']:.1e})")
                     if check else "-"])
    print(markdown_table(["faces", "pipeline", "p50 ms", "p95 ms", "frames/s", "faces/s", "vs baseline",
                          "vs baseline w/o its text", "identical (max |dp|)"], rows))
    print(f"\n{args.runs} timed frames per pipeline and face count, {args.baseline_runs} of the baseline, "
          f"interleaved. 'w/o its text' = (baseline p50 - its per-frame text re-encoding p50) / ours p50: the part "
          f"of the gain that is not the text cache. Identical = same top label per attribute and same joint "
          f"top-{args.joint_top_k}, probabilities within {args.atol:g} (fp32) of the baseline's.")
    pre = results["preprocess"]
    print(f"\nPreprocessing per face: open_clip PIL {pre['pil_ms_per_face']:.2f} ms, OpenCV one at a time "
          f"{pre['opencv_ms_per_face']:.2f} ms, OpenCV batched (ours) {pre['opencv_batched_ms_per_face']:.2f} ms; "
          f"max |dp| PIL vs OpenCV = {pre['max_abs_prob_diff_pil_vs_opencv']:.2e}")
    sweep = results.get("batch_sweep")
    if sweep:
        print(f"\nBatch size (ProfilerConfig.batch_size) on the {sweep[0]['faces']}-face frame, interleaved:")
        print(markdown_table(["batch_size", "p50 ms", "p95 ms", "faces/s"],
                             [[r["batch_size"], r["median_ms"], r["p95_ms"], r["faces_per_s"]] for r in sweep]))
    text = results.get("text")
    if text:
        print(f"\nText heads ({text['captions']} captions, the warm-up's work): full {text['context']}-token "
              f"context {text['full_ms']:.0f} ms, trimmed to {text['longest_tokens']} tokens {text['trimmed_ms']:.0f}"
              f" ms ({text['speedup']:.2f}x), max |diff| {text['max_abs_diff']:.1e}")
    ff = results.get("first_frame")
    if ff:
        print(f"\nFirst frame ({ff['faces']} face), fresh profiler:")
        print(markdown_table(["configure", "load s", "warm-up s", "first frame ms", "second frame ms"], [
            [k.replace("_", " "), v["load_s"], v["warmup_s"], v["first_frame_ms"], v["second_frame_ms"]]
            for k, v in ((k, ff[k]) for k in ("without_warmup", "with_warmup"))]))
    print("\nDetector on its own (not in the rows above):")
    print(markdown_table(["frame", "detector", "faces found", "p50 ms", "p95 ms"],
                         [[d["frame"], d["detector"], d["faces_found"], d["median_ms"], d["p95_ms"]]
                          for d in results["detector"]]))
    print(f"\ntotal wall time {results['wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
