"""launch/profiler.launch.py: static checks and its arguments everywhere, a launch_testing run on a ROS 2 install.

Here (pip wheels of rclpy only) `launch` / `launch_testing` are not importable: the launch file runs against
stand-ins of the few launch classes it uses, and the launch test is reported as skipped with the reason. In a
ROS 2 workspace (`colcon test`, or `launch_test test/test_launch.py`) the launch_testing pytest plugin runs
generate_test_description and the TestCase classes below; where `launch_testing` imports but its plugin is not
loaded (`-p no:launch_testing`), those classes skip with the reason instead of failing.
"""
from __future__ import annotations

import ast
import json
import os
import runpy
import sys
import time
import types
import unittest
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "profiler.launch.py"
PHOTO = ROOT / "test" / "data" / "group_photos" / "obama_family_2011.jpg"
ARGUMENTS = {"image", "params_file", "model", "device", "namespace", "debug_image", "autostart"}

try:
    # `from launch import ...`, not `import launch`: the repository's own launch/ folder would satisfy that.
    from launch import LaunchDescription  # noqa: F401
    import launch_ros.actions  # noqa: F401
    import launch_testing.actions  # noqa: F401
    HAVE_LAUNCH_TESTING = True
    WHY_NOT = ""
except ImportError as error:
    HAVE_LAUNCH_TESTING = False
    WHY_NOT = (f"launch_testing needs a ROS 2 install (`launch`, `launch_ros`, `launch_testing`): {error}; "
               "run `colcon test --packages-select demoprof_ros` in a sourced workspace")


class TestLaunchFileText(unittest.TestCase):
    """Static checks that hold with or without ROS installed."""

    def setUp(self) -> None:
        self.source = LAUNCH_FILE.read_text()
        self.tree = ast.parse(self.source, filename=str(LAUNCH_FILE))

    def _strings(self) -> set[str]:
        return {n.value for n in ast.walk(self.tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}

    def test_defines_generate_launch_description(self) -> None:
        names = {n.name for n in self.tree.body if isinstance(n, ast.FunctionDef)}
        self.assertIn("generate_launch_description", names)

    def test_names_package_and_executable(self) -> None:
        strings = self._strings()
        self.assertIn("demoprof_ros", strings)
        self.assertIn("profiler_node", strings)
        self.assertIn("LifecycleNode", self.source)
        setup = (ROOT / "setup.py").read_text()
        self.assertIn("profiler_node = demoprof_ros.ros.profiler_node:main", setup)
        self.assertIn('glob("launch/*.launch.py")', setup)  # installed to share/demoprof_ros/launch

    def test_declares_the_documented_arguments(self) -> None:
        declared = {n.args[0].value for n in ast.walk(self.tree) if isinstance(n, ast.Call)
                    and getattr(n.func, "id", "") == "DeclareLaunchArgument" and n.args
                    and isinstance(n.args[0], ast.Constant)}
        self.assertEqual(declared, ARGUMENTS)

    def test_default_params_file_is_the_shipped_one(self) -> None:
        self.assertIn("profiler.yaml", self._strings())
        self.assertTrue((ROOT / "config" / "profiler.yaml").is_file())


class _Config:
    """Stand-in of launch.substitutions.LaunchConfiguration: perform() reads the test's argument values."""

    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: dict[str, str]) -> str:
        return context[self.name]


