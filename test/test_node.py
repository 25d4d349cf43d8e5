"""The profiler node over real rclpy + Fast DDS: node, image_source and this test in separate processes.

One node process serves the module (tiny untrained model, Haar detector: fast, and the face count is what the
core detector finds, computed here). Every wait has a time-out. The domain is random and discovery stays on
the loopback (test/conftest.py).
"""
from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: the node tests need ROS 2 Python")

from demoprof_ros.core.detection import build_detector  # noqa: E402
from demoprof_ros.core.images import load_image  # noqa: E402
from demoprof_ros.core.profiler import ConfigError  # noqa: E402
from demoprof_ros.ros.params import parameter_table, settings_from_values  # noqa: E402
from demoprof_ros.ros.profiler_node import FrameMailbox, KeyedThrottle  # noqa: E402
from demoprof_ros.ros.image_conversion import bgr_to_compressed, bgr_to_image_fields, compressed_to_bgr  # noqa: E402

from helpers_ros import (  # noqa: E402
    ROOT, Child, Listener, fastdds_shm_files, load_schema, schema_errors, shm_leftovers,
)

PHOTO = ROOT / "test" / "data" / "group_photos" / "obama_family_2011.jpg"
PARAMS = ROOT / "config" / "profiler.yaml"
NODE = "demoprof_ros.ros.profiler_node"
SOURCE = "demoprof_ros.ros.image_source"
# Overrides on top of the params file: fast model and detector, faces reported from their first frame.
OVERRIDES = ["-p", "model:=tiny", "-p", "detectors:=[haar]", "-p", "tracking.min_hits:=1",
             "-p", "diagnostics_period:=0.5"]
# The module's node also takes raw and compressed frames in turn and draws the debug image.
MODULE_OVERRIDES = OVERRIDES + ["-p", "transport:=both", "-p", "debug_image:=true"]
START_TIMEOUT = 90.0


# --- plain parts of the node (no DDS) -------------------------------------------------------------------


def test_mailbox_keeps_newest_and_counts_drops() -> None:
    box = FrameMailbox()
    for i in range(5):
        box.put(i)
    assert box.take(0.01) == 4 and box.dropped == 4
    assert box.take(0.01) is None
    box.put(7)
    box.close()
    assert box.take(0.01) is None  # closed: pending frame discarded, worker told to stop


def test_throttle_is_per_kind_of_fault() -> None:
    throttle = KeyedThrottle(period_s=60)
    assert throttle.check("data has 10 bytes, expected 12")[0]
    assert not throttle.check("data has 11 bytes, expected 12")[0]  # same kind, other numbers
    assert throttle.check("unsupported encoding 'yuv422'")[0]  # another kind is still shown


def test_profile_echo_formats_faces() -> None:
    from demoprof_ros.core.results import AttributeResult, Detection, FaceProfile, FaceScores, JointCandidate
    from demoprof_ros.ros.profile_echo import format_profile
    from demoprof_ros.ros.profiler_node import build_profile_dict

    from demoprof_ros.core.taxonomy import AGE_GROUPS, RACES

    age = {a: (0.7 if a == "30-39" else 0.3 / (len(AGE_GROUPS) - 1)) for a in AGE_GROUPS}
    race = {r: (0.35 if r == "White" else 0.65 / (len(RACES) - 1)) for r in RACES}
    scores = FaceScores({"age": AttributeResult.from_distribution(age, 0.4),
                         "race": AttributeResult.from_distribution(race, 0.4)},
                        [JointCandidate({"age": "30-39"}, "a 30-39 year old", 0.5)])
    profile = FaceProfile(Detection((10, 20, 60, 80), 0.9), scores, face_id=7, frames_fused=4)
    payload = build_profile_dict((12, 5), "cam", (640, 480), [profile], "tiny-64", "haar", 12.3, 10.0, 2, 9)
    assert not schema_errors(payload, load_schema())
    text = format_profile(payload)
    first, face_line = text.splitlines()
    assert first.startswith("[12.000000005] cam: 1 face(s)") and "dropped 2" in first
    assert "face 7 at (10,20 50x60) fused 4" in face_line
    assert "age 30-39 0.70" in face_line and "race ? (White 0.35)" in face_line and "a 30-39 year old" in face_line


