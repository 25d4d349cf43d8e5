"""OpenCV YuNet (cv2.FaceDetectorYN): small, 5 landmarks; needs one onnx file (`demoprof models fetch yunet`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from .base import DetectorUnavailable, FaceDetector, RawDetection, fetched_path


class YuNetDetector(FaceDetector):
    """OpenCV's YuNet (cv2.FaceDetectorYN) from an onnx file, e.g. face_detection_yunet_2023mar.onnx."""

    name = "yunet"
    has_landmarks = True

    def __init__(self, model_path: str | os.PathLike, *, nms_threshold: float = 0.3, top_k: int = 5000,
                 **settings: Any) -> None:
        super().__init__(**settings)
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise DetectorUnavailable(f"{path} does not exist (run `demoprof models fetch yunet`)")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise DetectorUnavailable(f"OpenCV {cv2.__version__} has no FaceDetectorYN (needs OpenCV >= 4.5.4)")
        try:
            self.model = cv2.FaceDetectorYN.create(str(path), "", (320, 320), self.score_threshold,
                                                   nms_threshold, top_k)
        except cv2.error as error:
            raise DetectorUnavailable(f"{path}: OpenCV cannot load it as a YuNet model "
                                      f"({str(error).strip().splitlines()[-1]})") from error
        self.source = str(path)

    def _detect(self, image: np.ndarray, min_size: float) -> Iterable[RawDetection]:
        self.model.setInputSize((image.shape[1], image.shape[0]))
        _, faces = self.model.detect(image)
        for row in () if faces is None else faces:  # x, y, w, h, 5 x (x, y), score
            x, y, w, h = (float(v) for v in row[:4])
            yield (x, y, x + w, y + h), float(row[14]), row[4:14].reshape(5, 2)


def find_yunet(yunet_path: str | os.PathLike = "", models_dir: str | os.PathLike | None = None) -> Path:
    """The YuNet onnx to use: `yunet_path`, else the models folder."""
    if yunet_path:
        path = Path(yunet_path).expanduser()
        if not path.is_file():
            raise DetectorUnavailable(f"yunet_path {path} does not exist (run `demoprof models fetch yunet` "
                                      "or correct the path)")
        return path
    root, default = fetched_path("yunet", models_dir)
    if default.is_file():
        return default
    others = sorted(root.glob("face_detection_yunet*.onnx"))
    if others:
        return others[-1]  # the newest release by name
    raise DetectorUnavailable(f"no YuNet model at {default} (run `demoprof models fetch yunet`, or set yunet_path)")
