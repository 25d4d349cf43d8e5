"""Face detection behind one interface, and the face crops the scorer sees.

Three back-ends, best first: insightface SCRFD (accurate, 5 landmarks, needs the insightface pack),
OpenCV YuNet (small, 5 landmarks, needs one onnx file) and OpenCV's Haar cascade (ships with OpenCV, so
there is always a detector, but it misses turned faces and gives no landmarks). `build_detector` walks a
chain of them and says which it picked and why the earlier ones were not available, so a robot that
silently runs on Haar is visible in the log.

Every back-end shares the same post-processing (FaceDetector.detect): frames larger than `max_side` are
detected on a downscaled copy (the cost of Haar grows with pixels; SCRFD/YuNet resize anyway) and boxes
are scaled back, clipped to the frame, filtered by score and `min_face_size`, sorted largest first and
cut to `max_faces`.

Model files are looked up where `demoprof models fetch insightface` / `yunet` put them (model_zoo.ASSETS)
under the models directory (models.default_models_dir()): buffalo_l/det_10g.onnx and
face_detection_yunet_2023mar.onnx. Other insightface packs (a folder holding det_*.onnx or scrfd*.onnx,
e.g. buffalo_s/) and other YuNet releases (face_detection_yunet*.onnx) there are found as well.
"""
from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np

from .images import to_bgr8
from .results import Detection

DEFAULT_CHAIN = ("scrfd", "yunet", "haar")
DEFAULT_MAX_SIDE = 1280
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Where the cascade lives when OpenCV comes from a distribution package (no cv2.data), e.g. ROS on Ubuntu.
_HAAR_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/local/share/opencv4/haarcascades",
              "/usr/share/opencv/haarcascades")

#: insightface / ArcFace 5-point template for a 112x112 crop: left eye, right eye, nose tip, left and right
#: mouth corners, "left" meaning the image's left. YuNet's order (subject's right eye first) is the same
#: points in the same image order.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)

_log = logging.getLogger(__name__)

RawDetection = tuple[Sequence[float], float, "np.ndarray | None"]  # (x1, y1, x2, y2), score, (5, 2) or None


class DetectorUnavailable(RuntimeError):
    """A back-end that cannot run here (missing file or package, unreadable model); the text says which."""


