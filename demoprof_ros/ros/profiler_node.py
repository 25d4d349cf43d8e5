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
import sys
import threading
import time
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
from ..core.schedule import TrackedProfiler
from ..core.tracking import FaceTracker
from .hri_output import HriOutput, import_hri_msgs
from .diagnostics import Counters, DiagMark, diagnostic_status, snapshot
from .image_conversion import (
    ImageConversionError, bgr_to_image_fields, compressed_to_bgr, image_to_bgr, wire_text,
)
from .mailbox import FrameMailbox
from .node_logging import KeyedThrottle, RclpyLogHandler, SafeLogger
from .node_signals import StopRequest
from .params import NodeSettings, declare_parameters, read_settings, unknown_parameters

SCHEMA_ID = "demoprof_ros/user_profile"
SCHEMA_VERSION = 1
EXIT_CONFIG = 2  # a parameter the user can fix
EXIT_RUNTIME = 1  # the model or detector could not be loaded
SIGNAL_POLL_S = 0.1  # how soon main() notices a SIGINT / SIGTERM


def build_profile_dict(stamp: tuple[int, int], frame_id: str, image_size: tuple[int, int],
                       profiles: Sequence[FaceProfile], model: str, detector: str, latency_ms: float,
                       processing_ms: float, frames_dropped: int, frames_processed: int,
                       faces_dropped: dict[str, int] | None = None) -> dict[str, Any]:
    """The /user_profile JSON object (docs/profile_schema.json); `faces_dropped` as DetectionDrops.to_dict()."""
    width, height = image_size
    payload = {
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
    if faces_dropped is not None:
        payload["faces_dropped"] = {key: int(value) for key, value in faces_dropped.items()}
    return payload


def cli_hints(text: str) -> str:
    """The core's fix hints name `demoprof ...` commands; where that console script is neither on PATH nor beside
    this Python (a pip venv), as in a colcon workspace (lib/demoprof_ros), they say `ros2 run demoprof_ros ...`."""
    if "`demoprof" not in text or shutil.which("demoprof") or Path(sys.executable).with_name("demoprof").is_file():
        return text
    return re.sub(r"`demoprof(-train|-eval)?\b", lambda m: f"`ros2 run demoprof_ros demoprof{m.group(1) or ''}", text)


class ProfilerNode(LifecycleNode):
    """Lifecycle node around Profiler + FaceTracker (see the module doc for topics)."""

    def __init__(self, node_name: str = "profiler_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.settings: NodeSettings | None = None
        self.profiler: Profiler | None = None
        self.tracker: FaceTracker | None = None
        self.pipeline: TrackedProfiler | None = None
        self.configure_error: str | None = None
        self.configure_exit_code = 0
        self._mailbox = FrameMailbox()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._counters = Counters()
        self._lock = threading.Lock()
        self._throttle = KeyedThrottle()
        self._log = SafeLogger(self.get_logger())
        self._image_subs: dict[str, Any] = {}  # kind ("raw" / "compressed") -> subscription
        self._choose_transport = False
        self._profile_pub: Any = None
        self._debug_pub: Any = None
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        self._diag_last = DiagMark(time.monotonic())
        self._hri: HriOutput | None = None
        # The core logs through `logging`; in the node its records go to the ROS log only (not twice when a
        # library has configured the root logger).
        self._log_handler = RclpyLogHandler(self._log, rewrite=cli_hints)
        core_log = logging.getLogger("demoprof_ros")
        self._core_log_state = (core_log.level, core_log.propagate)
        core_log.addHandler(self._log_handler)
        core_log.setLevel(logging.INFO)
        core_log.propagate = False

    # --- lifecycle -----------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self._log
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
            if not self.context.ok():
                return self._configure_interrupted()
            return self._configure_failed(f"could not load the profiler: {type(exc).__name__}: {exc}", EXIT_RUNTIME)
        if not self.context.ok():  # Ctrl-C / SIGTERM arrived while the model loaded
            return self._configure_interrupted()
        self.settings, self.profiler = settings, profiler
        self.tracker = FaceTracker(settings.tracking)
        self.pipeline = TrackedProfiler(profiler, self.tracker, settings.schedule)
        self._profile_pub = self.create_lifecycle_publisher(String, "user_profile", 10)
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        if settings.debug_image:
            self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", 1)
        self._hri = self._make_hri(settings)
        whose = " (the model's)" if cfg.margin == "auto" else ""
        log.info(f"configured: model {profiler.model_name}, detector {profiler.detector_name}, crop margin "
                 f"{profiler.margin:g}{whose}, attributes "
                 f"{list(cfg.attributes)}, tracking {settings.tracking.fusion} (min_hits "
                 f"{settings.tracking.min_hits}, max_misses {settings.tracking.max_misses}), "
                 + (f"scheduled scoring (refresh every {settings.schedule.refresh_frames} frames, at most "
                    f"{settings.schedule.max_scored_per_frame or 'all'} re-scored per frame)"
                    if settings.schedule.enabled else "every face scored on every frame"))
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, message: str, exit_code: int) -> TransitionCallbackReturn:
        self.configure_error, self.configure_exit_code = message, exit_code
        self._log.error(f"configure failed: {cli_hints(message)}")
        return TransitionCallbackReturn.FAILURE

    def _configure_interrupted(self) -> TransitionCallbackReturn:
        self.configure_error, self.configure_exit_code = "interrupted by a shutdown request", 0
        self._log.info("shutdown requested while configuring: stopping")
        return TransitionCallbackReturn.FAILURE

    def _make_hri(self, settings: NodeSettings) -> HriOutput | None:
        if not settings.publish_hri:
            return None
        types = import_hri_msgs()
        if types is None:
            self._log.info("hri_msgs is not installed: ROS4HRI output (/humans/faces/...) is off")
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
            self._counters = Counters(last_done=time.monotonic())
        self._mailbox = FrameMailbox()
        self.pipeline.reset()
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
        self._diag_last = DiagMark(time.monotonic())
        self._diag_timer = self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics)
        topics = ", ".join(s.topic_name for s in self._image_subs.values())
        self._log.info(f"active: profiling {topics} ({self.settings.reliability}) -> "
                               f"{self._profile_pub.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self._destroy_outputs()
        self.profiler = self.tracker = self.pipeline = self.settings = None
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
            self._log.info(f"receiving {kind} frames on {self._image_subs[kind].topic_name}; "
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
                self._log.error(f"inference thread did not stop within {timeout:.0f} s")

    def _work(self) -> None:
        """The inference thread: nothing a frame does may end it (each failure is logged and counted)."""
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
                self._count("errors")
                self._log_throttled("error", f"error:{type(exc).__name__}",
                                    f"profiling a frame failed: {type(exc).__name__}: {wire_text(exc, 300)}")
            if period:
                self._stop.wait(max(0.0, started + period - time.monotonic()))

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self._counters, counter, getattr(self._counters, counter) + 1)
            self._counters.last_done = time.monotonic()

    def _process(self, msg: Any, kind: str, received: float) -> None:
        started = time.monotonic()
        limit = self.settings.max_image_pixels
        topic = "image/compressed" if kind == "compressed" else "image"
        try:
            image = compressed_to_bgr(msg, limit) if kind == "compressed" else image_to_bgr(msg, limit)
            profiles = self.pipeline(image)
        except (ImageConversionError, ImageError) as exc:
            self._count("bad_frames")
            fault = getattr(exc, "kind", "image")
            self._log_throttled("warning", f"bad:{topic}:{fault}", f"skipped a bad frame on '{topic}' (frame_id "
                                f"'{wire_text(msg.header.frame_id)}'): {wire_text(exc, 300)}")
            return
        done = time.monotonic()
        with self._lock:
            processed = self._counters.processed + 1
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        latency_ms = (done - received) * 1000.0
        payload = build_profile_dict(stamp, msg.header.frame_id, (image.shape[1], image.shape[0]), profiles,
                                     self.profiler.model_name, self.profiler.detector_name, latency_ms,
                                     (done - started) * 1000.0, self._mailbox.dropped, processed,
                                     self.profiler.last_drops.to_dict())
        try:
            text = json.dumps(payload, allow_nan=False)
        except ValueError:  # NaN / inf from the model: not JSON, and its labels are not to be trusted
            self._count("errors")
            self._log_throttled("error", "non_finite", f"the model gave NaN or infinite values on frame_id "
                                f"'{wire_text(msg.header.frame_id)}'; profile not published")
            return
        with self._lock:
            self._counters.processed += 1
            self._counters.latency_sum_ms += latency_ms
            self._counters.latency_max_ms = max(self._counters.latency_max_ms, latency_ms)
            self._counters.last_done = done
        self._profile_pub.publish(String(data=text))
        if self._debug_pub is not None:
            self._debug_pub.publish(Image(header=msg.header, **bgr_to_image_fields(draw_profiles(image, profiles))))
        if self._hri is not None:
            self._hri.publish(msg.header, profiles, self.tracker.track_ids, (image.shape[1], image.shape[0]))

    def _log_throttled(self, level: str, kind: str, message: str) -> None:
        """Log `message` unless `kind` (a fixed category, never wire text) was logged within the period."""
        show, suppressed = self._throttle.check(kind)
        if show:
            more = f" ({suppressed} more like it since the last report)" if suppressed else ""
            self._log.log(level, message + more)

    # --- diagnostics ---------------------------------------------------------------------------------------

    def diagnostics_values(self) -> dict[str, str]:
        """Counters since activation, plus rate, mean latency and what changed since the previous call."""
        worker = self._worker
        with self._lock:
            values, self._diag_last = snapshot(self._counters, self._diag_last, self._mailbox.dropped,
                                               worker is not None and worker.is_alive())
        if self.profiler is not None:
            values.update(model=self.profiler.model_name, detector=self.profiler.detector_name)
        pipeline = self.pipeline
        if pipeline is not None:  # crops the model scored vs faces detected since activation (scheduling)
            values.update(faces_scored=str(pipeline.faces_scored), faces_tracked=str(pipeline.faces_tracked))
        return values

    def _publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: profiler", hardware_id="demoprof_ros")
        stall_s = max(10.0, 5 * self.settings.diagnostics_period)
        status.level, status.message = diagnostic_status(values, stall_s=stall_s)
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self._diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))


