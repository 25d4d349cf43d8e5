"""The profiler node: camera frames in, one JSON profile of every tracked face per processed frame out.

A lifecycle node (configure loads the model and detector, activate subscribes), with `autostart` so that it
also runs alone. Inference runs in a worker thread fed by a one-slot mailbox: the executor thread only
drops the newest message in, so a slow model never builds a queue; replaced frames are counted as dropped.
A bad frame is logged (throttled per kind of fault) and skipped; nothing a camera sends stops the node.

Topics (relative names, so a namespace separates several cameras):
  in   image (sensor_msgs/Image), image/compressed (sensor_msgs/CompressedImage)
  out  user_profile (std_msgs/String, JSON per docs/profile_schema.json), ~/debug_image (optional),
       /diagnostics, and ROS4HRI /humans/faces/... where hri_msgs is installed.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from ..core.annotate import draw_profiles
from ..core.images import ImageError
from ..core.profiler import ConfigError, Profiler
from ..core.results import FaceProfile
from .hri_output import HriOutput, import_hri_msgs
from .image_conversion import ImageConversionError, bgr_to_image_fields, compressed_to_bgr, image_to_bgr
from ..core.tracking import FaceTracker
from .params import NodeSettings, declare_parameters, read_settings, unknown_parameters

SCHEMA_ID = "demoprof_ros/user_profile"
SCHEMA_VERSION = 1
EXIT_CONFIG = 2  # a parameter the user can fix
EXIT_RUNTIME = 1  # the model or detector could not be loaded
SIGNAL_POLL_S = 0.1  # how soon main() notices a SIGINT / SIGTERM


class FrameMailbox:
    """One slot between the subscriptions and the worker: a new frame replaces an unprocessed one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Any:
        """The newest item, or None after `timeout` seconds or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False


class KeyedThrottle:
    """Log each kind of fault at most once per period (rclpy throttles per call site, hiding other kinds)."""

    def __init__(self, period_s: float = 5.0) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def check(self, message: str) -> tuple[bool, int]:
        """(log it now?, how many of this kind were suppressed since it was last logged)."""
        key = re.sub(r"\d+", "N", message)
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period_s:
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        return False, 0


@dataclass
class _Counters:
    received: int = 0
    processed: int = 0
    bad_frames: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    last_received: float = 0.0  # monotonic


def build_profile_dict(stamp: tuple[int, int], frame_id: str, image_size: tuple[int, int],
                       profiles: Sequence[FaceProfile], model: str, detector: str, latency_ms: float,
                       processing_ms: float, frames_dropped: int, frames_processed: int) -> dict[str, Any]:
    """The /user_profile JSON object (docs/profile_schema.json)."""
    width, height = image_size
    return {
        "schema": SCHEMA_ID,
        "version": SCHEMA_VERSION,
        "header": {"stamp": {"sec": int(stamp[0]), "nanosec": int(stamp[1])}, "frame_id": frame_id},
        "image": {"width": int(width), "height": int(height)},
        "model": model,
        "detector": detector,
        "latency_ms": round(float(latency_ms), 2),
        "processing_ms": round(float(processing_ms), 2),
        "frames_dropped": int(frames_dropped),
        "frames_processed": int(frames_processed),
        "faces": [p.to_dict() for p in profiles],
    }


def cli_hints(text: str) -> str:
    """The core's fix hints name `demoprof ...` commands; where that console script is neither on PATH nor beside
    this Python (a pip venv), as in a colcon workspace (lib/demoprof_ros), they say `ros2 run demoprof_ros ...`."""
    if "`demoprof" not in text or shutil.which("demoprof") or Path(sys.executable).with_name("demoprof").is_file():
        return text
    return re.sub(r"`demoprof(-train|-eval)?\b", lambda m: f"`ros2 run demoprof_ros demoprof{m.group(1) or ''}", text)


class _RclpyLogHandler(logging.Handler):
    """Sends the core's `logging` records (model and detector choices, warnings) to the node's ROS logger."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = cli_hints(record.getMessage())
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # a log line must never take the node down
            self.handleError(record)