def test_schema_in_step_with_taxonomy_and_checker_bites() -> None:
    from demoprof_ros.core.taxonomy import CLASSES

    schema = load_schema()
    for name, classes in CLASSES.items():
        assert schema["$defs"][name]["properties"]["top"]["enum"] == list(classes)
    good = {"schema": "demoprof_ros/user_profile", "version": 1,
            "header": {"stamp": {"sec": 1, "nanosec": 2}, "frame_id": "c"}, "image": {"width": 4, "height": 3},
            "model": "m", "detector": "haar", "latency_ms": 1.0, "processing_ms": 1.0, "frames_dropped": 0,
            "frames_processed": 1, "faces": []}
    assert schema_errors(good, schema) == []
    assert schema_errors({**good, "faces": [{"id": 1}]}, schema)  # incomplete face
    assert schema_errors({**good, "version": 2}, schema)
    assert schema_errors({k: v for k, v in good.items() if k != "header"}, schema)
    assert schema_errors({**good, "extra": 1}, schema)


def test_profile_echo_times_out_with_message(tmp_path: Path) -> None:
    child = Child("demoprof_ros.ros.profile_echo", ["--topic", "/nobody_publishes_here", "--count", "1",
                                                    "--timeout", "1"], tmp_path / "echo.log")
    try:
        assert child.wait(30) == 1
        assert "got 0, wanted 1 profile(s) on /nobody_publishes_here within 1 s" in child.log()
    finally:
        child.kill()


