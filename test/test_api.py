"""The notebook API: demoprof_ros.profile on a path and on an array, and the lazily exported names."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import demoprof_ros
from helpers_ros import schema_errors

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "test" / "data" / "group_photos" / "obama_family_2011.jpg"
SETTINGS = dict(model="tiny", detectors=("haar",), min_face_size=16, max_faces=10)


@pytest.fixture(scope="module")
def schema():
    return json.loads((ROOT / "docs" / "profile_schema.json").read_text())


@pytest.fixture(scope="module")
def from_path():
    return demoprof_ros.profile(PHOTO, **SETTINGS)


def test_profile_a_photo_path_gives_documented_face_dicts(from_path, schema):
    faces = from_path
    assert isinstance(faces, list) and len(faces) >= 3  # a family photo
    assert [face["id"] for face in faces] == list(range(1, len(faces) + 1))  # one image: numbered, largest first
    for face in faces:
        assert set(face) == set(schema["$defs"]["face"]["required"])
        assert schema_errors(face, schema["$defs"]["face"], schema) == []
        assert set(face["attributes"]) == {"age", "gender", "race"}
        gender = face["attributes"]["gender"]
        assert isinstance(gender["confidence"], float) and isinstance(gender["label"], str)
        assert sum(gender["distribution"].values()) == pytest.approx(1, abs=1e-3)
        assert all(isinstance(face["box"][k], float) for k in ("x", "y", "width", "height"))
    areas = [f["box"]["width"] * f["box"]["height"] for f in faces]
    assert areas == sorted(areas, reverse=True)  # largest first
    json.dumps(faces)  # plain JSON types only


def test_profile_an_array_matches_the_path(from_path):
    import cv2

    image = cv2.imread(str(PHOTO))
    faces = demoprof_ros.profile(image, **SETTINGS)
    assert [f["box"] for f in faces] == [f["box"] for f in from_path]
    assert faces[0]["attributes"]["age"]["distribution"] == pytest.approx(
        from_path[0]["attributes"]["age"]["distribution"], abs=1e-5)
    blank = demoprof_ros.profile(np.zeros((120, 160, 3), np.uint8), **SETTINGS)
    assert blank == []  # no face, no entries


def test_profile_settings_switch_heads_off_and_bad_ones_fail():
    from demoprof_ros.core.profiler import ConfigError

    faces = demoprof_ros.profile(PHOTO, **{**SETTINGS, "attributes": ("age", "gender")})
    assert faces and all(set(f["attributes"]) == {"age", "gender"} for f in faces)
    with pytest.raises(ConfigError, match="min_confidence"):
        demoprof_ros.profile(PHOTO, **{**SETTINGS, "min_confidence": 3})
    with pytest.raises(ConfigError, match="unknown settings"):
        demoprof_ros.profile(PHOTO, **{**SETTINGS, "threshold": 0.5})


def test_exported_names():
    from demoprof_ros.core.models import load_model
    from demoprof_ros.core.profiler import Profiler, ProfilerConfig

    assert demoprof_ros.Profiler is Profiler and demoprof_ros.ProfilerConfig is ProfilerConfig
    assert demoprof_ros.load_model is load_model
    assert {"profile", "Profiler", "ProfilerConfig", "load_model"} <= set(dir(demoprof_ros))
    with pytest.raises(AttributeError, match="no_such_name"):
        demoprof_ros.no_such_name  # noqa: B018
