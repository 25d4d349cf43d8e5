"""profiler_node's main(): the hints it logs, and Ctrl-C while frames flow.

Ctrl-C must end the node with 0 and quietly, even when more SIGINTs arrive during teardown (a terminal and
`ros2 launch` each send one). Before the fix the worker published after rclpy had shut the context down
("publisher's context is invalid") and a second SIGINT ended the process with -2."""
from __future__ import annotations

import signal
import time

import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: the node tests need ROS 2 Python")

from helpers_ros import ROOT, Child, Listener  # noqa: E402

PHOTO = ROOT / "test" / "data" / "group_photos" / "obama_family_2011.jpg"
OVERRIDES = ["-p", "model:=tiny", "-p", "detectors:=[haar]", "-p", "tracking.min_hits:=1"]
START_TIMEOUT = 90.0


@pytest.mark.parametrize("on_path, expected", [
    (True, "run `demoprof models fetch farl` (or `demoprof-train --help`)"),
    (False, "run `ros2 run demoprof_ros demoprof models fetch farl` "
            "(or `ros2 run demoprof_ros demoprof-train --help`)"),
])
def test_hints_name_the_command_that_works_here(monkeypatch, tmp_path, on_path: bool, expected: str) -> None:
    import shutil
    import sys

    from demoprof_ros.ros import profiler_node

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/demoprof" if on_path else None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))  # no console script beside it
    text = "run `demoprof models fetch farl` (or `demoprof-train --help`)"
    assert profiler_node.cli_hints(text) == expected
    assert profiler_node.cli_hints("no command here") == "no command here"


@pytest.mark.parametrize("extra_signals", [0, 20], ids=["one_sigint", "sigint_burst"])
def test_ctrl_c_while_frames_flow_exits_clean_and_quiet(tmp_path, extra_signals: int) -> None:
    from std_msgs.msg import String

    ns = f"/shut{extra_signals}"
    listener = Listener(f"shutdown_listener{extra_signals}")
    listener.collect(String, f"{ns}/user_profile", 50)
    node = Child("demoprof_ros.ros.profiler_node",
                 ["--ros-args", "--params-file", str(ROOT / "config" / "profiler.yaml"), *OVERRIDES,
                  "-r", f"__ns:={ns}"], tmp_path / "node.log")
    source = Child("demoprof_ros.ros.image_source", [str(PHOTO), "--rate", "30", "--topic", f"{ns}/image",
                                                     "--wait", str(START_TIMEOUT)], tmp_path / "source.log")
    try:
        flowing = listener.wait_for(lambda: len(listener.collected[f"{ns}/user_profile"]) >= 3, START_TIMEOUT)
        assert flowing, f"no profiles flowing; node log:\n{node.log()[-3000:]}\nsource:\n{source.log()[-1500:]}"
        node.signal(signal.SIGINT)
        for _ in range(extra_signals):  # keep pressing Ctrl-C through the whole teardown
            time.sleep(0.02)
            node.signal(signal.SIGINT)
        code = node.wait(30)
        log = node.log()
        assert code == 0, f"exit code {code}; log:\n{log[-3000:]}"
        for noise in ("[ERROR]", "context is invalid", "Traceback", "KeyboardInterrupt", "profiling a frame failed"):
            assert noise not in log, f"{noise!r} in the node's log:\n{log[-3000:]}"
        assert not node.group_alive()
    finally:
        node.kill()
        source.kill()
        listener.close()
