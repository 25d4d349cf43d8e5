"""ROS4HRI (REP-155): the mapping in plain Python, the publisher with stand-in types, and the typed
hri_msgs output of two profiler nodes over real DDS (where hri_msgs is importable: `make venv` builds the
test-only test/ros_interfaces/hri_msgs when cmake and g++ are present)."""
from __future__ import annotations

import itertools
import json
import random
import re
import time
from types import SimpleNamespace

import pytest

from demoprof_ros.core.results import AttributeResult, Detection, FaceProfile, FaceScores
from demoprof_ros.core.taxonomy import AGE_GROUPS, AGE_MIDPOINTS, GENDERS
from demoprof_ros.ros import hri

TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def profile(age: str | None = None, gender: str | None = None, p: float = 0.8, face_id: int | None = 3,
            bar: float = 0.4, box: tuple = (0, 0, 10, 10), score: float = 0.9) -> FaceProfile:
    attributes = {}
    for name, classes, label in (("age", AGE_GROUPS, age), ("gender", GENDERS, gender)):
        if label is not None:
            rest = (1 - p) / (len(classes) - 1)
            attributes[name] = AttributeResult.from_distribution({c: p if c == label else rest for c in classes}, bar)
    return FaceProfile(Detection(box, score), FaceScores(attributes), face_id=face_id)


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


def test_session_ids_differ_between_profilers_and_are_valid_tokens() -> None:
    sessions = {hri.new_session(random.Random(seed)) for seed in range(50)}
    assert len(sessions) == 50
    a, b = hri.new_session(random.Random(1)), hri.new_session(random.Random(2))
    assert hri.tracked_ids([profile(face_id=1)], a) != hri.tracked_ids([profile(face_id=1)], b)
    topic = hri.face_topic(7, "roi", a)
    assert topic == f"/humans/faces/face7_{a}/roi"
    assert all(TOKEN.fullmatch(t) for t in topic.strip("/").split("/"))
    with pytest.raises(ValueError, match="session"):
        hri.face_id_str(1, "a/b")


