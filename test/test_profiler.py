"""Profiler pipeline and its configuration, on the bundled public-domain group photo."""
import json

import numpy as np
import pytest

from demoprof_ros.core.detection import build_detector
from demoprof_ros.core.images import ImageError, load_image
from demoprof_ros.core.profiler import ConfigError, Profiler, ProfilerConfig

PHOTO = "group_photos/obama_family_2011.jpg"


@pytest.fixture(scope="module")
def profiler():
    return Profiler.from_config(ProfilerConfig(model="tiny", detectors=("haar",), joint_top_k=2))


def test_one_profile_per_detected_face(profiler, test_data):
    image = load_image(test_data / PHOTO)
    expected = build_detector(("haar",)).detect(image)
    profiles = profiler(image)
    assert len(profiles) == len(expected) >= 3
    assert [p.detection.box for p in profiles] == [d.box for d in expected]
    for p in profiles:
        record = json.loads(json.dumps(p.to_dict()))
        assert set(record["attributes"]) == {"age", "gender", "race"}
        assert len(record["joint"]) == 2
        assert record["box"]["width"] > 0 and record["box"]["height"] > 0


def test_frame_without_faces(profiler):
    assert profiler(np.full((120, 160, 3), 127, np.uint8)) == []


def test_bad_frame_is_a_clear_error(profiler):
    with pytest.raises(ImageError):
        profiler(np.zeros((0, 0, 3), np.uint8))


def test_switched_off_attribute_is_never_computed(test_data):
    p = Profiler.from_config(ProfilerConfig(model="tiny", detectors=("haar",), attributes=("age", "gender")))
    faces = p(load_image(test_data / PHOTO))
    assert faces and all("race" not in f.to_dict()["attributes"] for f in faces)
    assert all("race" not in c.classes for f in faces for c in f.scores.joint)


def test_warmup_precomputes_text(profiler):
    profiler.scorer.refresh_text()
    profiler.warmup()
    assert profiler.scorer._heads is not None and profiler.scorer._joint_head is not None


@pytest.mark.parametrize("data,match", [
    ({"dtype": "fp64"}, "dtype"),
    ({"device": "tpu"}, "device"),
    ({"min_confidence": 2}, "min_confidence"),
    ({"max_faces": 0}, "max_faces"),
    ({"attributes": ["age", "height"]}, "attributes"),
    ({"attributes": {"race": "no"}}, "attributes"),
    ({"detectors": ["mtcnn"]}, "detectors"),
    ({"margin": -1}, "margin"),
    ({"modle": "clip"}, "unknown settings"),
])
def test_config_errors_name_the_setting(data, match):
    with pytest.raises(ConfigError, match=match):
        ProfilerConfig.from_dict(data)


def test_config_attribute_switches():
    cfg = ProfilerConfig.from_dict({"attributes": {"age": True, "gender": True, "race": False},
                                    "detectors": "yunet,haar"})
    assert cfg.attributes == ("age", "gender") and cfg.detectors == ("yunet", "haar")
    assert ProfilerConfig.from_dict(cfg.to_dict()) == cfg
