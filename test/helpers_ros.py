"""Helpers for the real-DDS node tests: child processes, an in-process listener, a small JSON-schema check.

Every wait has a time-out; child processes run in their own session so that a stuck one (and anything it
started) can be killed as a group, and the test can check that none is left behind.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def child_env() -> dict[str, str]:
    """The test session's ROS settings (random domain, loopback, Fast DDS profile from conftest) for children."""
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0", RCUTILS_COLORIZED_OUTPUT="0",
               HF_HUB_OFFLINE="1")
    return env


class Child:
    """A `python -m module args...` child with its stdout+stderr in a log file."""

    def __init__(self, module: str, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([PYTHON, "-m", module, *args], cwd=ROOT, env=child_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.1)
        return False

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def group_alive(self) -> bool:
        """Whether any process of the child's session (it, or something it started) still exists."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def kill(self) -> None:
        """Teardown: Ctrl-C first (a killed participant leaves its shared memory behind), then kill the session."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.group_alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


# --- shared memory --------------------------------------------------------------------------------------


def fastdds_shm_files() -> set[str]:
    """Fast DDS shared-memory files (segments, port queues, their locks) in /dev/shm."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return set()
    return {p.name for p in shm.iterdir() if "fastdds" in p.name or "fastrtps" in p.name}


def shm_in_use() -> set[str]:
    """/dev/shm names some live process has mapped or open (so they are not leftovers)."""
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for line in (proc / "maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    used.add(line.rsplit("/dev/shm/", 1)[1].split()[0])
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("/dev/shm/"):
                    used.add(target[len("/dev/shm/"):])
        except OSError:
            continue
    return used


def shm_leftovers(before: set[str]) -> set[str]:
    """Fast DDS files that appeared since `before` and that no live process uses."""
    new = fastdds_shm_files() - before
    if not new:
        return set()
    used = shm_in_use()
    # A port's lock and queue files belong together: one in use keeps the others.
    used_ports = {n.replace("sem.", "").replace("_mutex", "").replace("_el", "") for n in used}
    return {n for n in new if n not in used
            and n.replace("sem.", "").replace("_mutex", "").replace("_el", "") not in used_ports}


# --- in-process listener --------------------------------------------------------------------------------


class Listener:
    """A test node on its own rclpy context, spun in a thread; collects profiles, diagnostics and image stamps."""

    def __init__(self, name: str = "test_listener") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.RLock()  # re-entrant: wait_for predicates may call the locked getters
        self.profiles: list[dict[str, Any]] = []
        self.raw_profiles: list[str] = []
        self.diagnostics: list[Any] = []
        self.image_stamps: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.debug_images: list[Any] = []
        self.Image, self.CompressedImage = Image, CompressedImage
        best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(String, "/user_profile", self._on_profile, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.node.create_subscription(Image, "/image", lambda m: self._on_image(m, "raw"), best_effort)
        self.node.create_subscription(CompressedImage, "/image/compressed", lambda m: self._on_image(m, "jpeg"),
                                      best_effort)
        self.node.create_subscription(Image, "/profiler_node/debug_image", self._on_debug, 10)
        self.image_pub = self.node.create_publisher(Image, "/image", QoSProfile(depth=50))
        self.collected: dict[str, list[Any]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="listener", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_profile(self, msg: Any) -> None:
        with self._lock:
            self.raw_profiles.append(msg.data)
            self.profiles.append(json.loads(msg.data))

    def _on_diag(self, msg: Any) -> None:
        with self._lock:
            self.diagnostics.append(msg)

    def _on_debug(self, msg: Any) -> None:
        with self._lock:
            self.debug_images.append(msg)

    def _on_image(self, msg: Any, kind: str) -> None:
        with self._lock:
            self.image_stamps[msg.header.frame_id].append((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def collect(self, msg_type: Any, topic: str, qos: Any = 10) -> None:
        """Keep every message of `topic` in self.collected[topic] (read them under wait_for or messages())."""
        def keep(msg: Any) -> None:
            with self._lock:
                self.collected[topic].append(msg)
        self.node.create_subscription(msg_type, topic, keep, qos)

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.collected[topic])

    def wait_for(self, predicate: Callable[[], Any], timeout: float, poll: float = 0.05) -> Any:
        """Poll `predicate` (called under the lock) until it returns something truthy or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                value = predicate()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(poll)

    def profiles_for(self, frame_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.profiles if p["header"]["frame_id"] == frame_id]

    def diagnostic_values(self, node_name: str) -> dict[str, str] | None:
        """Key/values of the newest status whose name starts with the node's fully qualified name."""
        with self._lock:
            for array in reversed(self.diagnostics):
                for status in array.status:
                    if status.name.startswith(node_name + ":"):
                        return {kv.key: kv.value for kv in status.values} | {"_level": str(int.from_bytes(
                            status.level, "little") if isinstance(status.level, bytes) else status.level),
                            "_message": status.message}
        return None

    def diagnostics_count(self) -> int:
        with self._lock:
            return len(self.diagnostics)

    def publish_image(self, fields: dict[str, Any], stamp: tuple[int, int], frame_id: str) -> None:
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        header = Header(stamp=Time(sec=stamp[0], nanosec=stamp[1]), frame_id=frame_id)
        self.image_pub.publish(self.Image(header=header, **fields))

    def get_parameters(self, remote: str, names: list[str], timeout: float = 10.0) -> dict[str, Any]:
        from rclpy.parameter import parameter_value_to_python
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(self.node, remote)
        if not client.wait_for_services(timeout_sec=timeout):
            raise TimeoutError(f"parameter services of {remote} not found within {timeout} s")
        future = client.get_parameters(names)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"get_parameters on {remote} timed out")
            time.sleep(0.05)
        return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(5)
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


# --- JSON schema (the subset docs/profile_schema.json uses; jsonschema is not installed) -------------------


def schema_errors(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None,
                  path: str = "$") -> list[str]:
    """Violations of `schema` by `instance`: type, const, enum, required, properties, additionalProperties,
    items, minimum, maximum and local $ref. Empty when valid."""
    root = root or schema
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), f"only local $ref supported, got {ref}"
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return schema_errors(instance, target, root, path)
    errors: list[str] = []
    kind = schema.get("type")
    checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
              "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "null": lambda v: v is None}
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(checks[k](instance) for k in kinds):
            return [f"{path}: expected {kind}, got {type(instance).__name__} {instance!r:.60}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: {instance} < minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: {instance} > maximum {schema['maximum']}")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing required {key!r}")
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                errors += schema_errors(value, props[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {key!r}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors += schema_errors(item, schema["items"], root, f"{path}[{i}]")
    return errors


def load_schema() -> dict[str, Any]:
    return json.loads((ROOT / "docs" / "profile_schema.json").read_text())
