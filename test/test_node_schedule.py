"""Scheduled scoring in the node: its parameters, and a node process over real DDS that publishes every tracked
face on every frame while the model scores far fewer faces than it publishes."""
from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: the node tests need ROS 2 Python")

from demoprof_ros.core.images import load_image  # noqa: E402
from demoprof_ros.core.profiler import ConfigError  # noqa: E402
from demoprof_ros.core.schedule import ScheduleConfig  # noqa: E402
from demoprof_ros.ros.image_conversion import bgr_to_image_fields  # noqa: E402
from demoprof_ros.ros.params import parameter_table, settings_from_values  # noqa: E402

from helpers_ros import ROOT, Child, Listener, load_schema, schema_errors  # noqa: E402

PHOTO = ROOT / "test" / "data" / "group_photos" / "obama_family_2011.jpg"
NODE = "demoprof_ros.ros.profiler_node"


def test_schedule_parameters_declared_with_core_defaults() -> None:
    table = parameter_table()
    defaults = ScheduleConfig()
    assert {k: v for k, (v, _) in table.items() if k.startswith("schedule.")} == {
        f"schedule.{k}": v for k, v in vars(defaults).items()}
    assert all(doc for k, (_, doc) in table.items() if k.startswith("schedule."))
    settings = settings_from_values({"schedule.refresh_frames": 30, "schedule.enabled": False})
    assert settings.schedule == ScheduleConfig(refresh_frames=30, enabled=False)


@pytest.mark.parametrize("values, fragment", [
    ({"schedule.refresh_frames": 0}, "parameter schedule.refresh_frames: expected an integer >= 1, got 0"),
    ({"schedule.refresh_frames": "often"}, "parameter schedule.refresh_frames: expected an integer, got 'often'"),
    ({"schedule.enabled": "true"}, "parameter schedule.enabled: expected true or false"),
    ({"schedule.rescore_iou": 2.0}, "parameter schedule.rescore_iou: expected a number in [0, 1]"),
    ({"schedule.max_scored_per_frame": -2}, "parameter schedule.max_scored_per_frame: expected an integer >= 0"),
    ({"schedule.rescore_scale": 0.9}, "parameter schedule.rescore_scale: expected a number >= 1"),
])
def test_bad_schedule_parameters_named(values: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_values(values)
    assert fragment in str(info.value)


@pytest.fixture
def listener() -> Listener:
    listen = Listener("schedule_listener")
    yield listen
    listen.close()


def test_node_publishes_every_face_each_frame_but_scores_few(listener: Listener, tmp_path) -> None:
    frames = 12
    args = ["--ros-args", "-p", "model:=tiny", "-p", "detectors:=[haar]", "-p", "tracking.min_hits:=1",
            "-p", "min_face_size:=24", "-p", "diagnostics_period:=0.3", "-p", "transport:=raw",
            "-p", "publish_hri:=false"]
    node = Child(NODE, args, tmp_path / "node.log")
    try:
        assert listener.wait_for(lambda: listener.diagnostic_values("/profiler_node"), 180), node.log()[-3000:]
        assert listener.wait_for(lambda: listener.image_pub.get_subscription_count() > 0, 30)
        fields = bgr_to_image_fields(load_image(PHOTO))
        for i in range(frames):  # one at a time: every frame is processed, none replaced in the mailbox
            listener.publish_image(fields, (100, i), "sched_cam")
            got = listener.wait_for(lambda: len(listener.profiles_for("sched_cam")) > i, 60)
            assert got, f"no profile for frame {i}; node log:\n{node.log()[-3000:]}"
        profiles = listener.profiles_for("sched_cam")
        diag = listener.wait_for(lambda: (d := listener.diagnostic_values("/profiler_node"))
                                 and int(d["frames_processed"]) >= frames and d, 30)
    finally:
        node.kill()
    schema = load_schema()
    assert len(profiles) == frames
    counts = {len(p["faces"]) for p in profiles}
    assert len(counts) == 1 and counts.pop() >= 2, [len(p["faces"]) for p in profiles]  # every face, every frame
    faces = [f for p in profiles for f in p["faces"]]
    for payload in profiles:
        assert not schema_errors(payload, schema)
    ages = [f["frames_since_scored"] for f in faces]
    assert all(0 <= f["seconds_since_scored"] < 60 for f in faces)
    assert max(ages) >= 2 and ages.count(0) < len(faces) / 2  # most published faces reuse a fused estimate
    assert all(f["frames_since_scored"] == 0 for f in profiles[0]["faces"])  # new faces are scored at once
    # the node's own count of crops the model scored agrees with what the profiles say
    assert diag, "no diagnostics after the frames"
    assert int(diag["faces_scored"]) == ages.count(0) < int(diag["faces_tracked"]) == len(faces)
