"""The face crops the scorer sees: square crops with FairFace's margin, optionally 5-point aligned."""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..images import to_bgr8
from ..results import Detection

#: insightface / ArcFace 5-point template for a 112x112 crop: left eye, right eye, nose tip, left and right
#: mouth corners, "left" meaning the image's left. YuNet's order (subject's right eye first) is the same
#: points in the same image order.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


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
