"""Plain data records passed between detection, scoring, tracking and the outputs (JSON, ROS).

Their `to_dict` forms are the profile JSON schema (docs/profile_schema.json); keep the two in step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNDETERMINED = "undetermined"


@dataclass
class Detection:
    """One face found in a frame: pixel box (x1, y1, x2, y2), detector score, optional 5 landmarks."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None  # (5, 2) float32: eyes, nose, mouth corners (insightface order)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass
class DetectionDrops:
    """Faces the detector found but did not hand on: smaller than min_face_size, or beyond max_faces.

    Kept so that a cap never loses faces silently: the profiler logs these and the JSON carries them
    ("faces_dropped" in docs/profile_schema.json).
    """

    min_face_size: int = 0  # found, but with a box side below min_face_size
    max_faces: int = 0      # large enough, but more than max_faces (the smallest ones go)

    @property
    def total(self) -> int:
        return self.min_face_size + self.max_faces

    def __add__(self, other: "DetectionDrops") -> "DetectionDrops":
        return DetectionDrops(self.min_face_size + other.min_face_size, self.max_faces + other.max_faces)

    def to_dict(self) -> dict[str, int]:
        return {"min_face_size": int(self.min_face_size), "max_faces": int(self.max_faces)}


@dataclass
class AttributeResult:
    """One attribute's outcome: the top class, its probability and the whole distribution.

    `label` is "undetermined" when the top probability is below the confidence bar; `top` keeps the
    top class either way so that consumers can still inspect it. `top` is the arg-max, except in a track's
    fused profile, where it is held until another class beats it by `tracking.switch_margin` (core/tracking.py).
    """

    label: str
    probability: float
    distribution: dict[str, float]
    undetermined: bool
    top: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(float(self.probability), 6),
            "undetermined": self.undetermined,
            "top": self.top,
            "distribution": {k: round(float(v), 6) for k, v in self.distribution.items()},
        }

    @classmethod
    def from_distribution(cls, distribution: dict[str, float], min_confidence: float,
                          top: str | None = None) -> "AttributeResult":
        """The result with `top` as its top class (default: the arg-max of the distribution)."""
        if top is None:
            top = max(distribution, key=distribution.__getitem__)
        probability = float(distribution[top])
        undetermined = probability < min_confidence
        return cls(label=UNDETERMINED if undetermined else top, probability=probability,
                   distribution=dict(distribution), undetermined=undetermined, top=top)


@dataclass
class JointCandidate:
    """One full description among the top-k of joint scoring."""

    classes: dict[str, str]
    text: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.classes, "text": self.text, "probability": round(float(self.probability), 6)}


@dataclass
class FaceScores:
    """What the scorer says about one face crop."""

    attributes: dict[str, AttributeResult]
    joint: list[JointCandidate] = field(default_factory=list)


@dataclass
class FaceProfile:
    """A profiled face: where it is, how sure the detector was, and what the scorer says.

    frames_since_scored / seconds_since_scored: how old the newest model estimate in `scores` is (0 = scored on
    this frame); a tracked face whose estimate has settled is re-scored only now and then (core/schedule.py).
    """

    detection: Detection
    scores: FaceScores
    face_id: int | None = None
    frames_fused: int = 1
    frames_since_scored: int = 0
    seconds_since_scored: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        x1, y1, x2, y2 = (float(v) for v in self.detection.box)
        return {
            "id": self.face_id,
            "box": {"x": round(x1, 1), "y": round(y1, 1), "width": round(x2 - x1, 1), "height": round(y2 - y1, 1)},
            "detection_score": round(float(self.detection.score), 4),
            "attributes": {k: v.to_dict() for k, v in self.scores.attributes.items()},
            "joint": [c.to_dict() for c in self.scores.joint],
            "frames_fused": self.frames_fused,
            "frames_since_scored": int(self.frames_since_scored),
            "seconds_since_scored": round(float(self.seconds_since_scored), 3),
        }
