"""Profiles -> ROS4HRI (REP-155) values: face ids, topic names, hri_msgs/SoftBiometrics and ROI fields.

Plain Python so that the mapping is tested where hri_msgs is not installed; hri_output.HriOutput fills the typed
messages from these dicts where `hri_msgs` imports. ROS4HRI has no field for ethnicity, and reports age as a
number: the age group's middle year (taxonomy.AGE_MIDPOINTS). An undetermined or switched-off attribute is
reported as unknown (age 0 / gender UNDEFINED, confidence 0), never guessed.

Face ids are `face<track id>_<session>`: REP-155 wants ids unique among everything publishing under
/humans/faces, and several profilers (one per camera) each count their tracks from 1, so every profiler
draws a random 5-letter session token when it is configured.
"""
from __future__ import annotations

import random
import string
from typing import Any, Iterable

from ..core.results import FaceProfile
from ..core.taxonomy import AGE_MIDPOINTS

# hri_msgs/msg/SoftBiometrics.msg constants (uint8 gender).
GENDER_UNDEFINED = 0
GENDER_FEMALE = 1
GENDER_MALE = 2
GENDER_OTHER = 3
_GENDER_CODES = {"Female": GENDER_FEMALE, "Male": GENDER_MALE}

FACES_TOPIC = "/humans/faces"
SESSION_LENGTH = 5


def new_session(rng: random.Random | None = None) -> str:
    """A random token of lowercase letters (a valid ROS name token) that makes this profiler's face ids unique."""
    rng = rng or random.SystemRandom()
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(SESSION_LENGTH))


def face_id_str(face_id: int, session: str = "") -> str:
    """ROS4HRI id of a tracked face; starts with a letter so that it is a valid topic-name token."""
    if face_id is None or int(face_id) < 0:
        raise ValueError(f"face id must be an integer >= 0, got {face_id!r}")
    if session and not (session.isascii() and session.isalnum()):
        raise ValueError(f"session token must be letters and digits, got {session!r}")
    return f"face{int(face_id)}_{session}" if session else f"face{int(face_id)}"


def tracked_ids(profiles: Iterable[FaceProfile], session: str = "") -> list[str]:
    """The `ids` of hri_msgs/IdsList for /humans/faces/tracked (faces without an id are left out)."""
    return [face_id_str(p.face_id, session) for p in profiles if p.face_id is not None]


def face_topic(face_id: int, leaf: str, session: str = "", prefix: str = FACES_TOPIC) -> str:
    """/humans/faces/<id>/<leaf>, e.g. leaf 'roi' or 'softbiometrics'."""
    return f"{prefix.rstrip('/')}/{face_id_str(face_id, session)}/{leaf}"


def softbiometrics_topic(face_id: int, prefix: str = FACES_TOPIC, session: str = "") -> str:
    return face_topic(face_id, "softbiometrics", session, prefix)


def softbiometrics(profile: FaceProfile) -> dict[str, Any]:
    """hri_msgs/SoftBiometrics fields but the header: age (uint8 years), age_confidence, gender, gender_confidence."""
    age = profile.scores.attributes.get("age")
    gender = profile.scores.attributes.get("gender")
    out: dict[str, Any] = {"age": 0, "age_confidence": 0.0, "gender": GENDER_UNDEFINED, "gender_confidence": 0.0}
    if age is not None and not age.undetermined:
        out["age"] = int(round(AGE_MIDPOINTS[age.label]))
        out["age_confidence"] = float(age.probability)
    if gender is not None and not gender.undetermined:
        out["gender"] = _GENDER_CODES.get(gender.label, GENDER_OTHER)
        out["gender_confidence"] = float(gender.probability)
    return out


def normalized_roi(profile: FaceProfile, image_size: tuple[int, int]) -> dict[str, float]:
    """hri_msgs/NormalizedRegionOfInterest2D fields but the header: the face box over the image size, in [0, 1],
    and the detector's score as the confidence `c`."""
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    x1, y1, x2, y2 = profile.detection.box
    clip = lambda v: min(1.0, max(0.0, float(v)))  # noqa: E731
    return {"xmin": clip(x1 / width), "ymin": clip(y1 / height), "xmax": clip(x2 / width),
            "ymax": clip(y2 / height), "c": clip(profile.detection.score)}