class _Action:
    """Stand-in of a launch action: keeps its arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _run_launch_file(monkeypatch: pytest.MonkeyPatch, **arguments: str) -> dict:
    """Run the launch file's OpaqueFunction with stand-ins of launch / launch_ros and return the node's kwargs."""
    fakes = {
        "ament_index_python.packages": {"get_package_share_directory": lambda package: str(ROOT)},
        "launch": {"LaunchDescription": lambda actions: actions},
        "launch.actions": {"DeclareLaunchArgument": _Action, "OpaqueFunction": _Action},
        "launch.substitutions": {"LaunchConfiguration": _Config},
        "launch_ros.actions": {"LifecycleNode": _Action},
    }
    for name, attrs in fakes.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    actions = runpy.run_path(str(LAUNCH_FILE))["generate_launch_description"]()
    defaults = {a.args[0]: a.kwargs["default_value"] for a in actions if a.args}
    (opaque,) = [a for a in actions if "function" in a.kwargs]
    (node,) = opaque.kwargs["function"](defaults | arguments)
    return node.kwargs


def test_launch_arguments_reach_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    node = _run_launch_file(monkeypatch, image="/front/image_raw", namespace="front", model="tiny",
                            autostart="false", debug_image="True")
    params_file, overrides = node["parameters"]
    assert params_file == str(ROOT / "config" / "profiler.yaml")
    assert overrides == {"model": "tiny", "autostart": False, "debug_image": True}
    assert node["namespace"] == "front" and node["executable"] == "profiler_node"
    assert dict(node["remappings"]) == {"image": "/front/image_raw", "image/compressed": "/front/image_raw/compressed"}


def test_launch_defaults_leave_the_params_file_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run_launch_file(monkeypatch)["parameters"][1] == {}


def test_launch_rejects_a_bad_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="autostart:='ture'"):
        _run_launch_file(monkeypatch, autostart="ture")


if HAVE_LAUNCH_TESTING:
    import launch_testing.actions
    import launch_testing.asserts
    from launch import LaunchDescription
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import Node

    NAMESPACE = "launch_test"

    @pytest.fixture
    def needs_launch_testing_plugin(request: pytest.FixtureRequest) -> None:
        """Without the plugin pytest would collect the TestCases below as plain tests (proc_info: TypeError).
        Under the plugin the module is run by launch_testing itself and this fixture is not used."""
        if not request.config.pluginmanager.hasplugin("launch_testing"):
            pytest.skip("the launch_testing pytest plugin is not loaded (disabled, or pytest >= 9: it cannot load); "
                        "run `launch_test test/test_launch.py` or `colcon test --packages-select demoprof_ros`")

    @pytest.mark.launch_test
    def generate_test_description():
        profiler = IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
            launch_arguments={"model": "tiny", "namespace": NAMESPACE, "image": f"/{NAMESPACE}/camera"}.items())
        source = Node(package="demoprof_ros", executable="image_source", output="screen",
                      arguments=[str(PHOTO), "--rate", "2", "--topic", f"/{NAMESPACE}/camera", "--wait", "120"])
        return LaunchDescription([profiler, source, launch_testing.actions.ReadyToTest()])

    @pytest.mark.usefixtures("needs_launch_testing_plugin")
    class TestProfilesArrive(unittest.TestCase):
        def test_user_profile_json(self) -> None:
            import rclpy
            from std_msgs.msg import String

            rclpy.init()
            try:
                node = rclpy.create_node("launch_test_listener")
                received: list[dict] = []
                node.create_subscription(String, f"/{NAMESPACE}/user_profile",
                                         lambda msg: received.append(json.loads(msg.data)), 10)
                deadline = time.monotonic() + float(os.environ.get("DEMOPROF_LAUNCH_TIMEOUT", "120"))
                while not any(p["faces"] for p in received) and time.monotonic() < deadline:
                    rclpy.spin_once(node, timeout_sec=0.2)
                node.destroy_node()
            finally:
                rclpy.shutdown()
            self.assertTrue(received, "no message on /launch_test/user_profile")
            with_faces = [p for p in received if p["faces"]]
            self.assertTrue(with_faces, "profiles arrived but none had a face")
            self.assertEqual(with_faces[0]["model"][:4], "tiny")
            self.assertEqual(with_faces[0]["header"]["frame_id"], "camera")

    @pytest.mark.usefixtures("needs_launch_testing_plugin")
    @launch_testing.post_shutdown_test()
    class TestCleanExit(unittest.TestCase):
        def test_exit_codes(self, proc_info) -> None:
            launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0])
else:
    def test_launch_testing_run() -> None:
        pytest.skip(WHY_NOT)