@pytest.mark.parametrize("box, size, expected", [
    ((64, 48, 128, 144), (640, 480), (0.1, 0.1, 0.2, 0.3)),
    ((-10, -5, 700, 500), (640, 480), (0.0, 0.0, 1.0, 1.0)),  # boxes past the border are clipped
])
def test_roi_is_normalised(box: tuple, size: tuple, expected: tuple) -> None:
    roi = hri.normalized_roi(profile(box=box, score=0.75), size)
    assert (roi["xmin"], roi["ymin"], roi["xmax"], roi["ymax"]) == pytest.approx(expected)
    assert roi["c"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        hri.normalized_roi(profile(), (0, 480))


def test_hri_output_topics_and_messages() -> None:
    """The publisher logic with stand-in message types and node (moved here from test_node.py)."""
    pytest.importorskip("rclpy", reason="rclpy is not importable")
    from demoprof_ros.ros.hri_output import QOS, HriOutput

    class Msg(SimpleNamespace):
        pass

    class FakeNode:
        def __init__(self) -> None:
            self.published: list[tuple[str, Msg]] = []
            self.live: set[str] = set()

        def create_publisher(self, msg_type, topic, qos):
            assert qos is QOS
            self.live.add(topic)
            return SimpleNamespace(topic=topic, publish=lambda m: self.published.append((topic, m)))

        def destroy_publisher(self, pub) -> None:
            self.live.discard(pub.topic)

    def face(face_id: int, gender: str) -> FaceProfile:
        return profile(gender=gender, p=0.9, face_id=face_id, box=(0, 0, 50, 100))

    node = FakeNode()
    out = HriOutput(node, (Msg, Msg, Msg), session="abcde")
    out.publish("hdr", [face(1, "Female"), face(2, "Male")], alive=[1, 2], image_size=(100, 200))
    assert node.published[0] == ("/humans/faces/tracked", Msg(header="hdr", ids=["face1_abcde", "face2_abcde"]))
    sent = dict(node.published[1:])
    assert sent["/humans/faces/face1_abcde/softbiometrics"].gender == 1  # FEMALE
    assert sent["/humans/faces/face2_abcde/softbiometrics"].gender == 2  # MALE
    roi = sent["/humans/faces/face1_abcde/roi"]
    assert (roi.header, roi.xmax, roi.ymax) == ("hdr", 0.5, 0.5)
    out.publish("hdr", [face(2, "Male")], alive=[2], image_size=(100, 200))  # face 1's track is gone: its topics go
    assert node.live == {"/humans/faces/tracked", "/humans/faces/face2_abcde/roi",
                         "/humans/faces/face2_abcde/softbiometrics"}
    out.destroy()
    assert node.live == set()


# --- typed messages over real DDS -------------------------------------------------------------------------

PARAMS_OVERRIDES = ["-p", "model:=tiny", "-p", "detectors:=[haar]", "-p", "tracking.min_hits:=1",
                    "-p", "diagnostics_period:=0.5"]
NAMESPACES = ("hri_a", "hri_b")
START_TIMEOUT = 90.0
_STAMPS = itertools.count(1000)  # one stamp (seconds) per frame pair, unique over the module


@pytest.fixture(scope="module")
def hri_types():
    pytest.importorskip("rclpy", reason="rclpy is not importable: the DDS tests need ROS 2 Python")
    msgs = pytest.importorskip("hri_msgs.msg", reason="hri_msgs is not importable: `make venv` builds the test-only "
                                                      "test/ros_interfaces/hri_msgs when cmake and g++ are present")
    return msgs


@pytest.fixture(scope="module")
def two_profilers(hri_types, tmp_path_factory):
    """Two profiler nodes in their own namespaces, a listener, and one photo frame per camera at a time."""
    from helpers_ros import ROOT, Child, Listener
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    listener = Listener("hri_listener")
    logs = tmp_path_factory.mktemp("hri")
    nodes = [Child("demoprof_ros.ros.profiler_node",
                   ["--ros-args", "--params-file", str(ROOT / "config" / "profiler.yaml"), *PARAMS_OVERRIDES,
                    "-r", f"__ns:=/{ns}"], logs / f"{ns}.log") for ns in NAMESPACES]
    reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    listener.collect(hri_types.IdsList, "/humans/faces/tracked", reliable)
    for ns in NAMESPACES:
        listener.collect(String, f"/{ns}/user_profile", 50)
    try:
        for ns, child in zip(NAMESPACES, nodes):
            ready = listener.wait_for(lambda: listener.diagnostic_values(f"/{ns}/profiler_node"), START_TIMEOUT)
            assert ready, f"/{ns}/profiler_node not active within {START_TIMEOUT} s; log:\n{child.log()[-3000:]}"
        yield SimpleNamespace(listener=listener, nodes=nodes, pubs={
            ns: listener.node.create_publisher(listener.Image, f"/{ns}/image", 10) for ns in NAMESPACES})
    finally:
        for child in nodes:
            child.kill()
        listener.close()


def _feed_until(env, predicate, timeout: float = 60.0, period: float = 0.5):
    """Publish the photo on both cameras (frame_id = namespace, a new stamp each time) until predicate() holds."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from demoprof_ros.core.images import load_image
    from demoprof_ros.ros.image_conversion import bgr_to_image_fields
    from helpers_ros import ROOT

    fields = bgr_to_image_fields(load_image(ROOT / "test" / "data" / "group_photos" / "obama_family_2011.jpg"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamp = Time(sec=next(_STAMPS))
        for ns in NAMESPACES:
            env.pubs[ns].publish(env.listener.Image(header=Header(stamp=stamp, frame_id=ns), **fields))
        value = env.listener.wait_for(predicate, period)
        if value:
            return value
    return predicate()


def _tracked(env, ns: str) -> list:
    return [m for m in env.listener.messages("/humans/faces/tracked") if m.header.frame_id == ns and m.ids]


def test_typed_faces_from_two_profilers(two_profilers, hri_types) -> None:
    env = two_profilers
    assert _feed_until(env, lambda: all(_tracked(env, ns) for ns in NAMESPACES)), \
        "no non-empty IdsList on /humans/faces/tracked from both profilers; logs:\n" + \
        "\n".join(c.log()[-1500:] for c in env.nodes)
    ids = {ns: set(_tracked(env, ns)[-1].ids) for ns in NAMESPACES}
    assert not ids["hri_a"] & ids["hri_b"], f"face ids shared by two profilers: {ids}"
    assert all(TOKEN.fullmatch(i) for both in ids.values() for i in both)
    assert type(_tracked(env, "hri_a")[-1]) is hri_types.IdsList

    # The reliable publisher that libhri's system-default (reliable) subscription needs.
    from rclpy.qos import ReliabilityPolicy
    infos = env.listener.node.get_publishers_info_by_topic("/humans/faces/tracked")
    assert len(infos) == 2 and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)

    face = sorted(ids["hri_a"])[0]
    env.listener.collect(hri_types.NormalizedRegionOfInterest2D, f"/humans/faces/{face}/roi")
    env.listener.collect(hri_types.SoftBiometrics, f"/humans/faces/{face}/softbiometrics")
    got = _feed_until(env, lambda: env.listener.collected[f"/humans/faces/{face}/roi"]
                      and env.listener.collected[f"/humans/faces/{face}/softbiometrics"])
    assert got, f"nothing on /humans/faces/{face}/roi and /softbiometrics"
    soft = env.listener.messages(f"/humans/faces/{face}/softbiometrics")[-1]
    stamp = soft.header.stamp.sec
    (roi,) = [m for m in env.listener.messages(f"/humans/faces/{face}/roi") if m.header.stamp.sec == stamp]
    assert type(roi) is hri_types.NormalizedRegionOfInterest2D and type(soft) is hri_types.SoftBiometrics
    assert roi.header.frame_id == soft.header.frame_id == "hri_a"  # stamped with the source image

    # The same frame's JSON /user_profile has this face (id N of face<N>_<session>), same box and attributes.
    def same_frame() -> list:
        return [f for f in (json.loads(m.data) for m in env.listener.collected["/hri_a/user_profile"])
                if f["header"]["stamp"]["sec"] == stamp]
    (frame,) = env.listener.wait_for(same_frame, 10)
    (entry,) = [f for f in frame["faces"] if f"face{f['id']}_" == face[:face.index("_") + 1]]
    width, height, box = frame["image"]["width"], frame["image"]["height"], entry["box"]
    assert (roi.xmin, roi.ymin, roi.xmax, roi.ymax) == pytest.approx(
        (box["x"] / width, box["y"] / height, (box["x"] + box["width"]) / width,
         (box["y"] + box["height"]) / height), abs=1e-3)
    assert 0 < roi.c <= 1
    expected = {"Female": hri_types.SoftBiometrics.FEMALE, "Male": hri_types.SoftBiometrics.MALE}
    gender = entry["attributes"]["gender"]
    assert soft.gender == (hri_types.SoftBiometrics.UNDEFINED if gender["undetermined"] else expected[gender["label"]])
    age = entry["attributes"]["age"]
    assert soft.age == (0 if age["undetermined"] else round(AGE_MIDPOINTS[age["label"]]))
    assert soft.age_confidence == pytest.approx(0.0 if age["undetermined"] else age["confidence"], abs=1e-5)