class ProfilerNode(LifecycleNode):
    """Lifecycle node around Profiler + FaceTracker (see the module doc for topics)."""

    def __init__(self, node_name: str = "profiler_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.settings: NodeSettings | None = None
        self.profiler: Profiler | None = None
        self.tracker: FaceTracker | None = None
        self.configure_error: str | None = None
        self.configure_exit_code = 0
        self._mailbox = FrameMailbox()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._throttle = KeyedThrottle()
        self._image_subs: dict[str, Any] = {}  # kind ("raw" / "compressed") -> subscription
        self._choose_transport = False
        self._profile_pub: Any = None
        self._debug_pub: Any = None
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        self._diag_last = (time.monotonic(), 0, 0.0, 0)  # time, processed, latency sum, errors at last report
        self._hri: HriOutput | None = None
        # The core logs through `logging`; in the node its records go to the ROS log only (not twice when a
        # library has configured the root logger).
        self._log_handler = _RclpyLogHandler(self.get_logger())
        core_log = logging.getLogger("demoprof_ros")
        self._core_log_state = (core_log.level, core_log.propagate)
        core_log.addHandler(self._log_handler)
        core_log.setLevel(logging.INFO)
        core_log.propagate = False

    # --- lifecycle -----------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        self.configure_error, self.configure_exit_code = None, 0
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        for name in unknown_parameters(overrides):
            log.warning(f"ignoring unknown parameter '{name}' (a typo? see config/profiler.yaml for the names)")
        try:
            settings = read_settings(self)
        except ConfigError as exc:
            return self._configure_failed(f"invalid parameters: {exc}", EXIT_CONFIG)
        cfg = settings.profiler
        log.info(f"loading model '{cfg.model}' on {cfg.device} ({cfg.dtype}), detectors {list(cfg.detectors)}")
        try:
            profiler = Profiler.from_config(cfg, logger=logging.getLogger("demoprof_ros.node"))
            profiler.warmup()
        except ConfigError as exc:
            return self._configure_failed(f"invalid parameters: {exc}", EXIT_CONFIG)
        except Exception as exc:  # model / detector files missing or unreadable: say what, stay unconfigured
            return self._configure_failed(f"could not load the profiler: {type(exc).__name__}: {exc}", EXIT_RUNTIME)
        self.settings, self.profiler = settings, profiler
        self.tracker = FaceTracker(settings.tracking)
        self._profile_pub = self.create_lifecycle_publisher(String, "user_profile", 10)
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        if settings.debug_image:
            self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", 1)
        self._hri = self._make_hri(settings)
        log.info(f"configured: model {profiler.model_name}, detector {profiler.detector_name}, attributes "
                 f"{list(cfg.attributes)}, tracking {settings.tracking.fusion} (min_hits "
                 f"{settings.tracking.min_hits}, max_misses {settings.tracking.max_misses})")
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, message: str, exit_code: int) -> TransitionCallbackReturn:
        self.configure_error, self.configure_exit_code = message, exit_code
        self.get_logger().error(f"configure failed: {cli_hints(message)}")
        return TransitionCallbackReturn.FAILURE

    def _make_hri(self, settings: NodeSettings) -> HriOutput | None:
        if not settings.publish_hri:
            return None
        types = import_hri_msgs()
        if types is None:
            self.get_logger().info("hri_msgs is not installed: ROS4HRI output (/humans/faces/...) is off")
            return None
        return HriOutput(self, types)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.settings is not None
        reliability = (ReliabilityPolicy.RELIABLE if self.settings.reliability == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability,
                         durability=DurabilityPolicy.VOLATILE)
        # Counts and tracks start afresh with each activation (the schema's "since activation").
        with self._lock:
            self._counters = _Counters()
        self._mailbox = FrameMailbox()
        self.tracker.reset()
        self._start_worker()
        transport = self.settings.transport
        self._image_subs = {}
        if transport in ("auto", "both", "raw"):
            self._image_subs["raw"] = self.create_subscription(
                Image, "image", lambda m: self._enqueue(m, "raw"), qos)
        if transport in ("auto", "both", "compressed"):
            self._image_subs["compressed"] = self.create_subscription(
                CompressedImage, "image/compressed", lambda m: self._enqueue(m, "compressed"), qos)
        self._choose_transport = transport == "auto"
        self._diag_last = (time.monotonic(), 0, 0.0, 0)
        self._diag_timer = self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics)
        topics = ", ".join(s.topic_name for s in self._image_subs.values())
        self.get_logger().info(f"active: profiling {topics} ({self.settings.reliability}) -> "
                               f"{self._profile_pub.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self._destroy_outputs()
        self.profiler = self.tracker = self.settings = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self._destroy_outputs()
        return TransitionCallbackReturn.SUCCESS

    def _stop_active(self) -> None:
        for sub in self._image_subs.values():
            self.destroy_subscription(sub)
        self._image_subs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        self.stop_worker()

    def _destroy_outputs(self) -> None:
        for pub in (self._profile_pub, self._diag_pub, self._debug_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._profile_pub = self._diag_pub = self._debug_pub = None
        if self._hri is not None:
            self._hri.destroy()
            self._hri = None

    def destroy_node(self) -> None:
        self.stop_worker()
        core_log = logging.getLogger("demoprof_ros")
        core_log.removeHandler(self._log_handler)
        core_log.level, core_log.propagate = self._core_log_state
        super().destroy_node()

    # --- frames --------------------------------------------------------------------------------------------

    def _enqueue(self, msg: Any, kind: str) -> None:
        """Executor thread: hand the frame over and return at once."""
        if self._choose_transport:
            self._keep_only(kind)
        elif kind not in self._image_subs:
            return  # a message already taken before its subscription was dropped
        now = time.monotonic()
        with self._lock:
            self._counters.received += 1
            self._counters.last_received = now
        self._mailbox.put((msg, kind, now))

    def _keep_only(self, kind: str) -> None:
        """transport 'auto': the first transport to deliver wins, so a camera offering both (image_transport)
        is not profiled twice per frame nor made to compress for nothing."""
        self._choose_transport = False
        for other in [k for k in self._image_subs if k != kind]:
            sub = self._image_subs.pop(other)
            dropped_topic = sub.topic_name
            self.destroy_subscription(sub)
            self.get_logger().info(f"receiving {kind} frames on {self._image_subs[kind].topic_name}; "
                                   f"unsubscribed from {dropped_topic} (transport 'auto')")

    def _start_worker(self) -> None:
        self.stop_worker()
        self._stop.clear()
        self._mailbox.reopen()
        self._worker = threading.Thread(target=self._work, name="profiler_worker", daemon=True)
        self._worker.start()

    def stop_worker(self, timeout: float = 30.0) -> None:
        """Stop and join the inference thread (waits for the frame in progress)."""
        self._stop.set()
        self._mailbox.close()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                self.get_logger().error(f"inference thread did not stop within {timeout:.0f} s")

    def _work(self) -> None:
        assert self.settings is not None
        period = 1.0 / self.settings.max_rate if self.settings.max_rate > 0 else 0.0
        while not self._stop.is_set():
            item = self._mailbox.take(timeout=0.5)
            if item is None:
                continue
            started = time.monotonic()
            try:
                self._process(*item)
            except Exception as exc:  # a bug or a model fault on one frame must not end the thread
                with self._lock:
                    self._counters.errors += 1
                self._log_throttled("error", f"profiling a frame failed: {type(exc).__name__}: {exc}")
            if period:
                self._stop.wait(max(0.0, started + period - time.monotonic()))

    def _process(self, msg: Any, kind: str, received: float) -> None:
        started = time.monotonic()
        try:
            image = compressed_to_bgr(msg) if kind == "compressed" else image_to_bgr(msg)
            faces = self.profiler(image)
        except (ImageConversionError, ImageError) as exc:
            with self._lock:
                self._counters.bad_frames += 1
            topic = "image/compressed" if kind == "compressed" else "image"
            self._log_throttled("warning", f"skipped a bad frame on '{topic}' (frame_id "
                                           f"'{msg.header.frame_id}'): {exc}")
            return
        profiles = self.tracker.update(faces)
        done = time.monotonic()
        with self._lock:
            self._counters.processed += 1
            latency_ms = (done - received) * 1000.0
            self._counters.latency_sum_ms += latency_ms
            self._counters.latency_max_ms = max(self._counters.latency_max_ms, latency_ms)
            processed = self._counters.processed
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        payload = build_profile_dict(stamp, msg.header.frame_id, (image.shape[1], image.shape[0]), profiles,
                                     self.profiler.model_name, self.profiler.detector_name, latency_ms,
                                     (done - started) * 1000.0, self._mailbox.dropped, processed)
        self._profile_pub.publish(String(data=json.dumps(payload)))
        if self._debug_pub is not None:
            self._debug_pub.publish(Image(header=msg.header, **bgr_to_image_fields(draw_profiles(image, profiles))))
        if self._hri is not None:
            self._hri.publish(msg.header, profiles, self.tracker.track_ids, (image.shape[1], image.shape[0]))

    def _log_throttled(self, level: str, message: str) -> None:
        show, suppressed = self._throttle.check(message)
        if show:
            more = f" ({suppressed} more like it since the last report)" if suppressed else ""
            getattr(self.get_logger(), level)(message + more)

    # --- diagnostics ---------------------------------------------------------------------------------------

    def diagnostics_values(self) -> dict[str, str]:
        """Counters since activation, plus rate, mean latency and new errors since the previous call."""
        now = time.monotonic()
        with self._lock:
            c = self._counters
            last_t, last_n, last_sum, last_errors = self._diag_last
            window_n, window_sum = c.processed - last_n, c.latency_sum_ms - last_sum
            self._diag_last = (now, c.processed, c.latency_sum_ms, c.errors)
            values = {
                "frames_received": c.received, "frames_processed": c.processed,
                "frames_dropped": self._mailbox.dropped, "bad_frames": c.bad_frames, "errors": c.errors,
                "rate_hz": round(window_n / max(now - last_t, 1e-6), 2),
                "latency_ms": round(window_sum / window_n, 1) if window_n else 0.0,
                "latency_max_ms": round(c.latency_max_ms, 1),
                "seconds_since_last_frame": round(now - c.last_received, 1) if c.received else -1,
                "new_errors": c.errors - last_errors,
            }
        if self.profiler is not None:
            values.update(model=self.profiler.model_name, detector=self.profiler.detector_name)
        return {k: str(v) for k, v in values.items()}

    def _publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: profiler", hardware_id="demoprof_ros")
        since = float(values["seconds_since_last_frame"])
        if int(values["new_errors"]):
            status.level = DiagnosticStatus.ERROR
            status.message = f"{values['new_errors']} frame(s) failed; see the log"
        elif since < 0 or since > 5.0:
            status.level, status.message = DiagnosticStatus.WARN, "no images received recently"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"profiling at {values['rate_hz']} Hz"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self._diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))


def main(args: list[str] | None = None) -> int:
    """`profiler_node [--ros-args ...]`: exit 0 on Ctrl-C / SIGTERM, 2 on bad parameters, 1 if loading failed.

    Signals are handled here, not by rclpy: rclpy's handler shuts the context down at once, while the worker
    may still be publishing the frame in progress ("publisher's context is invalid"), and a second Ctrl-C
    during teardown (the terminal and `ros2 launch` each send one) then ends the process with -2. Here the
    first SIGINT / SIGTERM only ends the spin loop; teardown runs in order (join the worker, destroy the node,
    shut rclpy down) and later signals are ignored.
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
            node = ProfilerNode()
            executor = SingleThreadedExecutor()
            try:
                executor.add_node(node)
                if node.get_parameter("autostart").value is True and not stop.is_set():
                    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                        return node.configure_exit_code or EXIT_RUNTIME  # the reason is in the log
                    if not stop.is_set():
                        node.trigger_activate()
                while not stop.is_set() and rclpy.ok():
                    executor.spin_once(timeout_sec=SIGNAL_POLL_S)
            finally:
                node.stop_worker()
                executor.remove_node(node)
                node.destroy_node()
    except ExternalShutdownException:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