@pytest.mark.parametrize("argv, message", [
    (["/no/such/photo.jpg"], "no such file or folder"),
    ([str(ROOT / "docs")], "no images"),
    ([str(PHOTO), "--rate", "0"], "--rate must be > 0"),
])
def test_image_source_rejects_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    from demoprof_ros.ros.image_source import main

    with pytest.raises(SystemExit) as info:
        main(["image_source", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_image_source_default_is_the_sample_photo() -> None:
    from demoprof_ros.ros.image_source import default_source

    # An installed package (colcon build) ships its own copy in share/demoprof_ros/data: same photo, other path.
    source = default_source()
    assert source.name == PHOTO.name and source.read_bytes() == PHOTO.read_bytes()


def test_params_file_lists_every_parameter() -> None:
    import yaml

    data = yaml.safe_load(PARAMS.read_text())
    (key, body), = data.items()
    assert key.endswith("profiler_node")

    def flatten(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    values = flatten(body["ros__parameters"])
    table = parameter_table()
    assert set(values) == set(table)
    assert {k: v for k, v in values.items()} == {k: d for k, (d, _) in table.items()}
    assert settings_from_values(values).profiler.model == "auto"


@pytest.mark.parametrize("values, fragment", [
    ({"reliability": "sometimes"}, "parameter reliability: expected one of"),
    ({"max_faces": "many"}, "parameter max_faces: expected an integer, got 'many'"),
    ({"max_rate": -1.0}, "parameter max_rate"),
    ({"tracking.fusion": "median"}, "tracking.fusion"),
    ({"tracking.switch_margin": 1.5}, "parameter tracking.switch_margin: expected a number in [0, 1), got 1.5"),
    ({"tracking.switch_margin": "wide"}, "parameter tracking.switch_margin: expected a number, got 'wide'"),
    ({"tracking.frame_rate": -30.0}, "parameter tracking.frame_rate: expected a number in [0, 1000]"),
    ({"dtype": "int8"}, "dtype"),
    ({"detectors": ["haar", "dlib"]}, "detectors"),
    ({"attributes.age": False, "attributes.gender": False, "attributes.race": False}, "every attribute"),
    ({"attributes.age": "yes"}, "parameter attributes.age: expected true or false"),
    ({"modle": "tiny"}, "unknown parameters ['modle']"),
    ({"margin": "wide"}, "parameter margin: expected 'auto' or a number, got 'wide'"),
    ({"margin": True}, "parameter margin: expected 'auto' or a number, got True"),
    ({"margin": 3}, "parameter margin: expected 'auto' (the model's own) or a number in [0, 2], got 3.0"),
])
def test_bad_parameter_values_named(values: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_values(values)
    assert fragment in str(info.value)


def test_parameter_types_coerced() -> None:
    settings = settings_from_values({"max_rate": 5, "detectors": "yunet, haar", "attributes.race": False,
                                     "margin": 0})
    assert settings.max_rate == 5.0 and isinstance(settings.max_rate, float)
    assert settings.profiler.margin == 0.0 and isinstance(settings.profiler.margin, float)
    assert settings_from_values({}).profiler.margin == "auto"
    assert settings.profiler.detectors == ("yunet", "haar")
    assert settings.profiler.attributes == ("age", "gender")


def test_configure_fails_in_process_with_message() -> None:
    """No model is loaded when a parameter is wrong: configure fails at once and says why."""
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn

    from demoprof_ros.ros.profiler_node import EXIT_CONFIG, ProfilerNode

    context = Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "max_faces:=0", "-p", "autostart:=false"])
    try:
        node = ProfilerNode(context=context)
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "max_faces" in node.configure_error and node.configure_exit_code == EXIT_CONFIG
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_lifecycle_transitions_in_process() -> None:
    """configure / activate / deactivate / activate / cleanup / shutdown with the real profiler: the worker
    thread and the subscriptions follow the state, and max_rate holds the worker back."""
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn

    from demoprof_ros.ros.profiler_node import ProfilerNode

    ok = TransitionCallbackReturn.SUCCESS
    context = Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "autostart:=false", "-p", "model:=tiny", "-p",
                                      "detectors:=[haar]", "-p", "max_rate:=5.0", "-r", "__node:=lifecycle_test_node"])
    try:
        node = ProfilerNode(context=context)
        assert node.trigger_configure() == ok, node.configure_error
        assert node.profiler is not None and node.profiler.detector_name == "haar"
        assert node.trigger_activate() == ok
        worker = node._worker
        assert worker is not None and worker.is_alive() and set(node._image_subs) == {"raw", "compressed"}
        # A blank 64x64 frame takes milliseconds (no face to score): only max_rate (5 Hz) limits the worker.
        from sensor_msgs.msg import Image

        blank = Image(**bgr_to_image_fields(np.zeros((64, 64, 3), np.uint8)))
        start = time.monotonic()
        while time.monotonic() - start < 1.2:
            node._enqueue(blank, "raw")
            time.sleep(0.01)
        time.sleep(0.3)
        processed, dropped = node._counters.processed, node._mailbox.dropped
        assert 3 <= processed <= 8, processed
        assert dropped >= 50 and node._counters.received == processed + dropped
        assert node.trigger_deactivate() == ok
        assert not worker.is_alive() and node._image_subs == {}
        assert node.trigger_activate() == ok and node._worker.is_alive()
        assert node.trigger_deactivate() == ok and node.trigger_cleanup() == ok
        assert node.profiler is None and node._worker is None
        assert node.trigger_shutdown() == ok
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


# --- real node over DDS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shm_before() -> set[str]:
    return fastdds_shm_files()


@pytest.fixture(scope="module")
def listener(shm_before: set[str]) -> Listener:
    listen = Listener()
    yield listen
    listen.close()


@pytest.fixture(scope="module")
def node(listener: Listener, tmp_path_factory: pytest.TempPathFactory) -> Child:
    log = tmp_path_factory.mktemp("node") / "profiler_node.log"
    child = Child(NODE, ["--ros-args", "--params-file", str(PARAMS), *MODULE_OVERRIDES], log)
    try:
        ready = listener.wait_for(lambda: _diag(listener, "/profiler_node"), START_TIMEOUT)
        assert ready, f"profiler node not active within {START_TIMEOUT} s; log:\n{child.log()[-3000:]}"
        yield child
    finally:
        child.kill()


