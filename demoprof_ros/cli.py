"""`demoprof`: profile images and videos, manage weights, train, evaluate, retrieve.

Each feature module adds its own subcommand with `register_cli(subparsers)`; this module only wires them
and owns `profile`. Exit codes: 0 success, 1 some inputs failed or a run failed, 2 bad usage or setup
(missing weights, bad config), 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

log = logging.getLogger("demoprof")

# Modules that contribute subcommands, in help order.
_SUBCOMMAND_MODULES: tuple[str, ...] = ("demo", "core.model_zoo", "training.trainer", "evaluation.evaluate",
                                         "evaluation.experiment", "evaluation.retrieval", "evaluation.card")


def _profile_config(args: argparse.Namespace):
    from .core.profiler import PHOTO_DEFAULTS, ConfigError, ProfilerConfig

    data: dict[str, Any] = dict(PHOTO_DEFAULTS)  # photos: the most accurate detector, many small faces
    if args.config:
        data.update(load_config_file(args.config))
    overrides = {"model": args.model, "device": args.device, "dtype": args.dtype,
                 "min_confidence": args.min_confidence, "models_dir": args.models_dir,
                 "prompts_file": args.prompts, "max_faces": args.max_faces,
                 "min_face_size": args.min_face_size}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if args.attributes is not None:
        data["attributes"] = args.attributes
    if args.detectors is not None:
        data["detectors"] = args.detectors
    try:
        return ProfilerConfig.from_dict(data)
    except ConfigError as exc:
        raise SystemExit(_fail(f"bad configuration: {exc}", 2)) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Profiler settings from YAML: a plain mapping, or a ROS params file (its node's ros__parameters,
    keeping only the profiler's own settings; the node checks the rest)."""
    import dataclasses

    from .core.profiler import ProfilerConfig

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SystemExit(_fail(f"config file not found: {path}", 2)) from None
    except yaml.YAMLError as exc:
        raise SystemExit(_fail(f"config file {path} is not valid YAML: {exc}", 2)) from None
    if not isinstance(data, dict):
        raise SystemExit(_fail(f"config file {path}: expected a mapping at the top level", 2))
    for value in data.values():
        if isinstance(value, dict) and "ros__parameters" in value:
            names = {f.name for f in dataclasses.fields(ProfilerConfig)}
            return {k: v for k, v in value["ros__parameters"].items() if k in names}
    return data


def _fail(message: str, code: int) -> int:
    print(f"demoprof: error: {message}", file=sys.stderr)
    return code


def cmd_profile(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.annotate import draw_profiles
    from .core.detection import DetectorUnavailable
    from .core.images import iter_media
    from .core.models import ModelLoadError
    from .core.profiler import Profiler

    cfg = _profile_config(args)
    try:
        profiler = Profiler.from_config(cfg, logger=log)
    except (ModelLoadError, DetectorUnavailable, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc), 2)
    log.info("model %s, detector %s", profiler.model_name, profiler.detector_name)
    items = iter_media(args.paths)
    failures = 0
    annotate_dir = Path(args.annotate) if args.annotate else None
    written: set[Path] = set()
    if annotate_dir is not None:
        annotate_dir.mkdir(parents=True, exist_ok=True)
    total = getattr(items, "total", None)
    bar = tqdm(items, total=total, unit="img", file=sys.stderr,
               disable=not args.progress or (total is not None and total <= 1))
    if not args.json:
        print(f"{'source':40} {'face':>4} {'box (x,y,w,h)':>22}  {'age':>12} {'gender':>7} {'race':>16}  top description")
    for item in bar:
        if item.error is not None:
            failures += 1
            log.warning("skipped %s: %s", item.source, item.error)
            if args.json:
                print(json.dumps({"source": item.source, "error": str(item.error)}), flush=True)
            continue
        start = time.perf_counter()
        profiles = profiler(item.image)
        latency_ms = (time.perf_counter() - start) * 1000.0
        if args.json:
            # The frame fields follow /user_profile where they mean the same (docs/profile_schema.json).
            record = {"source": item.source,
                      "image": {"width": int(item.image.shape[1]), "height": int(item.image.shape[0])},
                      "model": profiler.model_name, "detector": profiler.detector_name,
                      "latency_ms": round(latency_ms, 2), "faces_dropped": profiler.last_drops.to_dict(),
                      "faces": [p.to_dict() for p in profiles]}
            print(json.dumps(record), flush=True)
        else:
            _print_table(item.source, profiles)
        if annotate_dir is not None:
            import cv2

            out = _annotated_path(annotate_dir, item.source, written)
            if not cv2.imwrite(str(out), draw_profiles(item.image, profiles)):
                log.warning("could not write %s", out)
    if failures:
        log.warning("%d input(s) could not be read", failures)
    return 1 if failures else 0


