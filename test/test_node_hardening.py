"""The node keeps working whatever arrives (issue 13): hostile frames, failing logs, NaN, bad parameters, signals.

The frame cases run in-process against a real configured ProfilerNode (tiny model, Haar), feeding the
worker through the same `_enqueue` the subscriptions call; parameter and signal cases run the node as a
process, as a user would.
"""
from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: the node tests need ROS 2 Python")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from demoprof_ros.ros import profiler_node  # noqa: E402
from demoprof_ros.ros.diagnostics import diagnostic_status  # noqa: E402
from demoprof_ros.ros.image_conversion import bgr_to_compressed, bgr_to_image_fields  # noqa: E402
from demoprof_ros.ros.node_logging import KeyedThrottle, SafeLogger  # noqa: E402

from helpers_hostile import jpeg_declaring, png_declaring  # noqa: E402
from helpers_ros import Child, fastdds_shm_files, shm_leftovers  # noqa: E402

NODE = "demoprof_ros.ros.profiler_node"
FAST = ["-p", "model:=tiny", "-p", "detectors:=[haar]"]
BLANK = np.zeros((64, 64, 3), np.uint8)


# --- logging that cannot raise, throttling that cannot be bypassed ------------------------------------------

def test_rclpy_call_site_rule_is_real_and_safe_logger_avoids_it() -> None:
    """One rclpy call site at two severities raises (what killed the worker); SafeLogger does not."""
    logger = rclpy.logging.get_logger("hardening_probe")

    def same_site(level: str) -> None:
        getattr(logger, level)("probe")

    same_site("warning")
    with pytest.raises(ValueError, match="severity cannot be changed"):
        same_site("error")
    safe = SafeLogger(logger)
    for level in ("warning", "error", "info", "warning", "debug", "error"):
        safe.log(level, "probe")
    assert safe.failures == 0


def test_safe_logger_falls_back_to_stderr(capsys: pytest.CaptureFixture) -> None:
    class Broken:
        def __getattr__(self, name):
            def fail(message):
                raise RuntimeError("rosout gone")
            return fail

    safe = SafeLogger(Broken())
    safe.error("frame 7 failed")
    safe.log("nonsense-level", "still logged")
    assert safe.failures == 2
    err = capsys.readouterr().err
    assert "[ERROR] frame 7 failed (ROS logger failed: RuntimeError)" in err and "still logged" in err


def test_throttle_tables_are_bounded() -> None:
    throttle = KeyedThrottle(period_s=60, max_keys=8)
    shown = sum(throttle.check(f"kind-{chr(65 + i % 26)}{i // 26}x")[0] for i in range(10_000))
    assert len(throttle) <= 9 and shown <= 9  # 8 kinds + the shared "other"