def _diag(listener: Listener, name: str) -> dict | None:
    for array in reversed(listener.diagnostics):
        for status in array.status:
            if status.name.startswith(name + ":"):
                return {kv.key: kv.value for kv in status.values}
    return None


def _fresh_diag(listener: Listener, name: str, timeout: float = 10.0) -> dict[str, str]:
    """The first diagnostics report published after this call."""
    count = listener.diagnostics_count()
    assert listener.wait_for(lambda: len(listener.diagnostics) > count and _diag(listener, name), timeout)
    values = listener.diagnostic_values(name)
    assert values is not None
    return values


def _haar_count(image: np.ndarray) -> int:
    """Faces the node must report: the core Haar detector with the params file's settings."""
    import yaml

    p = yaml.safe_load(PARAMS.read_text())["/**/profiler_node"]["ros__parameters"]
    detector = build_detector(("haar",), score_threshold=p["detection_threshold"], min_face_size=p["min_face_size"],
                              max_faces=p["max_faces"])
    return len(detector.detect(image))


def _check_payload(payload: dict, schema: dict, expected_faces: int) -> None:
    errors = schema_errors(payload, schema)
    assert not errors, errors
    assert payload["model"] == "tiny-64" and payload["detector"] == "haar"  # the -p overrides took effect
    assert len(payload["faces"]) == expected_faces
    for face in payload["faces"]:
        assert set(face["attributes"]) == {"age", "gender", "race"}  # params file: all on
        for result in face["attributes"].values():
            assert math.isclose(sum(result["distribution"].values()), 1.0, abs_tol=1e-4)


@pytest.mark.parametrize("compressed", [False, True], ids=["Image", "CompressedImage"])
def test_photo_profiled(node: Child, listener: Listener, tmp_path: Path, compressed: bool) -> None:
    frame_id = "cam_jpeg" if compressed else "cam_raw"
    image = load_image(PHOTO)
    if compressed:  # image_source re-encodes at quality 90: count faces on what the node will decode
        image = compressed_to_bgr(SimpleNamespace(**bgr_to_compressed(image, "jpeg", 90)))
    expected = _haar_count(image)
    assert expected >= 2, "the sample photo should show several faces to Haar"

    # wait for both subscriptions (node and this test's listener): frames sent before discovery are lost
    args = [str(PHOTO), "--count", "3", "--rate", "4", "--wait", "20", "--subscribers", "2", "--frame-id", frame_id]
    source = Child(SOURCE, args + (["--compressed"] if compressed else []), tmp_path / "source.log")
    try:
        assert source.wait(60) == 0, source.log()
        # this test's own image subscription is best effort too: it may miss a frame the node profiled
        profiles = listener.wait_for(lambda: [p for p in listener.profiles if p["header"]["frame_id"] == frame_id], 30)
        assert profiles, (f"no /user_profile for {frame_id} (source frames seen: {listener.image_stamps[frame_id]}, "
                          f"profiles {[p['header']['frame_id'] for p in listener.profiles]}); source log:\n"
                          f"{source.log()}\nnode log:\n{node.log()[-3000:]}")
        # give a frame that was still being profiled a moment, then look at all of them
        time.sleep(1.0)
        profiles = listener.profiles_for(frame_id)
    finally:
        source.kill()
    sent = listener.image_stamps[frame_id]
    schema = load_schema()
    ids = []
    seen = [sec + 1e-9 * nsec for sec, nsec in sent]
    assert seen and any((p["header"]["stamp"]["sec"], p["header"]["stamp"]["nanosec"]) in sent for p in profiles)
    for payload in profiles:
        stamp = payload["header"]["stamp"]
        if (stamp["sec"], stamp["nanosec"]) not in sent:  # a frame this listener missed: one of the source's 3
            t = stamp["sec"] + 1e-9 * stamp["nanosec"]
            assert len(sent) < 3 and min(seen) - 0.3 <= t <= max(seen) + 0.3, \
                f"profile stamp {stamp} must be a source frame's stamp (seen {sent})"
        assert payload["image"] == {"width": image.shape[1], "height": image.shape[0]}
        assert set(payload["faces_dropped"]) == {"min_face_size", "max_faces"}  # never a silent cap
        _check_payload(payload, schema, expected)
        ids.append(sorted(f["id"] for f in payload["faces"]))
    assert all(i == ids[0] for i in ids), f"face ids must stay stable on a still scene: {ids}"
    assert [p["header"]["stamp"]["nanosec"] + 1e9 * p["header"]["stamp"]["sec"] for p in profiles] == sorted(
        p["header"]["stamp"]["nanosec"] + 1e9 * p["header"]["stamp"]["sec"] for p in profiles)


