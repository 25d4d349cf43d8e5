"""ROS4HRI mapping in plain Python (hri_msgs is not needed)."""
from __future__ import annotations

import re

import pytest

from demoprof_ros.ros import hri
from demoprof_ros.core.results import AttributeResult, Detection, FaceProfile, FaceScores
from demoprof_ros.core.taxonomy import AGE_GROUPS, AGE_MIDPOINTS, GENDERS


def profile(age: str | None = None, gender: str | None = None, p: float = 0.8, face_id: int | None = 3,
            bar: float = 0.4) -> FaceProfile:
    attributes = {}
    for name, classes, label in (("age", AGE_GROUPS, age), ("gender", GENDERS, gender)):
        if label is not None:
            rest = (1 - p) / (len(classes) - 1)
            attributes[name] = AttributeResult.from_distribution({c: p if c == label else rest for c in classes}, bar)
    return FaceProfile(Detection((0, 0, 10, 10), 0.9), FaceScores(attributes), face_id=face_id)


def test_constants_match_hri_msgs() -> None:
    # hri_msgs/msg/SoftBiometrics.msg: UNDEFINED=0, FEMALE=1, MALE=2, OTHER=3
    assert (hri.GENDER_UNDEFINED, hri.GENDER_FEMALE, hri.GENDER_MALE, hri.GENDER_OTHER) == (0, 1, 2, 3)


@pytest.mark.parametrize("age", AGE_GROUPS)
def test_age_is_group_midpoint(age: str) -> None:
    out = hri.softbiometrics(profile(age=age, p=0.7))
    assert out["age"] == round(AGE_MIDPOINTS[age]) and 0 <= out["age"] <= 255
    assert out["age_confidence"] == pytest.approx(0.7)
    assert (out["gender"], out["gender_confidence"]) == (hri.GENDER_UNDEFINED, 0.0)  # gender switched off


@pytest.mark.parametrize("gender, code", [("Female", hri.GENDER_FEMALE), ("Male", hri.GENDER_MALE)])
def test_gender_codes(gender: str, code: int) -> None:
    out = hri.softbiometrics(profile(gender=gender, p=0.9))
    assert out["gender"] == code and out["gender_confidence"] == pytest.approx(0.9)
    assert (out["age"], out["age_confidence"]) == (0, 0.0)


def test_undetermined_is_reported_unknown() -> None:
    out = hri.softbiometrics(profile(age="30-39", gender="Male", p=0.35, bar=0.8))
    assert out == {"age": 0, "age_confidence": 0.0, "gender": hri.GENDER_UNDEFINED, "gender_confidence": 0.0}


def test_ids_and_topics_are_valid_ros_names() -> None:
    profiles = [profile(face_id=i) for i in (1, 12, 305)] + [profile(face_id=None)]
    ids = hri.tracked_ids(profiles)
    assert ids == ["face1", "face12", "face305"]
    topic = hri.softbiometrics_topic(12)
    assert topic == "/humans/faces/face12/softbiometrics"
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", token) for token in topic.strip("/").split("/"))
    with pytest.raises(ValueError):
        hri.face_id_str(-1)