# --- in-process node ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node():
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn

    context = Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "autostart:=false", *FAST, "-p", "tracking.min_hits:=1",
                                      "-p", "transport:=both", "-r", "__node:=hardening_node"])
    node = profiler_node.ProfilerNode(context=context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.configure_error
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        yield node
        node.trigger_deactivate()
        node.trigger_cleanup()
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.fixture
def published(node, monkeypatch):
    """What the node publishes on user_profile, and a fresh throttle (each test sees its first log lines)."""
    sent: list[str] = []
    monkeypatch.setattr(node._profile_pub, "publish", lambda msg: sent.append(msg.data))
    node._throttle = KeyedThrottle(period_s=60)
    return sent


def _done(node) -> int:
    c = node._counters
    return c.processed + c.bad_frames + c.errors


def feed(node, msg, kind: str, timeout: float = 30.0) -> None:
    """Hand one frame to the worker and wait until it has finished with it (whatever the outcome)."""
    before = _done(node)
    node._enqueue(msg, kind)
    deadline = time.monotonic() + timeout
    while _done(node) == before:
        assert node._worker is not None and node._worker.is_alive(), "the inference thread died"
        assert time.monotonic() < deadline, "the worker did not finish the frame"
        time.sleep(0.01)


def raw(frame_id: str = "cam", **change) -> Image:
    fields = {**bgr_to_image_fields(BLANK), **change}
    return Image(header=Header(frame_id=frame_id), **fields)


def compressed(data: bytes, fmt: str = "png", frame_id: str = "cam") -> CompressedImage:
    return CompressedImage(header=Header(frame_id=frame_id), format=fmt, data=data)


def test_bomb_after_a_warning_does_not_stop_profiling(node, published, capfd) -> None:
    """The fuzz report's sequence: a warning, then a 69-byte PNG declaring 40000x40000, then an exception."""
    before = (node._counters.bad_frames, node._counters.errors, node._counters.processed)
    feed(node, raw(encoding="yuv422"), "raw")
    feed(node, compressed(png_declaring(40000, 40000, rows=0)), "compressed")
    feed(node, compressed(jpeg_declaring(30000, 30000), "jpeg"), "compressed")
    feed(node, compressed(png_declaring(30000, 30000, rows=4)), "compressed")
    original = node.tracker.update

    def boom(faces, now=None):
        node.tracker.update = original
        raise RuntimeError("a bug in one frame")

    node.tracker.update = boom
    feed(node, raw(), "raw")
    feed(node, raw(), "raw")
    c = node._counters
    assert (c.bad_frames - before[0], c.errors - before[1], c.processed - before[2]) == (4, 1, 1)
    assert node._worker.is_alive() and len(published) == 1
    err = capfd.readouterr().err
    assert "refused before decoding" in err and "profiling a frame failed: RuntimeError: a bug in one frame" in err
    assert "severity cannot be changed" not in err


def test_failing_log_cannot_stop_the_worker(node, published, monkeypatch) -> None:
    class Broken:
        def __getattr__(self, name):
            def fail(message):
                raise ValueError("Logger severity cannot be changed between calls")
            return fail

    monkeypatch.setattr(node._log, "ros_logger", Broken())
    failures = node._log.failures
    feed(node, raw(step=1), "raw")
    feed(node, compressed(b"garbage", "jpeg"), "compressed")
    feed(node, raw(), "raw")
    assert node._worker.is_alive() and node._log.failures > failures and len(published) == 1


def test_varying_strings_cannot_bypass_the_throttle(node, published, capfd) -> None:
    capfd.readouterr()
    for i in range(40):
        feed(node, raw(frame_id=f"cam{i}-{'x' * i}", encoding=f"enc{i}-{'y' * i}"), "raw")
    lines = [ln for ln in capfd.readouterr().err.splitlines() if "skipped a bad frame" in ln]
    assert len(lines) == 1, lines
    assert len(node._throttle) == 1


@pytest.mark.parametrize("frame_id, longest", [("cam\n[ERROR] [0.0] [profiler_node]: forged line", 600),
                                                ("f" * 65536, 600)])
def test_wire_strings_cannot_forge_or_flood_log_lines(node, published, capfd, frame_id, longest) -> None:
    capfd.readouterr()
    feed(node, raw(frame_id=frame_id, encoding="bayer\r\nfake"), "raw")
    lines = capfd.readouterr().err.splitlines()
    ours = [ln for ln in lines if "skipped a bad frame" in ln]
    assert len(ours) == 1 and max(map(len, lines)) < longest
    assert not any(ln.startswith("[ERROR] [0.0]") or ln.startswith("fake") for ln in lines)


def test_nan_is_never_published(node, published, monkeypatch) -> None:
    errors = node._counters.errors
    real = profiler_node.build_profile_dict

    def nan_profile(*args, **kwargs):
        payload = real(*args, **kwargs)
        payload["faces"] = [{"age": {"label": "20-29", "confidence": math.nan}}]
        return payload

    monkeypatch.setattr(profiler_node, "build_profile_dict", nan_profile)
    feed(node, raw(), "raw")
    assert published == [] and node._counters.errors == errors + 1
    monkeypatch.setattr(profiler_node, "build_profile_dict", real)
    feed(node, raw(), "raw")
    assert len(published) == 1 and "NaN" not in published[0]


def test_diagnostics_error_when_frames_arrive_and_the_worker_is_gone(node, published) -> None:
    node.diagnostics_values()  # start a new window
    node.stop_worker()
    try:
        for _ in range(3):
            node._enqueue(raw(), "raw")
        level, message = diagnostic_status(node.diagnostics_values())
        assert level == DiagnosticStatus.ERROR and "inference thread is not running" in message
    finally:
        node._start_worker()
    feed(node, raw(), "raw")
    level, _ = diagnostic_status(node.diagnostics_values())
    assert level == DiagnosticStatus.OK


def _values(**change) -> dict[str, str]:
    values = {"new_frames": 10, "new_processed": 10, "new_errors": 0, "new_bad_frames": 0, "rate_hz": 9.5,
              "seconds_since_last_frame": 0.1, "seconds_since_last_done": 0.1, "worker_alive": True}
    values.update(change)
    return {k: str(v) for k, v in values.items()}


@pytest.mark.parametrize("change, level, fragment", [
    ({}, DiagnosticStatus.OK, "profiling at 9.5 Hz"),
    ({"worker_alive": False}, DiagnosticStatus.ERROR, "inference thread is not running"),
    ({"new_processed": 0, "new_bad_frames": 10}, DiagnosticStatus.ERROR, "no usable frame"),
    ({"new_errors": 2}, DiagnosticStatus.ERROR, "2 frame(s) failed"),
    ({"new_processed": 0, "seconds_since_last_done": 30.0}, DiagnosticStatus.STALE, "none was processed for 30 s"),
    ({"new_processed": 0, "seconds_since_last_done": 2.0}, DiagnosticStatus.OK, "profiling"),  # a slow model
    ({"new_frames": 0, "new_processed": 0, "seconds_since_last_frame": 9.0}, DiagnosticStatus.WARN, "no images"),
    ({"new_bad_frames": 3}, DiagnosticStatus.WARN, "3 bad frame(s) skipped"),
])
def test_diagnostic_levels(change: dict, level: bytes, fragment: str) -> None:
    got, message = diagnostic_status(_values(**change))
    assert got == level and fragment in message


# --- parameters and arguments, as a user runs the node --------------------------------------------------


def test_help_prints_usage_instead_of_starting(capsys: pytest.CaptureFixture) -> None:
    assert profiler_node.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: profiler_node") and "max_image_pixels" in out and "autostart" in out


def _run_node(tmp_path: Path, args: list[str], timeout: float = 90.0) -> tuple[int | None, str]:
    child = Child(NODE, args, tmp_path / "node.log")
    try:
        return child.wait(timeout), child.log()
    finally:
        child.kill()


@pytest.mark.parametrize("body, fragment", [
    ("autostart: 'true'", "parameter autostart: expected true or false, got 'true'"),
    ("autostart: 1", "parameter autostart: expected true or false, got 1"),
    ("model: ~", "parameter model: got '~', which is how a YAML null (~) arrives"),
    ("prompts_file: /nonexistent/prompts.yaml", "parameter prompts_file: no such file"),
    ("model: [unclosed", "cannot start: failed to initialize rcl: Couldn't parse params file"),
])
def test_bad_params_file_exits_2_with_a_message(tmp_path: Path, body: str, fragment: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"/**/profiler_node:\n  ros__parameters:\n    detectors: [haar]\n    {body}\n")
    code, log = _run_node(tmp_path, ["--ros-args", "--params-file", str(params)])
    assert code == 2, f"exit code {code}; log:\n{log[-2000:]}"
    assert fragment in log and "Traceback" not in log, log[-2000:]
    assert "loading model" not in log  # found before any model is loaded


@pytest.mark.parametrize("when, signals", [("configure", [signal.SIGTERM]),
                                           ("configure", [signal.SIGINT, signal.SIGINT]),
                                           ("active", [signal.SIGINT, signal.SIGINT])])
def test_signals_exit_cleanly(tmp_path: Path, when: str, signals: list[int]) -> None:
    before = fastdds_shm_files()
    child = Child(NODE, ["--ros-args", *FAST, "-r", f"__ns:=/sig_{when}_{len(signals)}"], tmp_path / "node.log")
    try:
        marker = "loading model" if when == "configure" else "active: profiling"
        assert child.wait_log(marker, 90), child.log()[-2000:]
        for sig in signals:
            child.signal(sig)
            time.sleep(0.02)
        code = child.wait(90)
        log = child.log()
        assert code == 0, f"exit code {code}; log:\n{log[-2000:]}"
        assert "Traceback" not in log and "Failed to complete transition" not in log, log[-2000:]
        assert "context is invalid" not in log, log[-2000:]
        assert not child.group_alive()
        deadline = time.monotonic() + 5
        while shm_leftovers(before) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not shm_leftovers(before), "Fast DDS shared-memory files left behind"
    finally:
        child.kill()

