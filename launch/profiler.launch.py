"""Launch the demoprof_ros profiler (a lifecycle node that configures and activates itself).

  ros2 launch demoprof_ros profiler.launch.py image:=/camera/color/image_raw
  ros2 launch demoprof_ros profiler.launch.py namespace:=front image:=/front/image_raw model:=farl device:=cuda
  ros2 launch demoprof_ros profiler.launch.py autostart:=false   # then: ros2 lifecycle set /profiler_node configure

`model`, `device`, `debug_image` and `autostart` override the params file only when given; `image` is remapped
together with its `/compressed` sibling, so raw and compressed cameras both work. Then:
`ros2 topic echo /user_profile` (or `<namespace>/user_profile`).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = "demoprof_ros"
EXECUTABLE = "profiler_node"
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _as_bool(name, text):
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"launch argument {name}:={text!r}: expected true or false") from None


def _profiler(context, *args, **kwargs):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    image = value("image")
    overrides = {name: value(name) for name in ("model", "device") if value(name)}
    for name in ("debug_image", "autostart"):
        if value(name):
            overrides[name] = _as_bool(name, value(name))
    return [LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name="profiler_node",
        namespace=value("namespace"),
        parameters=[value("params_file"), overrides],
        remappings=[("image", image), ("image/compressed", image.rstrip("/") + "/compressed")],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "profiler.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="image",
                              description="camera image topic (its /compressed sibling is used too)"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS parameters file (all settings; see config/profiler.yaml)"),
        DeclareLaunchArgument("model", default_value="",
                              description="override the model: auto | farl | clip | tiny | a checkpoint path"),
        DeclareLaunchArgument("device", default_value="", description="override the device: cpu | cuda | cuda:N"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its topics (one profiler per camera)"),
        DeclareLaunchArgument("debug_image", default_value="",
                              description="true | false: publish ~/debug_image (default: as in the params file)"),
        DeclareLaunchArgument("autostart", default_value="",
                              description="true | false: configure and activate at start; false waits for `ros2 "
                                          "lifecycle set` or a lifecycle manager (default: as in the params file)"),
        OpaqueFunction(function=_profiler),
    ])
