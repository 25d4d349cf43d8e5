"""insightface SCRFD: accurate, 5 landmarks; needs the insightface pack (`demoprof models fetch insightface`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .base import DetectorUnavailable, FaceDetector, RawDetection, fetched_path, onnx_providers


class ScrfdDetector(FaceDetector):
    """insightface SCRFD (e.g. buffalo_l/det_10g.onnx) through insightface.model_zoo and onnxruntime."""

    name = "scrfd"
    has_landmarks = True

    def __init__(self, model_path: str | os.PathLike, *, device: str = "cpu", input_size: int = 640,
                 nms_threshold: float = 0.4, **settings: Any) -> None:
        super().__init__(**settings)
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise DetectorUnavailable(f"{path} does not exist (run `demoprof models fetch insightface`)")
        try:
            from insightface.model_zoo import get_model
        except ImportError as error:
            raise DetectorUnavailable(f"insightface is not installed ({error}); pip install insightface") from error
        providers = onnx_providers(device)
        try:
            model = get_model(str(path), providers=providers)
        except Exception as error:  # onnxruntime / onnx raise many types for a bad file
            raise DetectorUnavailable(f"{path}: cannot load as an ONNX model ({type(error).__name__}: "
                                      f"{error})") from error
        if model is None or getattr(model, "taskname", None) != "detection":
            raise DetectorUnavailable(f"{path}: not an insightface SCRFD detector (expected e.g. det_10g.onnx "
                                      "from the buffalo_l pack)")
        model.prepare(ctx_id=0 if providers[0] != "CPUExecutionProvider" else -1,
                      input_size=(input_size, input_size), det_thresh=self.score_threshold,
                      nms_thresh=nms_threshold)
        self.model = model
        self.source = str(path)
        self.has_landmarks = bool(getattr(model, "use_kps", True))

    def _detect(self, image: np.ndarray, min_size: float) -> Iterable[RawDetection]:
        boxes, points = self.model.detect(image)
        for i, row in enumerate(boxes):
            yield row[:4], float(row[4]), None if points is None else points[i]


def find_scrfd(scrfd_path: str | os.PathLike = "", models_dir: str | os.PathLike | None = None) -> Path:
    """The SCRFD onnx to use: `scrfd_path` (a file or an insightface pack folder), else the models folder."""
    if scrfd_path:
        path = Path(scrfd_path).expanduser()
        if path.is_dir():
            found = _pack_detector(path)
            if found is None:
                raise DetectorUnavailable(f"scrfd_path {path}: no det_*.onnx or scrfd*.onnx in this folder "
                                          "(expected an insightface pack such as buffalo_l)")
            return found
        if not path.is_file():
            raise DetectorUnavailable(f"scrfd_path {path} does not exist (run `demoprof models fetch insightface` "
                                      "or correct the path)")
        return path
    root, default = fetched_path("insightface", models_dir)
    if default.is_file():
        return default
    for pack in sorted(root.iterdir()) if root.is_dir() else ():
        found = _pack_detector(pack) if pack.is_dir() else None
        if found is not None:
            return found
    raise DetectorUnavailable(f"no insightface detector at {default} (run `demoprof models fetch insightface`, "
                              "or set scrfd_path)")


def _pack_detector(pack: Path) -> Path | None:
    names = sorted(p for p in pack.glob("*.onnx") if p.name.startswith("det_") or "scrfd" in p.name.lower())
    return names[0] if names else None
