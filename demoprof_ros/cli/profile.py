"""`demoprof profile`: faces in images, folders and videos -> a table or JSON lines, optionally annotated.

Everything that can be checked without the model is checked first (settings, input paths, output paths), so
a typo costs a second, not a model load. Videos go through the node's tracker (core/tracking.py): faces keep
a track id while they stay in view and their attributes are fused over the frames, exactly as on /user_profile.
Still images are independent: each face gets a fresh id (never reused within a run) and frames_fused 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..core.outputs import output_dir_arg
from . import records
from .media import (InputPlan, UsageError, VideoSink, annotate_target, annotated_path, check_annotate, plan_inputs,
                    video_fps)

log = logging.getLogger("demoprof")

#: Set to 0 / off / false to switch the caption-embedding cache off (same as --no-text-cache).
TEXT_CACHE_ENV = "DEMOPROF_TEXT_CACHE"


def fail(message: str, code: int) -> int:
    print(f"demoprof: error: {message}", file=sys.stderr)
    return code


def load_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(profiler, tracking, schedule settings) from YAML: a plain mapping, or a ROS params file (its node's
    ros__parameters, keeping only the profiler's, tracker's and schedule's settings; the node checks the rest)."""
    from ..core.profiler import ProfilerConfig

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SystemExit(fail(f"config file not found: {path}", 2)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(fail(f"config file {path} cannot be read: {exc}", 2)) from None
    except yaml.YAMLError as exc:
        raise SystemExit(fail(f"config file {path} is not valid YAML: {exc}", 2)) from None
    if not isinstance(data, dict):
        raise SystemExit(fail(f"config file {path}: expected a mapping at the top level", 2))
    for value in data.values():
        if isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict):
            params = value["ros__parameters"]
            names = {f.name for f in dataclasses.fields(ProfilerConfig)}
            groups = [params.get(g) if isinstance(params.get(g), dict) else {} for g in ("tracking", "schedule")]
            return {k: v for k, v in params.items() if k in names}, dict(groups[0]), dict(groups[1])
    groups = []
    for group in ("tracking", "schedule"):
        settings = data.pop(group, None) or {}
        if not isinstance(settings, dict):
            raise SystemExit(fail(f"config file {path}: {group}: expected a mapping", 2))
        groups.append(settings)
    return data, groups[0], groups[1]


def profile_config(args: argparse.Namespace):
    """(ProfilerConfig, TrackerConfig, ScheduleConfig) from --config and the options; a bad value exits 2."""
    from ..core.profiler import PHOTO_DEFAULTS, ConfigError, ProfilerConfig
    from ..core.schedule import ScheduleConfig
    from ..core.tracking import TrackerConfig

    data, tracking, schedule = load_config_file(args.config) if args.config else ({}, {}, {})
    if args.schedule is not None:
        schedule["enabled"] = args.schedule
    if args.refresh_frames is not None:
        schedule["refresh_frames"] = args.refresh_frames
    data = {**PHOTO_DEFAULTS, **data}  # photos: the most accurate detector, many small faces
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
        cfg = ProfilerConfig.from_dict(data)
        return (cfg, TrackerConfig.from_dict({**tracking, "min_confidence": cfg.min_confidence}),
                ScheduleConfig.from_dict(schedule))
    except (ConfigError, ValueError, TypeError) as exc:
        raise SystemExit(fail(f"bad configuration: {exc}", 2)) from None


