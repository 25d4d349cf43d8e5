"""The detector interface every back-end implements, and what back-ends share (settings, onnx providers).

A back-end subclasses FaceDetector and implements `_detect` on an already downscaled BGR frame; `detect`
does the shared post-processing. Back-ends register a builder in `chain.py` so `build_detector` can pick them.
"""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from ..images import to_bgr8
from ..results import Detection, DetectionDrops

DEFAULT_MAX_SIDE = 1280

_log = logging.getLogger(__name__)

RawDetection = tuple[Sequence[float], float, "np.ndarray | None"]  # (x1, y1, x2, y2), score, (5, 2) or None


class DetectorUnavailable(RuntimeError):
    """A back-end that cannot run here (missing file or package, unreadable model); the text says which."""


class FaceDetector(ABC):
    """`detect(frame) -> list[Detection]`, largest first; subclasses only implement `_detect`."""

    name: str = ""
    has_landmarks: bool = False

    def __init__(self, *, score_threshold: float = 0.5, min_face_size: int = 24, max_faces: int = 8,
                 max_side: int = DEFAULT_MAX_SIDE) -> None:
        check_settings(score_threshold, min_face_size, max_faces, max_side)
        self.score_threshold = float(score_threshold)
        self.min_face_size = int(min_face_size)
        self.max_faces = int(max_faces)
        self.max_side = int(max_side)
        self.source = ""  # the model file this back-end runs, for logs and reports

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r})"

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in `image_bgr` (anything images.to_bgr8 accepts), in its pixel coordinates, largest first."""
        return self.detect_counted(image_bgr)[0]

    def detect_counted(self, image_bgr: np.ndarray) -> tuple[list[Detection], DetectionDrops]:
        """detect() plus how many faces min_face_size and max_faces dropped (the profiler reports these)."""
        frame = to_bgr8(image_bgr)
        height, width = frame.shape[:2]
        small = frame
        if max(height, width) > self.max_side:
            ratio = self.max_side / max(height, width)
            size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / width, small.shape[0] / height
        found, small_faces = [], 0
        for box, score, landmarks in self._detect(small, self.min_face_size * min(sx, sy)):
            score = float(score)
            if not score >= self.score_threshold:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, x2 = (min(max(v / sx, 0.0), float(width)) for v in (x1, x2))
            y1, y2 = (min(max(v / sy, 0.0), float(height)) for v in (y1, y2))
            if min(x2 - x1, y2 - y1) < max(self.min_face_size, 1e-6):
                small_faces += 1
                continue
            points = None
            if landmarks is not None:
                points = (np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
                          / np.array([sx, sy], dtype=np.float32))
            found.append(Detection(box=(x1, y1, x2, y2), score=score, landmarks=points))
        found.sort(key=lambda d: (-d.area, -d.score))
        drops = DetectionDrops(min_face_size=small_faces, max_faces=max(0, len(found) - self.max_faces))
        return found[:self.max_faces], drops

    @abstractmethod
    def _detect(self, image: np.ndarray, min_size: float) -> Iterable[RawDetection]:
        """Raw faces in `image` (BGR uint8, already downscaled); `min_size` is min_face_size at this scale."""


def onnx_providers(device: str = "cpu") -> list[str]:
    """onnxruntime providers for `device`: CUDA first when asked and present, CPU always as the fallback."""
    if str(device).startswith("cuda"):
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        _log.warning("device %s asked for, but onnxruntime has no CUDAExecutionProvider: detector runs on CPU",
                     device)
    return ["CPUExecutionProvider"]


def fetched_path(asset: str, models_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    """(models folder, where `demoprof models fetch <asset>` writes the file in it)."""
    from .. import model_zoo  # imported here: it pulls in torch, which detection itself never needs
    from ..models import default_models_dir

    root = Path(models_dir).expanduser() if models_dir else Path(default_models_dir())
    return root, root / model_zoo.ASSETS[asset].target


def check_settings(score_threshold: Any, min_face_size: Any, max_faces: Any, max_side: Any) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not isinstance(score_threshold, (int, float)) or isinstance(score_threshold, bool) \
            or not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold: expected a number in [0, 1], got {score_threshold!r}")
    if not is_int(min_face_size) or min_face_size < 1:
        raise ValueError(f"min_face_size: expected an integer >= 1 (pixels), got {min_face_size!r}")
    if not is_int(max_faces) or max_faces < 1:
        raise ValueError(f"max_faces: expected an integer >= 1, got {max_faces!r}")
    if not is_int(max_side) or max_side < 64:
        raise ValueError(f"max_side: expected an integer >= 64 (pixels), got {max_side!r}")