def _annotated_path(folder: Path, source: str, written: set[Path]) -> Path:
    """OUT/<image stem>.jpg, OUT/<video stem>_<frame>.jpg; a numeric suffix where names collide."""
    path, _, frame = source.rpartition(":") if not Path(source).exists() else (source, "", "")
    stem = Path(path or source).stem + (f"_{int(frame):06d}" if frame.isdigit() else "")
    out, n = folder / f"{stem}.jpg", 1
    while out in written:
        out, n = folder / f"{stem}-{n}.jpg", n + 1
    written.add(out)
    return out


def _print_table(source: str, profiles: Sequence[Any]) -> None:
    if not profiles:
        print(f"{source[-40:]:40} {'-':>4}  no face found")
    for i, p in enumerate(profiles):
        x1, y1, x2, y2 = p.detection.box
        box = f"{x1:.0f},{y1:.0f},{x2 - x1:.0f},{y2 - y1:.0f}"
        cells = []
        for name in ("age", "gender", "race"):
            r = p.scores.attributes.get(name)
            cells.append("off" if r is None else f"{r.label}:{r.probability:.2f}" if not r.undetermined
                         else f"?({r.top}:{r.probability:.2f})")
        top = p.scores.joint[0].text if p.scores.joint else ""
        print(f"{source[-40:]:40} {i:>4} {box:>22}  {cells[0]:>12} {cells[1]:>7} {cells[2]:>16}  {top}")


def _add_profile_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help="profile faces in images, folders or videos",
                              description="Detect faces and report perceived age group, gender and ethnicity.")
    p.add_argument("paths", nargs="+", help="image files, folders or video files")
    p.add_argument("--model", help="auto | farl | clip | tiny | checkpoint file or fine-tuned folder")
    p.add_argument("--config", help="YAML with profiler settings (or the node's params file)")
    p.add_argument("--models-dir", help="folder with downloaded weights (default: $DEMOPROF_MODELS or models/)")
    p.add_argument("--device", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--attributes", help="comma-separated subset of age,gender,race to report")
    p.add_argument("--detectors", help="comma-separated detector chain, e.g. scrfd,yunet,haar")
    p.add_argument("--prompts", help="YAML prompt file (see config/prompts.yaml)")
    p.add_argument("--min-confidence", type=float, help="below this the attribute is 'undetermined'")
    p.add_argument("--max-faces", type=int, help="at most this many faces per image, largest first")
    p.add_argument("--min-face-size", type=int, help="ignore faces smaller than this (pixels)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--annotate", metavar="OUT_DIR", help="write each image with boxes and labels into OUT_DIR")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_profile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demoprof", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_profile_parser(subparsers)
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(f"demoprof_ros.{name}").register_cli(subparsers)
    return parser


def _version() -> str:
    from . import __version__

    return f"demoprof {__version__}"


def _configure_logging(verbose: int) -> None:
    """Our own messages from INFO (DEBUG with -vv); other libraries' only from WARNING (INFO with -v)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("demoprof", "demoprof_ros"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _run_subcommand(name: str, argv: Sequence[str] | None) -> int:
    return main([name, *(sys.argv[1:] if argv is None else argv)])


def train_main(argv: Sequence[str] | None = None) -> int:
    """`demoprof-train` = `demoprof train`."""
    return _run_subcommand("train", argv)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """`demoprof-eval` = `demoprof eval`."""
    return _run_subcommand("eval", argv)


if __name__ == "__main__":
    sys.exit(main())
