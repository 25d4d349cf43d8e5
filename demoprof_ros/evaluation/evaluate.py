"""`demoprof eval`: a model on labelled face data sets, reported the way the field reports it.

Per data set: accuracy and macro precision / recall / F1 of each attribute; the paper's task (choose the right
full description among all 9 x 2 x 7 = 126) over the rows whose three labels are known and fine-grained;
accuracy and F1 by race x gender and by age group with the largest gap; the expected calibration error of
each attribute's confidence; and the retrieval analysis (precision@k per description, retrieval.py).

Images are already face crops: each is scored whole, no detector runs, unless `--detect` asks for the
product's view (detected_crops.py: the largest face `demoprof profile` would find, cropped with the model's
margin; images where it finds none are counted per group and left out of the metrics, and each attribute
also gets its accuracy with them counted wrong). Image embeddings are computed once per data set and reused
for the attributes, the joint task, the groups and retrieval. Nothing but the report files is written (no
embeddings, no images).

Data sets with another vocabulary are scored honestly: a data set whose race labels include UTKFace's coarse
`Asian` / `Others` is scored in that vocabulary, the model's probabilities merged (East + Southeast Asian ->
Asian, Latino_Hispanic + Middle Eastern -> Others; coarse.py). The fine 126-way task then
takes only the rows with fine labels (a coarse label names no single description); a second task,
`joint_coarse`, chooses among the 90 merged descriptions over every complete row and is named so. Rows whose
label the taxonomy lacks are left out by the reader, counted, and the report says so.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..training.datasets import DatasetError, DatasetReport, Sample, read_dataset, stratified_split
from .coarse import in_vocabulary, merge_descriptions, merge_note
from .metrics import classification_report, expected_calibration_error, group_report
from .report import pct as _pct, render_report
from ..core.model_meta import ATTRIBUTE_SCORING, MAX_CROP_MARGIN
from ..core.outputs import output_dir_arg
from ..core.taxonomy import ATTRIBUTE_NAMES, CLASSES

log = logging.getLogger("demoprof.evaluate")

SCHEMA = "demoprof-eval/1"
GROUP_BY = (("race", "gender"), ("age",))
JOINT_SEPARATOR = " | "


@dataclass
class EvalSettings:
    """What an evaluation run does besides the model and the data (recorded in results.json)."""

    attributes: tuple[str, ...] = ATTRIBUTE_NAMES
    batch_size: int = 32
    retrieval_k: int = 10          # 0: no retrieval analysis
    min_group_size: int = 10       # groups smaller than this are listed but not used for the gap
    ece_bins: int = 15
    limit: int | None = None       # evaluate a stratified subset of this many rows per data set
    limit_seed: int = 0
    detect: str | None = None      # a detector chain ("photo" = demoprof profile's): score the largest face's crop
    margin: float | str = "auto"   # that crop's margin ("auto": the model's declared one)
    progress: bool = True
    plots: bool = True

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()
                if k not in ("progress", "plots")}


# --- model --------------------------------------------------------------------------------------------------


def make_scorer(model: str | Path | Any = "auto", device: str = "cpu", dtype: str = "fp32",
                models_dir: str | Path | None = None, prompts_file: str | Path | None = None,
                attributes: Sequence[str] = ATTRIBUTE_NAMES, batch_size: int = 32,
                attribute_scoring: str | None = None):
    """A ZeroShotScorer for a model spec (or an already LoadedModel), with the checkpoint's own prompts and
    attribute scoring unless given."""
    from ..core.models import LoadedModel, load_model
    from ..core.prompts import load_prompts, prompts_from_dict
    from ..core.scorer import ZeroShotScorer

    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype,
                                                                     models_dir=models_dir)
    prompts = load_prompts(prompts_file) if prompts_file else prompts_from_dict(loaded.meta.get("prompts"))
    return ZeroShotScorer(loaded, prompts, attributes=attributes, batch_size=batch_size,
                          attribute_scoring=attribute_scoring)


def model_summary(loaded, spec: Any = None) -> dict:
    """What results.json and the model card say about the model (a fine-tuned one's training record, compact)."""
    meta = dict(loaded.meta or {})
    keep = ("base_model", "base_name", "arch", "untrained", "warning", "seed", "loss", "optimizer", "selection",
            "best_epoch", "best_score", "stopped_early", "complete", "attributes", "package_version", "created")
    summary = {k: meta[k] for k in keep if k in meta}
    data = meta.get("data")
    if isinstance(data, dict):
        summary["training_data"] = {
            part: {k: v for k, v in (data.get(part) or {}).items() if k in ("sources", "n", "fingerprint", "split",
                                                                               "labels", "left_out_unlabelled")}
            for part in ("train", "val") if data.get(part)}
    return {"spec": str(spec) if spec is not None else loaded.name, "name": loaded.name,
            "source": str(loaded.source) if loaded.source else None, "image_size": int(loaded.image_size),
            "embed_dim": int(loaded.model_cfg.get("embed_dim", 0)), "meta": summary}


# --- one data set ----------------------------------------------------------------------------------------------


def select(samples: Sequence[Sample], limit: int | None, seed: int = 0) -> list[Sample]:
    """A stratified subset of `limit` samples (all of them when limit is None or not smaller)."""
    samples = list(samples)
    if limit is None or limit >= len(samples):
        return samples
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    _, subset = stratified_split(samples, val_fraction=limit / len(samples), seed=seed)
    return subset


def evaluate_samples(scorer, samples: Sequence[Sample], settings: EvalSettings | None = None,
                     name: str = "data", embeddings: torch.Tensor | None = None, crop=None) -> dict[str, Any]:
    """Every metric for one data set (JSON-ready). Encodes the images unless `embeddings` (N x D) is given:
    whole, or their detected faces with settings.detect (`crop`: a detected_crops.FaceCropper already built)."""
    from .retrieval import NO_FACE, encode_paths, retrieval_precision_at_k

    settings = settings or EvalSettings()
    attributes = tuple(a for a in ATTRIBUTE_NAMES if a in scorer.attributes)
    samples = list(samples)
    unreadable: list[tuple[str, str]] = []
    missed: list[Sample] = []
    detection = None
    if embeddings is None:
        if settings.detect and crop is None:
            crop = cropper(scorer, settings)
        embeddings, ok, failures = encode_paths(scorer, [s.path for s in samples], progress=settings.progress,
                                                desc=name, crop=crop)
        unreadable = [f for f in failures if f[1] != NO_FACE]
        no_face = {f for f, reason in failures if reason == NO_FACE}
        missed = [s for s in samples if str(s.path) in no_face]
        found = [s for s, good in zip(samples, ok) if good]
        detection = _detection_entry(crop, found, missed) if crop is not None else None
        samples = found
    if len(samples) != embeddings.shape[0]:
        raise ValueError(f"{len(samples)} samples but {embeddings.shape[0]} embeddings")
    out: dict[str, Any] = {"images": {"scored": len(samples), "unreadable": len(unreadable),
                                      "unreadable_files": [{"file": f, "reason": r} for f, r in unreadable[:50]]},
                           "detection": detection,
                           "attributes": {}, "joint": None, "joint_coarse": None, "groups": {}, "retrieval": None}
    if not samples:
        return out
    embeddings = embeddings.to(scorer.device, dtype=torch.float32)
    probs = {a: p.float().cpu().numpy() for a, p in scorer.attribute_probs(embeddings).items()}

    vocabs: dict[str, tuple[str, ...]] = {}
    owners: dict[str, dict[str, str]] = {}
    truth: dict[str, list[str | None]] = {}
    preds: dict[str, list[str]] = {}
    for a in attributes:
        merged = in_vocabulary(probs[a], [s.labels.get(a) for s in samples], a)
        vocabs[a], owners[a], truth[a], preds[a] = merged.vocab, merged.owner, merged.truth, merged.predicted
        out["attributes"][a] = _attribute_entry(merged, a, settings)
        if detection is not None:
            out["attributes"][a]["misses_wrong"] = _misses_wrong(out["attributes"][a], missed, a, merged.vocab)

    out["joint"], out["joint_coarse"] = _joint(scorer, embeddings, samples, attributes, vocabs, owners, truth,
                                               settings)

    # Groups use every known label, also of attributes that are switched off (they only define the groups).
    records = []
    for i, s in enumerate(samples):
        labels = {a: (truth[a][i] if a in truth else s.labels.get(a)) for a in ATTRIBUTE_NAMES}
        records.append({"labels": labels, "pred": {a: preds[a][i] for a in attributes}})
    for a in attributes:
        if out["attributes"][a]["n"]:
            out["groups"][a] = group_report(records, a, group_by=GROUP_BY, classes=vocabs[a],
                                            min_count=settings.min_group_size)

    if settings.retrieval_k > 0 and scorer.descriptions:
        similarity = scorer.joint_head.float() @ embeddings.T
        out["retrieval"] = retrieval_precision_at_k(similarity, scorer.descriptions, truth, owners,
                                                    k=settings.retrieval_k)
    return out


def cropper(scorer, settings: EvalSettings):
    """The detected_crops.FaceCropper settings.detect asks for (built once per run: detectors load weights)."""
    from .detected_crops import build_cropper
    return build_cropper(settings.detect, settings.margin, scorer.loaded.meta)


def _detection_entry(crop, found: Sequence[Sample], missed: Sequence[Sample]) -> dict:
    """Which detector and margin, and how many faces it found per group (a miss is a person the product would
    not profile: part of its accuracy, and it need not fall evenly)."""
    entry = {**crop.describe(), "images": len(found) + len(missed), "found": len(found), "no_face": len(missed),
             "no_face_files": [str(s.path) for s in missed[:50]], "found_by_group": {}}
    for keys in GROUP_BY:
        counts: dict[str, dict[str, int]] = {}
        for s, hit in [(s, 1) for s in found] + [(s, 0) for s in missed]:
            values = [s.labels.get(k) for k in keys]
            if all(v is not None for v in values):
                cell = counts.setdefault("/".join(values), {"n": 0, "found": 0})
                cell["n"] += 1
                cell["found"] += hit
        entry["found_by_group"]["/".join(keys)] = dict(sorted(counts.items()))
    return entry


def _misses_wrong(entry: Mapping[str, Any], missed: Sequence[Sample], attribute: str, vocab) -> dict:
    """Accuracy with the images where no face was found counted as wrong (those with a label in `vocab`)."""
    misses = sum(s.labels.get(attribute) in vocab for s in missed)
    n = entry["n"] + misses
    accuracy = (entry["metrics"] or {}).get("accuracy")
    return {"n": n, "misses": misses,
            "accuracy": None if accuracy is None or not n else accuracy * entry["n"] / n}


def _attribute_entry(merged, attribute: str, settings: EvalSettings) -> dict[str, Any]:
    """results.json's entry for one attribute scored in the data set's vocabulary (coarse.in_vocabulary)."""
    vocab = merged.vocab
    confidence = merged.probs.max(axis=1)
    idx = np.flatnonzero(merged.kept)
    entry: dict[str, Any] = {"vocabulary": list(vocab), "merged": merge_note(attribute, vocab) or None,
                             "n": int(idx.size), "left_out": dict(merged.left_out)}
    if not idx.size:
        return {**entry, "metrics": None, "ece": None}
    y_true = [merged.truth[i] for i in idx]
    y_pred = [merged.predicted[i] for i in idx]
    entry["metrics"] = classification_report(y_true, y_pred, vocab)
    correct = np.array([t == p for t, p in zip(y_true, y_pred)])
    entry["ece"] = expected_calibration_error(confidence[idx], correct, settings.ece_bins)
    entry["mean_confidence"] = float(confidence[idx].mean())
    return entry


def _joint(scorer, embeddings, samples, attributes, vocabs, owners, truth, settings):
    """(fine joint task, coarse joint task or None): choose the full description of each face."""
    if not scorer.descriptions:
        return None, None
    jp = scorer.joint_probs(embeddings).float().cpu().numpy()
    fine_vocab = all(vocabs[a] == CLASSES[a] for a in attributes)
    n_total = len(samples)
    # The fine task: rows whose enabled labels are all known and fine-grained (a coarse label such as
    # UTKFace's 'Asian' cannot name one of the 126 descriptions).
    fine_left: Counter = Counter()
    eligible = []
    for i, s in enumerate(samples):
        reasons = [f"no {a} label" if s.labels.get(a) is None else f"coarse {a} label"
                   for a in attributes if s.labels.get(a) not in CLASSES[a]]
        fine_left.update(reasons)
        if not reasons:
            eligible.append(i)
    fine_keys = [JOINT_SEPARATOR.join(getattr(d, a) for a in attributes) for d in scorer.descriptions]
    fine = {"task": f"choose among {len(fine_keys)} full descriptions ({' x '.join(attributes)})",
            "vocabulary": "fine", "n_descriptions": len(fine_keys), "n": len(eligible), "n_total": n_total,
            "left_out": dict(fine_left), "left_out_total": n_total - len(eligible)}
    if not fine_vocab:
        coarse = [a for a in attributes if vocabs[a] != CLASSES[a]]
        fine["note"] = (f"rows with a coarse {'/'.join(coarse)} label are left out of this task; "
                        "joint_coarse scores them in the data set's own vocabulary")
    fine.update(_joint_scores(jp, fine_keys, fine_keys, eligible,
                              [JOINT_SEPARATOR.join(samples[i].labels[a] for a in attributes) for i in eligible],
                              attributes, settings))
    if fine_vocab:
        return fine, None
    # The coarse task: descriptions merged into the data set's vocabulary, probabilities summed.
    merged, coarse_keys = merge_descriptions(jp, scorer.descriptions, attributes, owners, JOINT_SEPARATOR)
    eligible_c = [i for i in range(n_total) if all(truth[a][i] is not None for a in attributes)]
    missing = Counter({f"no {a} label": sum(v is None for v in truth[a]) for a in attributes})
    coarse_entry = {"task": f"choose among {len(coarse_keys)} descriptions in this data set's vocabulary "
                            f"({'; '.join(filter(None, (merge_note(a, vocabs[a]) for a in attributes)))})",
                    "vocabulary": "coarse", "n_descriptions": len(coarse_keys), "n": len(eligible_c),
                    "n_total": n_total, "left_out": {k: v for k, v in missing.items() if v},
                    "left_out_total": n_total - len(eligible_c)}
    coarse_entry.update(_joint_scores(merged, coarse_keys, coarse_keys, eligible_c,
                                      [JOINT_SEPARATOR.join(truth[a][i] for a in attributes) for i in eligible_c],
                                      attributes, settings))
    return fine, coarse_entry


def _joint_scores(jp: np.ndarray, columns: Sequence[str], classes: Sequence[str], rows: Sequence[int],
                  y_true: Sequence[str], attributes: Sequence[str], settings: EvalSettings) -> dict:
    if not rows:
        return {"metrics": None, "top5_accuracy": None, "ece": None, "marginal_accuracy": None}
    sub = jp[rows]
    order = np.argsort(-sub, axis=1, kind="stable")
    y_pred = [columns[j] for j in order[:, 0]]
    report = classification_report(list(y_true), y_pred, list(classes))
    # 126 x 126 counts add nothing readable to results.json; keep the classes that occur.
    report.pop("confusion_matrix", None)
    report["per_class"] = {c: v for c, v in report["per_class"].items()
                           if v["support"] or c in set(y_pred)}
    report.pop("classes", None)
    top5 = [y in {columns[j] for j in order[r, :5]} for r, y in enumerate(y_true)]
    correct = np.array([t == p for t, p in zip(y_true, y_pred)])
    marginal = {}
    for pos, a in enumerate(attributes):
        marginal[a] = float(np.mean([t.split(JOINT_SEPARATOR)[pos] == p.split(JOINT_SEPARATOR)[pos]
                                     for t, p in zip(y_true, y_pred)]))
    return {"metrics": report, "top5_accuracy": float(np.mean(top5)),
            "ece": expected_calibration_error(sub.max(axis=1), correct, settings.ece_bins),
            "marginal_accuracy": marginal}


# --- several data sets, files ------------------------------------------------------------------------------------


def dataset_name(path: str | Path, taken: Sequence[str] = ()) -> str:
    """A short unique name: the folder of a labels.csv / the folder itself / the file's stem."""
    path = Path(path)
    name = path.parent.name if path.name == "labels.csv" else path.name if path.is_dir() else path.stem
    name = name or "data"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def evaluate(scorer, data: Sequence[str | Path], settings: EvalSettings | None = None, strict: bool = False,
             names: Sequence[str] | None = None, spec: Any = None) -> dict[str, Any]:
    """results.json's content for a scorer on data sets (paths in any layout datasets.read_dataset reads)."""
    settings = settings or EvalSettings()
    crop = cropper(scorer, settings) if settings.detect else None
    results: dict[str, Any] = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model_summary(scorer.loaded, spec), "attributes": list(scorer.attributes),
        "attribute_scoring": scorer.attribute_scoring,
        "settings": settings.to_dict(), "datasets": {}}
    try:
        from .. import __version__
        results["package_version"] = __version__
    except ImportError:  # pragma: no cover
        pass
    for i, path in enumerate(data):
        name = names[i] if names else dataset_name(path, list(results["datasets"]))
        samples, report = read_dataset(path, strict=strict)
        log.info("%s", report.summary())
        chosen = select(samples, settings.limit, settings.limit_seed)
        entry = {"path": str(path), "reader": _reader_dict(report), "rows_evaluated": len(chosen),
                 "subset": None if len(chosen) == len(samples) else
                 f"stratified subset of {len(chosen)} of {len(samples)} rows (seed {settings.limit_seed})"}
        entry.update(evaluate_samples(scorer, chosen, settings, name=name, crop=crop))
        results["datasets"][name] = entry
    return results


