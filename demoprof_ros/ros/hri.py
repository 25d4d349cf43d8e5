"""Profiles -> ROS4HRI (REP-155) values: face id strings and hri_msgs/SoftBiometrics fields.

Plain Python so that the mapping is tested where hri_msgs is not installed; the node fills the messages from
these dicts only where `hri_msgs` imports. ROS4HRI has no field for ethnicity, and reports age as a number:
the age group's middle year (taxonomy.AGE_MIDPOINTS). An undetermined or switched-off attribute is reported
as unknown (age 0 / gender UNDEFINED, confidence 0), never guessed.
"""
from __future__ import annotations

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


def face_id_str(face_id: int) -> str:
    """ROS4HRI id of a tracked face; starts with a letter so that it is a valid topic-name token."""
    if face_id is None or int(face_id) < 0:
        raise ValueError(f"face id must be an integer >= 0, got {face_id!r}")
    return f"face{int(face_id)}"


def tracked_ids(profiles: Iterable[FaceProfile]) -> list[str]:
    """The `ids` of hri_msgs/IdsList for /humans/faces/tracked (faces without an id are left out)."""
    return [face_id_str(p.face_id) for p in profiles if p.face_id is not None]


def softbiometrics_topic(face_id: int, prefix: str = FACES_TOPIC) -> str:
    return f"{prefix.rstrip('/')}/{face_id_str(face_id)}/softbiometrics"


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