USAGE = """usage: profiler_node [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] [-r __ns:=/NS] ...]

Profiles the faces in camera frames (image, image/compressed) and publishes user_profile (JSON).
Exit status: 0 after Ctrl-C / SIGTERM, 2 for bad parameters or arguments, 1 if the model or detector
could not be loaded. Parameters (see config/profiler.yaml):
"""


def _usage() -> str:
    from .params import parameter_table

    rows = [f"  {name} (default {default!r}): {doc}" for name, (default, doc) in parameter_table().items()]
    return USAGE + "\n".join(rows)


def main(args: list[str] | None = None) -> int:
    """`profiler_node [--ros-args ...]`: exit 0 on Ctrl-C / SIGTERM, 2 on bad parameters, 1 if loading failed.

    Signals are handled here, not by rclpy: rclpy's handler shuts the context down at once, while the worker
    may still be publishing the frame in progress ("publisher's context is invalid"), or while configure is
    loading the model (a burst of errors from every publisher it creates); a second Ctrl-C during teardown
    (the terminal and `ros2 launch` each send one) then ends the process with -2 and leaves Fast DDS files
    in /dev/shm. Here every SIGINT / SIGTERM only sets `stop`: configure finishes, the spin loop ends, and
    teardown runs in order (join the worker, destroy the node, shut rclpy down).
    """
    argv = sys.argv[1:] if args is None else list(args)
    own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in own or "--help" in own:
        print(_usage())
        return 0
    stop = StopRequest.install()
    try:
        ros = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # rclpy's RCLError: an unparsable params file, bad --ros-args syntax
        print(f"profiler_node: cannot start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n"
              f"(run `profiler_node --help` for the arguments)", file=sys.stderr)
        return EXIT_CONFIG
    code = 0
    try:
        with ros:
            node = ProfilerNode()
            executor = SingleThreadedExecutor()
            try:
                executor.add_node(node)
                code = _run(node, executor, stop)
            finally:
                stop.ignore_from_now_on()
                node.stop_worker()
                executor.remove_node(node)
                node.destroy_node()
    except ExternalShutdownException:
        pass
    return code


def _run(node: ProfilerNode, executor: SingleThreadedExecutor, stop: "StopRequest") -> int:
    """Autostart (when asked) and spin until a stop is requested; the exit code."""
    from .params import check_autostart

    try:
        autostart = check_autostart(node.get_parameter("autostart").value)
    except ConfigError as exc:
        node._log.error(f"invalid parameters: {exc}")
        return EXIT_CONFIG
    if autostart and not stop.is_set():
        result = node.trigger_configure()
        if stop.is_set():  # Ctrl-C / SIGTERM while configuring: a requested stop, not a failure
            node._log.info(f"stopping: {stop.name} while configuring")
            return 0
        if result != TransitionCallbackReturn.SUCCESS:
            return node.configure_exit_code or EXIT_RUNTIME  # the reason is in the log
        node.trigger_activate()
    while not stop.is_set() and rclpy.ok():
        executor.spin_once(timeout_sec=SIGNAL_POLL_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
