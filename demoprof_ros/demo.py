"""`demoprof demo`: the profiler node, a camera stand-in and a printer of /user_profile, over real ROS 2.

This is what `make demo` runs. The three are separate processes talking through DDS, as they would on a
robot; this module itself never imports rclpy (it only starts the console scripts), so the core stays
ROS-free.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .core.profiler import ConfigError, ProfilerConfig

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _share_file(relative: str) -> Path:
    """A file of the installed share folder, falling back to the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("demoprof_ros")) / relative
        if path.exists():
            return path
    except Exception:  # not indexed (plain pip install, AMENT_PREFIX_PATH unset): use the checkout
        pass
    return PACKAGE_ROOT / relative


def demo_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Loopback-only discovery and the shared-memory profile, unless the user already chose otherwise."""
    env = dict(os.environ if base is None else base)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(_share_file("config/fastdds_localhost.xml")))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _module(name: str) -> list[str]:
    return [sys.executable, "-m", f"demoprof_ros.ros.{name}"]


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def run_demo(args: argparse.Namespace) -> int:
    try:
        ProfilerConfig(model=args.model, device=args.device)
    except ConfigError as exc:
        print(f"demoprof demo: error: {exc}", file=sys.stderr)
        return 2
    if args.source and not Path(args.source).exists():  # before three processes start and the model loads
        print(f"demoprof demo: error: source not found: {args.source}", file=sys.stderr)
        return 2
    env = demo_environment()
    params = _share_file("config/profiler.yaml")
    print(f"demoprof demo: model={args.model} device={args.device} ROS_DOMAIN_ID={env.get('ROS_DOMAIN_ID', '0')} "
          f"(loopback only); params {params}", flush=True)
    node = subprocess.Popen(_module("profiler_node") + ["--ros-args", "--params-file", str(params),
                                                        "-p", f"model:={args.model}", "-p", f"device:={args.device}",
                                                        "-p", f"min_face_size:={args.min_face_size}"], env=env)
    echo = subprocess.Popen(_module("profile_echo") + ["--count", str(args.count), "--timeout", str(args.timeout)],
                            env=env)
    source_args = [args.source] if args.source else []
    source = subprocess.Popen(_module("image_source") + source_args + ["--rate", str(args.rate),
                                                                       "--wait", str(args.timeout)], env=env)
    code = 1
    try:
        deadline = time.monotonic() + args.timeout + 5
        while time.monotonic() < deadline:
            if echo.poll() is not None:
                code = echo.returncode
                break
            if node.poll() is not None:
                print(f"demoprof demo: the profiler node exited early with code {node.returncode} "
                      "(its log above says why)", file=sys.stderr)
                code = node.returncode or 1
                break
            time.sleep(0.2)
        else:
            print("demoprof demo: no profiles in time", file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    finally:
        for process in (source, echo, node):
            _stop(process)
    if code == 0:
        print("demoprof demo: done. On a robot: ros2 launch demoprof_ros profiler.launch.py, then "
              "ros2 topic echo /user_profile", flush=True)
    return code


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run node + sample camera + profile printer over ROS 2 (make demo)",
                              description=__doc__.splitlines()[0])
    p.add_argument("source", nargs="?", help="image, folder or video to publish (default: the sample photo)")
    p.add_argument("--model", default="auto", help="auto (best present) | farl | clip | tiny | checkpoint path")
    p.add_argument("--device", default="cpu")
    p.add_argument("--count", type=int, default=3, help="profiles to print before stopping")
    p.add_argument("--rate", type=float, default=2.0, help="frames per second published")
    p.add_argument("--min-face-size", type=int, default=24)
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    p.set_defaults(func=run_demo)