class FaceDetector(ABC):
    """`detect(frame) -> list[Detection]`, largest first; subclasses only implement `_detect`."""

    name: str = ""
    has_landmarks: bool = False

    def __init__(self, *, score_threshold: float = 0.5, min_face_size: int = 32, max_faces: int = 8,
                 max_side: int = DEFAULT_MAX_SIDE) -> None:
        _check_settings(score_threshold, min_face_size, max_faces, max_side)
        self.score_threshold = float(score_threshold)
        self.min_face_size = int(min_face_size)
        self.max_faces = int(max_faces)
        self.max_side = int(max_side)
        self.source = ""  # the model file this back-end runs, for logs and reports

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r})"

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in `image_bgr` (anything images.to_bgr8 accepts), in its pixel coordinates, largest first."""
        frame = to_bgr8(image_bgr)
        height, width = frame.shape[:2]
        small = frame
        if max(height, width) > self.max_side:
            ratio = self.max_side / max(height, width)
            size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / width, small.shape[0] / height
        found = []
        for box, score, landmarks in self._detect(small, self.min_face_size * min(sx, sy)):
            score = float(score)
            if not score >= self.score_threshold:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, x2 = (min(max(v / sx, 0.0), float(width)) for v in (x1, x2))
            y1, y2 = (min(max(v / sy, 0.0), float(height)) for v in (y1, y2))
            if min(x2 - x1, y2 - y1) < max(self.min_face_size, 1e-6):
                continue
            points = None
            if landmarks is not None:
                points = (np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
                          / np.array([sx, sy], dtype=np.float32))
            found.append(Detection(box=(x1, y1, x2, y2), score=score, landmarks=points))
        found.sort(key=lambda d: (-d.area, -d.score))
        return found[:self.max_faces]

    @abstractmethod
    def _detect(self, image: np.ndarray, min_size: float) -> Iterable[RawDetection]:
        """Raw faces in `image` (BGR uint8, already downscaled); `min_size` is min_face_size at this scale."""


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


def onnx_providers(device: str = "cpu") -> list[str]:
    """onnxruntime providers for `device`: CUDA first when asked and present, CPU always as the fallback."""
    if str(device).startswith("cuda"):
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        _log.warning("device %s asked for, but onnxruntime has no CUDAExecutionProvider: detector runs on CPU",
                     device)
    return ["CPUExecutionProvider"]


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
    root, default = _fetched_path("insightface", models_dir)
    if default.is_file():
        return default
    for pack in sorted(root.iterdir()) if root.is_dir() else ():
        found = _pack_detector(pack) if pack.is_dir() else None
        if found is not None:
            return found
    raise DetectorUnavailable(f"no insightface detector at {default} (run `demoprof models fetch insightface`, "
                              "or set scrfd_path)")


def find_yunet(yunet_path: str | os.PathLike = "", models_dir: str | os.PathLike | None = None) -> Path:
    """The YuNet onnx to use: `yunet_path`, else the models folder."""
    if yunet_path:
        path = Path(yunet_path).expanduser()
        if not path.is_file():
            raise DetectorUnavailable(f"yunet_path {path} does not exist (run `demoprof models fetch yunet` "
                                      "or correct the path)")
        return path
    root, default = _fetched_path("yunet", models_dir)
    if default.is_file():
        return default
    others = sorted(root.glob("face_detection_yunet*.onnx"))
    if others:
        return others[-1]  # the newest release by name
    raise DetectorUnavailable(f"no YuNet model at {default} (run `demoprof models fetch yunet`, or set yunet_path)")


def _pack_detector(pack: Path) -> Path | None:
    names = sorted(p for p in pack.glob("*.onnx") if p.name.startswith("det_") or "scrfd" in p.name.lower())
    return names[0] if names else None


def _fetched_path(asset: str, models_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    """(models folder, where `demoprof models fetch <asset>` writes the file in it)."""
    from . import model_zoo  # imported here: it pulls in torch, which detection itself never needs
    from .models import default_models_dir

    root = Path(models_dir).expanduser() if models_dir else Path(default_models_dir())
    return root, root / model_zoo.ASSETS[asset].target


def build_detector(chain: Sequence[str] | str = DEFAULT_CHAIN, models_dir: str | os.PathLike | None = None,
                   scrfd_path: str | os.PathLike = "", yunet_path: str | os.PathLike = "",
                   score_threshold: float = 0.5, min_face_size: int = 32, max_faces: int = 8,
                   logger: Any = None, *, device: str = "cpu", max_side: int = DEFAULT_MAX_SIDE) -> FaceDetector:
    """The first back-end of `chain` ("scrfd", "yunet", "haar"; a list or "a,b,c") that can run here.

    Logs the pick and why each earlier one was unavailable (info; warning where the user named a path);
    raises DetectorUnavailable listing every reason when none can run, ValueError for bad settings.
    `logger` may be a logging.Logger or an rclpy logger (only .info/.warning with one string are used).
    """
    names = [c.strip() for c in chain.split(",")] if isinstance(chain, str) else [str(c).strip() for c in chain]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in _BUILDERS]
    if not names or unknown:
        problem = f"; unknown: {', '.join(unknown)}" if unknown else ""
        raise ValueError(f"detector chain {chain!r}: expected one or more of {', '.join(_BUILDERS)}{problem}")
    _check_settings(score_threshold, min_face_size, max_faces, max_side)
    log = logger if logger is not None else _log
    settings = dict(score_threshold=score_threshold, min_face_size=min_face_size, max_faces=max_faces,
                    max_side=max_side)
    explicit = {"scrfd": bool(scrfd_path), "yunet": bool(yunet_path)}
    reasons: list[str] = []
    for name in names:
        try:
            detector = _BUILDERS[name](models_dir=models_dir, scrfd_path=scrfd_path, yunet_path=yunet_path,
                                       device=device, **settings)
        except DetectorUnavailable as error:
            reasons.append(f"{name}: {error}")
            (log.warning if explicit.get(name) else log.info)(f"face detector {name} unavailable: {error}")
            continue
        skipped = f" - skipped {', '.join(r.split(':')[0] for r in reasons)} (unavailable)" if reasons else ""
        log.info(f"face detector: {detector.name} ({detector.source}){skipped}")
        return detector
    raise DetectorUnavailable("no face detector available: " + "; ".join(reasons))


_BUILDERS: dict[str, Callable[..., FaceDetector]] = {
    "scrfd": lambda models_dir, scrfd_path, yunet_path, device, **s: ScrfdDetector(
        find_scrfd(scrfd_path, models_dir), device=device, **s),
    "yunet": lambda models_dir, scrfd_path, yunet_path, device, **s: YuNetDetector(
        find_yunet(yunet_path, models_dir), **s),
    "haar": lambda models_dir, scrfd_path, yunet_path, device, **s: HaarDetector(**s),
}


def _check_settings(score_threshold: Any, min_face_size: Any, max_faces: Any, max_side: Any) -> None:
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


# --- crops ----------------------------------------------------------------------------------------------------

def crop_face(image: np.ndarray, detection: Detection, margin: float = 0.25, align: bool = False,
              output_size: int | None = None) -> np.ndarray:
    """Square BGR crop around a face, as FairFace crops its training faces.

    Side = max(box w, h) * (1 + 2 * margin), centred on the box; parts outside the frame are filled by
    replicating the border (black bars would be a feature the model never saw in training). With
    `align` and landmarks, the face is rotated/scaled so that its 5 points land on the ArcFace template
    placed inside the same margin (alignment_matrix); without landmarks it falls back to the plain crop.
    `output_size` resizes to that side; None keeps the crop's natural size.
    """
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) \
            or margin < 0:
        raise ValueError(f"margin: expected a finite number >= 0, got {margin!r}")
    if output_size is not None and (isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer))
                                    or output_size < 1):
        raise ValueError(f"output_size: expected None or an integer >= 1, got {output_size!r}")
    frame = to_bgr8(image)
    x1, y1, x2, y2 = (float(v) for v in detection.box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise ValueError(f"detection box {detection.box}: expected finite (x1, y1, x2, y2) with x2 > x1, y2 > y1")
    side = max(1, int(round(max(x2 - x1, y2 - y1) * (1 + 2 * margin))))
    if align and detection.landmarks is not None:
        size = int(output_size) if output_size else side
        matrix = alignment_matrix(detection.landmarks, size, margin)
        if matrix is not None:
            return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    left = int(round((x1 + x2) / 2 - side / 2))
    top = int(round((y1 + y2) / 2 - side / 2))
    crop = _crop_replicate(frame, left, top, side)
    if output_size and output_size != side:
        interpolation = cv2.INTER_AREA if output_size < side else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (int(output_size), int(output_size)), interpolation=interpolation)
    return crop


def _crop_replicate(frame: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    height, width = frame.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, width), min(top + side, height)
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"crop [{left}, {top}, {left + side}, {top + side}] lies outside the {width}x{height} image")
    inner = frame[y0:y1, x0:x1]
    pads = (y0 - top, top + side - y1, x0 - left, left + side - x1)
    if not any(pads):
        return inner.copy()
    return cv2.copyMakeBorder(inner, *pads, borderType=cv2.BORDER_REPLICATE)


def alignment_template(size: int, margin: float = 0.25) -> np.ndarray:
    """ArcFace 5-point template for a size x size crop with `margin` around the 112-px ArcFace square."""
    return ((ARCFACE_TEMPLATE_112 / 112.0 + margin) / (1 + 2 * margin) * size).astype(np.float32)


def alignment_matrix(landmarks: np.ndarray, size: int, margin: float = 0.25) -> np.ndarray | None:
    """2x3 similarity (rotation, uniform scale, shift) taking the 5 landmarks onto alignment_template.

    None when OpenCV cannot fit one (e.g. all points equal); crop_face then uses the plain crop.
    """
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape not in ((5, 2), (10,)) or not np.isfinite(points).all():
        raise ValueError(f"landmarks: expected 5 finite (x, y) points, got shape {points.shape}")
    matrix, _ = cv2.estimateAffinePartial2D(points.reshape(5, 2), alignment_template(size, margin),
                                            method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:, :2])) < 1e-9:
        return None
    return matrix
