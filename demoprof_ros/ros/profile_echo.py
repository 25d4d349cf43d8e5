"""Print the profiler's /user_profile messages readably (or as raw JSON with --json).

`profile_echo --count 3 --timeout 30` exits 0 after three profiles, or 1 with a message when they do not come
in time: the shape a demo script or a smoke test needs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.utilities import remove_ros_args
from std_msgs.msg import String


def format_attribute(name: str, result: dict[str, Any]) -> str:
    if result.get("undetermined"):
        return f"{name} ? ({result.get('top')} {result.get('confidence', 0):.2f})"
    return f"{name} {result.get('label')} {result.get('confidence', 0):.2f}"


def format_profile(payload: dict[str, Any]) -> str:
    """Readable lines for one /user_profile JSON object: a frame line, then one line per face."""
    header = payload.get("header", {})
    stamp = header.get("stamp", {})
    faces = payload.get("faces", [])
    lines = [f"[{stamp.get('sec', 0)}.{stamp.get('nanosec', 0):09d}] {header.get('frame_id', '')}: "
             f"{len(faces)} face(s)  model {payload.get('model')}  detector {payload.get('detector')}  "
             f"latency {payload.get('latency_ms', 0):.0f} ms  dropped {payload.get('frames_dropped', 0)}"]
    for face in faces:
        box = face.get("box", {})
        attributes = " | ".join(format_attribute(k, v) for k, v in face.get("attributes", {}).items())
        joint = face.get("joint") or []
        best = f" | best: {joint[0]['text']} {joint[0]['probability']:.2f}" if joint else ""
        lines.append(f"  face {face.get('id')} at ({box.get('x', 0):.0f},{box.get('y', 0):.0f} "
                     f"{box.get('width', 0):.0f}x{box.get('height', 0):.0f}) fused {face.get('frames_fused', 1)}: "
                     f"{attributes}{best}")
    return "\n".join(lines)


class ProfileEcho(Node):
    def __init__(self, topic: str, as_json: bool) -> None:
        super().__init__("profile_echo")
        self.as_json = as_json
        self.received = 0
        self.subscription = self.create_subscription(String, topic, self._on_profile, 10)

    def _on_profile(self, msg: String) -> None:
        self.received += 1
        if self.as_json:
            print(msg.data, flush=True)
            return
        try:
            payload = json.loads(msg.data)
        except json.JSONDecodeError as exc:
            print(f"(not JSON: {exc}) {msg.data[:200]}", flush=True)
            return
        print(format_profile(payload), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog="profile_echo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", default="user_profile", help="topic to read (default user_profile)")
    parser.add_argument("--json", action="store_true", help="print each message's JSON as received")
    parser.add_argument("--count", type=int, default=0, help="exit 0 after this many profiles (default: run on)")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="exit 1 if the profiles have not arrived within this many seconds (default: wait)")
    args = parser.parse_args(remove_ros_args(argv)[1:])
    if args.count < 0 or args.timeout < 0:
        parser.error("--count and --timeout must be >= 0")
    code = 0
    try:
        with rclpy.init(args=argv):
            node = ProfileEcho(args.topic, args.json)
            try:
                deadline = time.monotonic() + args.timeout if args.timeout else None
                while rclpy.ok() and not (args.count and node.received >= args.count):
                    if deadline is not None and time.monotonic() > deadline:
                        if args.count == 0 and node.received:
                            break  # listened for the time asked and heard something
                        wanted = f"{args.count} profile(s)" if args.count else "a profile"
                        print(f"profile_echo: got {node.received}, wanted {wanted} on "
                              f"{node.subscription.topic_name} within {args.timeout:g} s", file=sys.stderr)
                        code = 1
                        break
                    rclpy.spin_once(node, timeout_sec=0.1)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