def _reader_dict(report: DatasetReport, examples: int = 20) -> dict:
    d = report.to_dict()
    d["problems"] = d["problems"][:examples]
    return d


def write_outputs(results: Mapping[str, Any], output_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """results.json, report.md and one confusion-matrix PNG per data set and attribute."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if plots:
        from .plots import plot_confusion

        for name, ds in results["datasets"].items():
            for a, entry in ds["attributes"].items():
                if entry.get("metrics"):
                    path = out / f"confusion_{_slug(name)}_{a}.png"
                    plot_confusion(entry["metrics"]["confusion_matrix"], entry["metrics"]["classes"], path,
                                   title=f"{name}: {a} (n={entry['n']})")
                    entry["confusion_png"] = path.name
                    written[f"{name}/{a}"] = path
    json_path = out / "results.json"
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_report(results), encoding="utf-8")
    written["results.json"] = json_path
    written["report.md"] = out / "report.md"
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


# --- CLI ----------------------------------------------------------------------------------------------------------


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default="auto", help="auto | clip | farl | tiny | checkpoint file or fine-tuned dir")
    parser.add_argument("--data", nargs="+", required=True, metavar="CSV",
                        help="data sets: CSV file,age,gender,race / JSONL / folder with labels.csv / UTKFace folder")
    parser.add_argument("--output", required=True, metavar="DIR", type=output_dir_arg("--output"),
                        help="where results.json, report.md, PNGs go (checked before the model loads)")
    parser.add_argument("--attributes", default=",".join(ATTRIBUTE_NAMES),
                        help="comma-separated subset of age,gender,race")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--models-dir", help="folder with downloaded weights")
    parser.add_argument("--prompts", help="YAML prompt file (default: the checkpoint's own, else the built-in)")
    parser.add_argument("--attribute-scoring", choices=ATTRIBUTE_SCORING,
                        help="prompts: each attribute's own prompts | descriptions: marginals of the full "
                             "descriptions (default: the checkpoint's meta.json, else prompts)")
    parser.add_argument("--detect", nargs="?", const="photo", metavar="CHAIN",
                        help="score the largest face a detector finds in each image, cropped as the profiler "
                             "crops it, instead of the whole image; CHAIN as --detectors takes it (default: "
                             "demoprof profile's, MTCNN first); images with no face found are counted per group")
    parser.add_argument("--margin", default="auto", type=margin_arg,
                        help="with --detect: crop margin ('auto' = the model's declared one, as the profiler)")
    parser.add_argument("--limit", type=int, help="evaluate a stratified subset of this many rows per data set")
    parser.add_argument("--retrieval-k", type=int, default=10, help="k of the retrieval analysis (0: skip it)")
    parser.add_argument("--min-group-size", type=int, default=10,
                        help="smallest group that counts for the largest gap (default 10)")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad row instead of skipping it")
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="no confusion-matrix PNGs")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model on labelled face data sets",
                              description=__doc__.splitlines()[0])
    build_parser(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..core.detection import DetectorUnavailable, available_backends
    from ..core.models import ModelLoadError
    from ..core.prompts import PromptError

    attributes = tuple(a.strip() for a in args.attributes.split(",") if a.strip())
    unknown = [a for a in attributes if a not in ATTRIBUTE_NAMES]
    if unknown or not attributes:
        return _fail(f"--attributes: unknown {unknown}; expected a subset of {','.join(ATTRIBUTE_NAMES)}", 2)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1) or args.retrieval_k < 0:
        return _fail("--batch-size and --limit must be >= 1, --retrieval-k >= 0", 2)
    chain = [] if args.detect in (None, "photo") else [c.strip() for c in args.detect.split(",")]
    if chain and (not all(chain) or not set(chain) <= set(available_backends())):
        return _fail(f"--detect {args.detect!r}: expected detector names from {','.join(available_backends())}", 2)
    missing = [str(path) for path in args.data if not Path(path).exists()]
    if missing:  # before the model loads
        return _fail(f"--data: not found: {', '.join(missing)}", 2)
    settings = EvalSettings(attributes=attributes, batch_size=args.batch_size, retrieval_k=args.retrieval_k,
                            min_group_size=args.min_group_size, limit=args.limit, detect=args.detect,
                            margin=args.margin, progress=args.progress, plots=args.plots)
    try:
        scorer = make_scorer(args.model, device=args.device, dtype=args.dtype, models_dir=args.models_dir,
                             prompts_file=args.prompts, attributes=attributes, batch_size=args.batch_size,
                             attribute_scoring=args.attribute_scoring)
    except (ModelLoadError, PromptError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc), 2)
    try:
        results = evaluate(scorer, args.data, settings, strict=args.strict, spec=args.model)
    except (DatasetError, DetectorUnavailable) as exc:
        return _fail(str(exc), 2)
    written = write_outputs(results, args.output, plots=args.plots)
    for name, ds in results["datasets"].items():
        summary = ", ".join(f"{a} acc {_pct((e.get('metrics') or {}).get('accuracy'))}"
                            for a, e in ds["attributes"].items())
        joint = ds.get("joint") or {}
        jm = joint.get("metrics") or {}
        found = ds.get("detection")
        if found:
            summary += f"; faces found in {found['found']} of {found['images']} images ({found['detector']})"
        print(f"{name}: {ds['images']['scored']} images; {summary}; full description acc "
              f"{_pct(jm.get('accuracy'))} over {joint.get('n', 0)} rows")
    print(f"wrote {written['results.json']} and {written['report.md']}")
    return 0


def margin_arg(text: str) -> float | str:
    """--margin: 'auto' or a number in [0, MAX_CROP_MARGIN] (the profiler's `margin` setting)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= MAX_CROP_MARGIN:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in [0, {MAX_CROP_MARGIN:g}], got {text!r}")
    return value


def _fail(message: str, code: int) -> int:
    print(f"demoprof eval: error: {message}", file=sys.stderr)
    return code