def text_cache_dir(args: argparse.Namespace) -> str | None:
    """Where caption embeddings are cached, or None when switched off (--no-text-cache, DEMOPROF_TEXT_CACHE=0)."""
    from ..core.text_cache import default_text_cache_dir

    if not args.text_cache or os.environ.get(TEXT_CACHE_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    return str(args.text_cache_dir or default_text_cache_dir())


def _check_prompts(cfg) -> None:
    if cfg.prompts_file and not Path(cfg.prompts_file).is_file():
        raise UsageError(f"prompts file not found: {cfg.prompts_file}")


def cmd_profile(args: argparse.Namespace) -> int:
    from ..core.detection import DetectorUnavailable
    from ..core.models import ModelLoadError
    from ..core.profiler import Profiler
    from ..core.prompts import PromptError

    cfg, tracking, schedule = profile_config(args)
    try:
        plan = plan_inputs(args.paths)
        check_annotate(args.annotate, plan)
        _check_prompts(cfg)
    except UsageError as exc:
        return fail(str(exc), 2)
    emit = Emitter(args.json)
    failures = emit.preamble(plan)
    if not plan.files:
        return fail("none of the inputs exists", 1)
    try:
        profiler = Profiler.from_config(cfg, logger=log, text_cache_dir=text_cache_dir(args))
    except (ModelLoadError, DetectorUnavailable, PromptError, FileNotFoundError, ValueError) as exc:
        return fail(str(exc), 2)
    log.info("model %s, detector %s", profiler.model_name, profiler.detector_name)
    cache = profiler.scorer.text_cache
    run = ProfileRun(profiler, tracking, emit, args.annotate, progress=args.progress, schedule=schedule)
    failures += run.all(plan.files)
    if cache is not None:
        log.info("caption embeddings: %d from the cache, %d computed (%s)", cache.hits, cache.misses, cache.root)
    if failures:
        log.warning("%d input(s) could not be read or written", failures)
    return 1 if failures else 0


class Emitter:
    """Prints results: JSON lines (records.py) or a table; problems also go to the log (stderr)."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        if not json_mode:
            print(f"{'source':40} {'face':>4} {'box (x,y,w,h)':>22}  {'age':>12} {'gender':>7} {'race':>16}  "
                  "top description")

    def _print(self, record: dict[str, Any]) -> None:
        import json

        print(json.dumps(record), flush=True)

    def preamble(self, plan: InputPlan, shown: int = 10) -> int:
        """Report skipped and missing inputs before the model loads; returns the number of failures."""
        for i, (path, reason) in enumerate(plan.skipped):
            if i < shown:
                log.warning("skipped %s: %s", path, reason)
            if self.json:
                self._print(records.skipped_record(path, reason))
        if len(plan.skipped) > shown:
            log.warning("... and %d more unsupported file(s) skipped", len(plan.skipped) - shown)
        for raw in plan.missing:
            self.error(raw, None, f"{raw}: no such file or folder")
        return len(plan.missing)

    def error(self, source: str, frame: int | None, error: object) -> None:
        log.warning("skipped %s: %s", source if frame is None else f"{source} frame {frame}", error)
        if self.json:
            self._print(records.error_record(source, frame, error))

    def frame(self, source: str, frame: int | None, image, profiler, latency_ms: float, faces) -> None:
        if self.json:
            self._print(records.frame_record(source, frame, (image.shape[1], image.shape[0]), profiler.model_name,
                                             profiler.detector_name, latency_ms, faces,
                                             profiler.last_drops.to_dict()))
        else:
            print_table(source if frame is None else f"{source}:{frame}", faces)


def print_table(source: str, profiles: Sequence[Any]) -> None:
    if not profiles:
        print(f"{source[-40:]:40} {'-':>4}  no face found")
    for p in profiles:
        x1, y1, x2, y2 = p.detection.box
        box = f"{x1:.0f},{y1:.0f},{x2 - x1:.0f},{y2 - y1:.0f}"
        cells = []
        for name in ("age", "gender", "race"):
            r = p.scores.attributes.get(name)
            cells.append("off" if r is None else f"{r.label}:{r.probability:.2f}" if not r.undetermined
                         else f"?({r.top}:{r.probability:.2f})")
        top = p.scores.joint[0].text if p.scores.joint else ""
        print(f"{source[-40:]:40} {p.face_id:>4} {box:>22}  {cells[0]:>12} {cells[1]:>7} {cells[2]:>16}  {top}")


class ProfileRun:
    """One pass over the planned files: stills one by one, videos through a tracker each."""

    def __init__(self, profiler, tracking, emit: Emitter, annotate: Path | None, progress: bool = True,
                 schedule=None) -> None:
        self.profiler = profiler
        self.tracking = tracking
        self.schedule = schedule
        self.emit = emit
        self.annotate = annotate
        self.progress = progress
        self.written: set[Path] = set()
        self.next_id = 1  # ids of faces in still images: fresh for each face, never reused in a run
        self.failures = 0

    def all(self, files: Sequence[Path]) -> int:
        from tqdm import tqdm

        from ..core.images import is_video, iter_media

        media = [(path, iter_media([path])) for path in files]
        total = sum(m.total for _, m in media)
        with tqdm(total=total, unit="frame", file=sys.stderr, disable=not self.progress or total <= 1) as bar:
            for path, items in media:
                (self.video if is_video(path) else self.stills)(path, items, bar)
        return self.failures

    def _profile(self, image):
        start = time.perf_counter()
        profiles = self.profiler(image)
        return profiles, (time.perf_counter() - start) * 1000.0

    def stills(self, path: Path, items, bar) -> None:
        import cv2

        from ..core.annotate import draw_profiles

        for item in items:
            bar.update(1)
            if item.error is not None:
                self.failures += 1
                self.emit.error(item.source, None, item.error)
                continue
            profiles, latency_ms = self._profile(item.image)
            for profile in profiles:
                profile.face_id, self.next_id = self.next_id, self.next_id + 1
            self.emit.frame(item.source, None, item.image, self.profiler, latency_ms, profiles)
            if self.annotate is not None:
                out = annotated_path(self.annotate, path, self.written, ".jpg")
                out.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(out), draw_profiles(item.image, profiles)):
                    self.failures += 1
                    log.warning("could not write %s", out)

    def _sink(self, path: Path) -> VideoSink | None:
        if self.annotate is None:
            return None
        target = self.annotate if self.annotate.suffix.lower() in (".mp4", ".avi") and not self.annotate.is_dir() \
            else annotated_path(self.annotate, path, self.written, ".mp4")
        return VideoSink(target, video_fps(path))

    def video(self, path: Path, items, bar) -> None:
        from ..core.annotate import draw_profiles
        from ..core.schedule import TrackedProfiler
        from ..core.tracking import FaceTracker

        pipeline = TrackedProfiler(self.profiler, FaceTracker(self.tracking), self.schedule)
        fps = video_fps(path)  # for seconds_since_scored in video time
        sink = self._sink(path)
        prefix = f"{path}:"
        try:
            for item in items:
                bar.update(1)
                index = item.source[len(prefix):]
                frame = int(index) if item.source.startswith(prefix) and index.isdigit() else None
                if item.error is not None:
                    self.failures += 1
                    self.emit.error(str(path), frame, item.error)
                    continue
                start = time.perf_counter()
                faces = pipeline(item.image, now=(frame or 0) / fps)
                latency_ms = (time.perf_counter() - start) * 1000.0
                self.emit.frame(str(path), frame, item.image, self.profiler, latency_ms, faces)
                if sink is not None:
                    try:
                        sink.write(draw_profiles(item.image, faces))
                    except OSError as exc:
                        self.failures += 1
                        log.warning("%s; no annotated video", exc)
                        sink = None
        finally:
            if sink is not None:
                sink.close()
                log.info("wrote %s (%d frames)", sink.path, sink.frames)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help="profile faces in images, folders or videos",
                              description="Detect faces and report perceived age group, gender and ethnicity.")
    p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or video files")
    p.add_argument("--model", help="auto | farl | clip | tiny | checkpoint file or fine-tuned folder")
    p.add_argument("--config", help="YAML with profiler (and tracking) settings, or the node's params file")
    p.add_argument("--models-dir", help="folder with downloaded weights (default: $DEMOPROF_MODELS or models/)")
    p.add_argument("--device", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--attributes", help="comma-separated subset of age,gender,race to report")
    p.add_argument("--detectors", help="comma-separated detector chain, e.g. scrfd,yunet,haar")
    p.add_argument("--prompts", help="YAML prompt file (see config/prompts.yaml)")
    p.add_argument("--min-confidence", type=float, help="below this the attribute is 'undetermined'")
    p.add_argument("--max-faces", type=int, help="at most this many faces per image, largest first")
    p.add_argument("--min-face-size", type=int, help="ignore faces smaller than this (pixels)")
    p.add_argument("--json", action="store_true",
                   help="JSON lines on stdout: one record per image, video frame, error or skipped file "
                        "(docs/profile_schema.json, $defs/cli_record)")
    p.add_argument("--annotate", metavar="OUT", type=annotate_target,
                   help="draw boxes and labels: OUT a folder (images as .jpg, videos as .mp4) or, for one video "
                        "input, a .mp4 / .avi file")
    p.add_argument("--no-text-cache", dest="text_cache", action="store_false",
                   help=f"encode the prompts afresh instead of caching their embeddings on disk "
                        f"(also: {TEXT_CACHE_ENV}=0)")
    p.add_argument("--text-cache-dir", type=output_dir_arg("--text-cache-dir"),
                   help="where caption embeddings are cached (default $DEMOPROF_CACHE/text or "
                        "~/.cache/demoprof/text; never face data)")
    p.add_argument("--no-schedule", dest="schedule", action="store_false", default=None,
                   help="videos: score every face on every frame (default: only new, unsettled or moved faces "
                        "and a refresh; config/profiler.yaml `schedule`)")
    p.add_argument("--refresh-frames", type=int, help="videos: re-score a settled face at least every N frames")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_profile)