def test_debug_image(node: Child, listener: Listener) -> None:
    """~/debug_image (switched on for this node) carries the annotated frame with the source stamp."""
    raw_stamps = set(listener.image_stamps["cam_raw"])
    images = listener.wait_for(lambda: [m for m in listener.debug_images
                                        if (m.header.stamp.sec, m.header.stamp.nanosec) in raw_stamps], 10)
    assert images, "no debug image for the profiled raw frames"
    msg = images[-1]
    assert (msg.encoding, msg.width, msg.height) == ("bgr8", 640, 427)
    drawn = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
    source = load_image(PHOTO).reshape(msg.height, -1)
    assert (drawn != source).mean() > 0.001, "boxes and labels should be drawn"


def test_params_file_and_overrides_applied(node: Child, listener: Listener) -> None:
    values = listener.get_parameters("/profiler_node", ["model", "detectors", "tracking.min_hits", "tracking.window",
                                                        "reliability", "attributes.race", "transport"])
    assert values == {"model": "tiny", "detectors": ["haar"], "tracking.min_hits": 1, "tracking.window": 60,
                      "reliability": "best_effort", "attributes.race": True, "transport": "both"}


def test_burst_newest_processed_and_drops_counted(node: Child, listener: Listener) -> None:
    fields = bgr_to_image_fields(load_image(PHOTO))
    before = _fresh_diag(listener, "/profiler_node")
    burst = 12
    for i in range(burst):
        listener.publish_image(fields, (2000, i), "burst")
        time.sleep(0.03)  # faster than the model, slow enough for the executor to take each one
    newest = listener.wait_for(lambda: [p for p in listener.profiles if p["header"]["frame_id"] == "burst"
                                        and p["header"]["stamp"]["nanosec"] == burst - 1], 30)
    assert newest, f"the newest frame of the burst was not profiled; node log:\n{node.log()[-3000:]}"
    time.sleep(0.5)
    after = _fresh_diag(listener, "/profiler_node")
    profiles = listener.profiles_for("burst")
    dropped = int(after["frames_dropped"]) - int(before["frames_dropped"])
    received = int(after["frames_received"]) - int(before["frames_received"])
    assert dropped >= 1, (before, after)
    assert len(profiles) <= burst - dropped and len(profiles) < burst
    # nothing is queued: every frame received was profiled, rejected or dropped
    assert int(after["frames_received"]) == sum(int(after[k]) for k in ("frames_processed", "frames_dropped",
                                                                          "bad_frames", "errors"))
    assert received >= len(profiles) + dropped
    assert newest[0]["frames_dropped"] >= int(before["frames_dropped"]) + 1  # also in the JSON
    stamps = [p["header"]["stamp"]["nanosec"] for p in profiles]
    assert stamps == sorted(stamps) and stamps[-1] == burst - 1


