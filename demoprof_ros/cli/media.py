"""What `demoprof profile` reads and writes: input planning (checked before the model loads) and annotations.

Folders are searched recursively for images and videos; every other file is reported as skipped (never
silently lost), and a folder with nothing we can read is a usage error. `--annotate` is either a folder
(annotated images as <stem>.jpg, annotated videos as <stem>.mp4) or one video file for a single video input.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..core.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_video
from ..core.outputs import OutputPathError, check_output_dir, check_output_file

log = logging.getLogger("demoprof")

#: Video containers `--annotate FILE` can write, with the codec used (both are in OpenCV's own builds).
VIDEO_WRITERS = {".mp4": "mp4v", ".avi": "MJPG"}


class UsageError(ValueError):
    """Bad inputs or outputs found before any work: one message, exit 2."""


@dataclass
class InputPlan:
    """Files to profile in order, files skipped in folders (path, reason), and paths that do not exist."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _walk(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    found, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            suffix = path.suffix.lower()
            if name.startswith("."):
                continue
            if suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS:
                found.append(path)
            else:
                skipped.append((str(path), f"unsupported file type '{suffix or name}'"))
    return sorted(found), skipped


def plan_inputs(paths: Sequence[str]) -> InputPlan:
    """Expand folders; a folder without a single image or video is a UsageError naming what it held."""
    plan = InputPlan()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, skipped = _walk(path)
            if not found:
                held = f"; skipped {len(skipped)} unsupported file(s), e.g. {Path(skipped[0][0]).name}" if skipped \
                    else " (it is empty)"
                raise UsageError(f"{path}: no image or video in this folder{held}. Supported: "
                                 f"{' '.join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))}")
            plan.files += found
            plan.skipped += skipped
        elif path.exists():
            plan.files.append(path)
        else:
            plan.missing.append(raw)
    return plan


def check_annotate(target: Path | None, plan: InputPlan) -> None:
    """`--annotate FILE.mp4` takes exactly one video input; a folder target needs no more than its path check."""
    if target is None or target.suffix.lower() not in VIDEO_WRITERS:
        return
    videos = [f for f in plan.files if is_video(f)]
    if len(plan.files) != 1 or len(videos) != 1:
        raise UsageError(f"--annotate {target}: an annotated video file takes exactly one video input, got "
                         f"{len(videos)} video(s) among {len(plan.files)} input file(s); give a folder instead")


def annotate_target(value: str) -> Path:
    """argparse `type=` of --annotate: a video file (.mp4 / .avi) or a folder, checked for writing."""
    import argparse

    try:
        if Path(value).suffix.lower() in VIDEO_WRITERS:
            return check_output_file(value, "--annotate")
        return check_output_dir(value, "--annotate")
    except OutputPathError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def video_fps(path: Path, default: float = 25.0) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return fps if math.isfinite(fps) and 0.0 < fps <= 1000.0 else default


class VideoSink:
    """Annotated frames of one video into a video file, opened on the first frame (its size fixes the video's)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> bool:
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_WRITERS.get(self.path.suffix.lower(), "mp4v"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self._writer.isOpened():
                raise OSError(f"OpenCV cannot write a video to {self.path}")
        self._writer.write(frame)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def annotated_path(folder: Path, source: Path, written: set[Path], suffix: str) -> Path:
    """folder/<stem><suffix>, with a numeric suffix where names collide."""
    out, n = folder / f"{source.stem}{suffix}", 1
    while out in written:
        out, n = folder / f"{source.stem}-{n}{suffix}", n + 1
    written.add(out)
    return out
