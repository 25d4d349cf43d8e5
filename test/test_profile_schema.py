"""docs/profile_schema.json is one valid JSON schema for /user_profile and the CLI, checked with `jsonschema`."""
import json

import cv2
import jsonschema
import pytest

from conftest import ROOT, TEST_DATA

SCHEMA = json.loads((ROOT / "docs" / "profile_schema.json").read_text())


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    kinds = [ref["$ref"].rsplit("/", 1)[1] for ref in SCHEMA["$defs"]["cli_record"]["oneOf"]]
    assert kinds == ["cli_profile", "cli_error", "cli_skipped"]
    for kind in kinds:  # each kind names itself, so a consumer can dispatch on `schema`
        assert SCHEMA["$defs"][kind]["properties"]["schema"]["const"] == f"demoprof_ros/{kind}"


@pytest.fixture(scope="module")
def tracked_profiles():
    """Real pipeline output (tiny model, Haar) for two frames of the sample photo, through the node's tracker."""
    from demoprof_ros.core.profiler import Profiler, ProfilerConfig
    from demoprof_ros.core.tracking import FaceTracker

    profiler = Profiler.from_config(ProfilerConfig(model="tiny", detectors=("haar",), min_face_size=16))
    frame = cv2.imread(str(TEST_DATA / "group_photos" / "obama_family_2011.jpg"))
    tracker = FaceTracker()
    tracker.update(profiler(frame))
    return frame, tracker.update(profiler(frame))


def test_node_message_of_a_real_frame_is_valid(tracked_profiles):
    pytest.importorskip("rclpy")
    from demoprof_ros.ros.profiler_node import build_profile_dict

    frame, faces = tracked_profiles
    assert faces and all(f.face_id >= 1 and f.frames_fused == 2 for f in faces)
    payload = build_profile_dict((12, 5), "cam", (frame.shape[1], frame.shape[0]), faces, "tiny-64", "haar",
                                 12.3, 10.0, 0, 2, {"min_face_size": 1, "max_faces": 0})
    assert payload["faces_dropped"] == {"min_face_size": 1, "max_faces": 0}
    jsonschema.validate(json.loads(json.dumps(payload)), SCHEMA, cls=jsonschema.Draft202012Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "faces": [{**payload["faces"][0], "id": None}]}, SCHEMA,
                            cls=jsonschema.Draft202012Validator)


def test_cli_record_of_a_real_frame_is_valid(tracked_profiles):
    from demoprof_ros.cli import records

    frame, faces = tracked_profiles
    record = records.frame_record("clip.mp4", 1, (frame.shape[1], frame.shape[0]), "tiny-64", "haar", 3.2, faces)
    validator = jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": "#/$defs/cli_record"})
    validator.validate(json.loads(json.dumps(record)))
    validator.validate(records.error_record("x.jpg", None, "x.jpg: truncated JPEG"))
    validator.validate(records.skipped_record("a.gif", "unsupported file type '.gif'"))
    with pytest.raises(jsonschema.ValidationError):  # a CLI record is not a /user_profile message
        jsonschema.validate(record, SCHEMA, cls=jsonschema.Draft202012Validator)