def test_bad_frames_skipped_and_logged(node: Child, listener: Listener) -> None:
    image = load_image(PHOTO)
    good = bgr_to_image_fields(image)
    row = good["step"]
    bad = {
        "encoding": (dict(good, encoding="yuv422"), "unsupported encoding 'yuv422'"),
        "step": (dict(good, step=row - 3), "is smaller than a row"),
        "truncated": (dict(good, data=good["data"][: len(good["data"]) // 2]), "expected step * height"),
        "empty": (dict(good, height=0, width=0, step=0, data=b""), "empty image: 0x0"),
    }
    before = _fresh_diag(listener, "/profiler_node")
    for i, (fields, _) in enumerate(bad.values()):
        listener.publish_image(fields, (3000, i), "bad")
        time.sleep(0.3)
    listener.publish_image(good, (3001, 0), "after_bad")
    assert listener.wait_for(lambda: [p for p in listener.profiles if p["header"]["frame_id"] == "after_bad"], 30), \
        f"the good frame after the bad ones was not profiled; log:\n{node.log()[-3000:]}"
    assert node.proc.poll() is None, "the node must survive bad frames"
    assert listener.profiles_for("bad") == []
    after = _fresh_diag(listener, "/profiler_node")
    assert int(after["bad_frames"]) - int(before["bad_frames"]) == len(bad)
    for _, text in bad.values():
        assert node.wait_log(text, 5), f"no log line with {text!r}"


def test_diagnostics_report(node: Child, listener: Listener) -> None:
    values = _fresh_diag(listener, "/profiler_node")
    for key in ("frames_received", "frames_processed", "frames_dropped", "bad_frames", "rate_hz", "latency_ms",
                "model", "detector"):
        assert key in values
    assert values["model"] == "tiny-64" and int(values["frames_processed"]) >= 1
    assert float(values["latency_max_ms"]) > 0


def test_bad_parameter_fails_configure_and_exits(tmp_path: Path) -> None:
    child = Child(NODE, ["--ros-args", "--params-file", str(PARAMS), "-p", "tracking.fusion:=median",
                         "-r", "__node:=bad_param_node"], tmp_path / "bad.log")
    try:
        code = child.wait(60)
        assert code == 2, f"exit code {code}; log:\n{child.log()}"
        log = child.log()
        assert "configure failed" in log and "tracking.fusion" in log and "median" in log
        assert "Traceback" not in log
    finally:
        child.kill()


def test_sigterm_while_busy_exits_cleanly(listener: Listener, tmp_path: Path, shm_before: set[str]) -> None:
    child = Child(NODE, ["--ros-args", "--params-file", str(PARAMS), *OVERRIDES, "-r", "__ns:=/term"],
                  tmp_path / "term.log")
    try:
        assert listener.wait_for(lambda: _diag(listener, "/term/profiler_node"), START_TIMEOUT), child.log()[-3000:]
        pub = listener.node.create_publisher(listener.Image, "/term/image", 10)
        assert listener.wait_for(lambda: pub.get_subscription_count() >= 1, 10), "node's subscription not discovered"
        from std_msgs.msg import Header

        pub.publish(listener.Image(header=Header(frame_id="term"), **bgr_to_image_fields(load_image(PHOTO))))
        # transport 'auto' (the default): the first raw frame makes the node drop its compressed subscription
        assert child.wait_log("unsubscribed from /term/image/compressed", 10), child.log()[-3000:]
        time.sleep(0.05)  # the worker is now (most likely) inside the model
        child.signal(signal.SIGTERM)
        code = child.wait(30)
        assert code == 0, f"exit code {code}; log:\n{child.log()[-3000:]}"
        assert not child.group_alive(), "a process of the node's session is still running"
        assert "Traceback" not in child.log()
        listener.node.destroy_publisher(pub)
    finally:
        child.kill()


def test_sigint_exits_cleanly_without_leftovers(node: Child, shm_before: set[str]) -> None:
    """Runs last in this file: stops the module's node with Ctrl-C."""
    node.signal(signal.SIGINT)
    code = node.wait(30)
    assert code == 0, f"exit code {code}; log:\n{node.log()[-3000:]}"
    assert not node.group_alive()
    assert "Traceback" not in node.log()
    deadline = time.monotonic() + 5
    while shm_leftovers(shm_before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not shm_leftovers(shm_before), "Fast DDS shared-memory files left behind by the node processes"
