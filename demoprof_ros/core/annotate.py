"""Drawing profiles onto frames (CLI --annotate, the node's debug image)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .results import FaceProfile


def profile_caption(profile: FaceProfile) -> str:
    """Short label such as '#3 20-29 Female East Asian' ('?' for undetermined attributes)."""
    parts = [f"#{profile.face_id}"] if profile.face_id is not None else []
    for result in profile.scores.attributes.values():
        parts.append("?" if result.undetermined else result.label)
    return " ".join(parts) if parts else "face"


def draw_profiles(image: np.ndarray, profiles: Sequence[FaceProfile]) -> np.ndarray:
    """A copy of the BGR frame with a box and a caption per face."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 400))
    scale = max(0.4, min(out.shape[:2]) / 900)
    for profile in profiles:
        x1, y1, x2, y2 = (int(round(v)) for v in profile.detection.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 255), thickness)
        text = profile_caption(profile)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y2 + th + 4
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty + base), (0, 0, 0), cv2.FILLED)
        cv2.putText(out, text, (x1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out
