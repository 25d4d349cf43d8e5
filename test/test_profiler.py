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
    ({"detectors": ["dlib"]}, "detectors"),
    ({"margin": -1}, "margin"),
    ({"margin": "wide"}, "margin"),
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


def test_dropped_faces_are_counted_and_logged(test_data, caplog):
    caplog.set_level("WARNING", logger="demoprof_ros.core.profiler")
    image = load_image(test_data / PHOTO)
    found = build_detector(("haar",), min_face_size=16, max_faces=64).detect(image)
    p = Profiler.from_config(ProfilerConfig(model="tiny", detectors=("haar",), min_face_size=16, max_faces=1))
    assert len(p(image)) == 1
    assert p.last_drops.to_dict() == {"min_face_size": 0, "max_faces": len(found) - 1} and len(found) >= 3
    mine = lambda: [r.getMessage() for r in caplog.records if r.name == "demoprof_ros.core.profiler"]  # noqa: E731
    (warning,) = mine()
    assert f"dropped 0 face(s) smaller than min_face_size=16 px and {len(found) - 1} beyond max_faces=1" in warning
    p(image)  # within DROP_LOG_PERIOD: counted, not logged again
    assert len(mine()) == 1 and p.total_drops.max_faces == 2 * (len(found) - 1)
    p(np.full((120, 160, 3), 127, np.uint8))
    assert p.last_drops.total == 0


def test_photo_defaults_and_node_defaults():
    from demoprof_ros.core.detection import DEFAULT_CHAIN, PHOTO_CHAIN
    from demoprof_ros.core.profiler import PHOTO_DEFAULTS

    node, photo = ProfilerConfig(), ProfilerConfig(**PHOTO_DEFAULTS)
    assert node.detectors == DEFAULT_CHAIN and node.detectors[:2] == ("scrfd", "yunet")
    assert "mtcnn" not in node.detectors
    assert photo.detectors == PHOTO_CHAIN and photo.detectors.index("mtcnn") < photo.detectors.index("blazeface")
    assert photo.min_face_size < node.min_face_size and photo.max_faces > node.max_faces
    assert ProfilerConfig.from_dict(photo.to_dict()) == photo


@pytest.mark.parametrize("data,match", [({"tiles": -1}, "tiles"), ({"max_side": 32}, "max_side"),
                                        ({"tiles": 1.5}, "tiles")])
def test_detection_settings_are_checked(data, match):
    with pytest.raises(ConfigError, match=match):
        ProfilerConfig.from_dict(data)


def test_default_chain_runs_a_cnn_with_aligned_crops(test_data, tmp_path):
    from demoprof_ros.core.detection import DetectorUnavailable, find_blazeface

    try:
        find_blazeface()
    except DetectorUnavailable as error:
        pytest.skip(str(error))
    p = Profiler.from_config(ProfilerConfig(model="tiny", models_dir=str(tmp_path), align=True))
    assert p.detector_name == "blazeface"  # no SCRFD / YuNet files in tmp_path
    faces = p(load_image(test_data / PHOTO))
    assert len(faces) == 4 and all(f.detection.landmarks is not None for f in faces)


@pytest.mark.parametrize("meta, setting, expected", [
    ({}, "auto", 0.25),                    # no declaration: FairFace's padding, as for CLIP and FaRL
    ({"crop_margin": 0.1}, "auto", 0.1),   # trained on tight crops: the model's own
    ({"crop_margin": 0.1}, 0.4, 0.4),      # the user's number wins
])
def test_margin_auto_is_the_models_declared_crop_margin(tmp_path, meta, setting, expected):
    import helpers_checkpoints as ck
    from demoprof_ros.core.models import save_checkpoint

    run = save_checkpoint(tmp_path / "run", ck.tiny_model(), ck.tiny_cfg(), meta)
    p = Profiler.from_config(ProfilerConfig(model=str(run), detectors=("haar",), margin=setting))
    assert p.margin == expected


def test_a_crop_margin_outside_bounds_is_refused(tmp_path):
    import helpers_checkpoints as ck
    from demoprof_ros.core.models import ModelLoadError, load_model, save_checkpoint

    run = save_checkpoint(tmp_path / "run", ck.tiny_model(), ck.tiny_cfg(), {"crop_margin": 5})
    with pytest.raises(ModelLoadError, match="crop_margin"):
        load_model(str(run))
