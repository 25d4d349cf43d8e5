"""OpenCV's frontal-face Haar cascade: ships with OpenCV, so there is always a detector; no landmarks."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from .base import DetectorUnavailable, FaceDetector, RawDetection

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Where the cascade lives when OpenCV comes from a distribution package (no cv2.data), e.g. ROS on Ubuntu.
_HAAR_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/local/share/opencv4/haarcascades",
              "/usr/share/opencv/haarcascades")

class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade: always there, no landmarks, misses profiles and tilted faces.

    A cascade has no calibrated confidence. The stand-in score is n / (n + min_neighbors), n being the
    number of overlapping raw hits merged into the box: every reported face has n >= min_neighbors, so
    scores lie in [0.5, 1) and grow with the evidence; a score_threshold above 0.5 asks for more hits.
    """

    name = "haar"

    def __init__(self, cascade_path: str | os.PathLike | None = None, *, scale_factor: float = 1.1,
                 min_neighbors: int = 5, **settings: Any) -> None:
        super().__init__(**settings)
        if not scale_factor > 1.0 or isinstance(min_neighbors, bool) or min_neighbors < 1:
            raise ValueError(f"scale_factor must be > 1 and min_neighbors >= 1, got {scale_factor!r}, "
                             f"{min_neighbors!r}")
        path = Path(cascade_path) if cascade_path else haar_cascade_path()
        model = cv2.CascadeClassifier(str(path))
        if model.empty():
            raise DetectorUnavailable(f"{path}: Haar cascade missing or unreadable (OpenCV ships "
                                      f"{HAAR_CASCADE} in cv2.data.haarcascades)")
        self.model = model
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.source = str(path)

    def _detect(self, image: np.ndarray, min_size: float) -> Iterable[RawDetection]:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        side = max(1, int(min_size))
        rects, counts = self.model.detectMultiScale2(gray, scaleFactor=self.scale_factor,
                                                     minNeighbors=self.min_neighbors, minSize=(side, side))
        for (x, y, w, h), n in zip(rects, counts):
            yield (x, y, x + w, y + h), float(n) / (float(n) + self.min_neighbors), None


def haar_cascade_path() -> Path:
    """OpenCV's frontal-face cascade: cv2.data (pip wheels) or the distribution's share folder."""
    folders = ([cv2.data.haarcascades] if hasattr(cv2, "data") else []) + list(_HAAR_DIRS)
    for folder in folders:
        if (Path(folder) / HAAR_CASCADE).is_file():
            return Path(folder) / HAAR_CASCADE
    return Path(folders[0]) / HAAR_CASCADE
