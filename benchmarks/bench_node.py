#!/usr/bin/env python3
"""End-to-end latency and sustained rate of the ROS node: image published -> /user_profile received, real DDS.

The node runs as its own process (the `profiler_node` console script, Fast DDS over loopback shared memory,
random ROS_DOMAIN_ID, as in test/conftest.py) on a random-weight checkpoint this script writes; this process
publishes synthetic frames (real face crops from the bundled group photos tiled onto 640x480 / 1280x720) as
sensor_msgs/Image and as JPEG CompressedImage, and matches each /user_profile to its frame by header stamp.

Two measurements per frame size and transport:
  latency    one frame at a time (the next is sent when the previous profile came back): p50 / p95 of
             publish -> profile received, split into the node's own time (its JSON `latency_ms`: callback
             -> published) and the rest (serialisation, DDS, message conversion, the way back);
  sustained  frames at --rate Hz for --duration s: profiles per second and their latency. The node keeps
             one frame in its mailbox and drops older ones, so this is its throughput, not a queue.

    python benchmarks/bench_node.py --arch tiny-224                      # quick, CPU
    python benchmarks/bench_node.py --arch ViT-B-16-quickgelu --device cuda --dtype fp16   # the H100 target
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RANDOM_WEIGHTS_NOTE, ROOT, command_line, CpuHogs, machine_info, machine_line,  # noqa: E402
                     markdown_table, random_checkpoint, summary, write_json)

SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}


def ros_env(domain: int | None = None) -> dict[str, str]:
    """Loopback-only Fast DDS on a random domain (as test/conftest.py), set here and passed to the node."""
    os.environ["ROS_DOMAIN_ID"] = str(domain if domain is not None else random.SystemRandom().randint(1, 101))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(ROOT / "config" / "fastdds_localhost.xml")
    os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    os.environ["HF_HUB_OFFLINE"] = "1"
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0", RCUTILS_COLORIZED_OUTPUT="0")
    return env


def node_command() -> list[str]:
    """The installed console script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "profiler_node"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "demoprof_ros.ros.profiler_node"]


class NodeProcess:
    """profiler_node as a child process in its own session, log in a file, RSS read from /proc."""

    def __init__(self, params: dict[str, Any], log_path: Path, env: dict[str, str]) -> None:
        args = ["--ros-args"]
        for name, value in params.items():
            args += ["-p", f"{name}:={_param(value)}"]
        self.command = node_command() + args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def memory_kb(self) -> dict[str, int]:
        """VmRSS (now), VmHWM (peak so far), RssAnon (heap, tensors) and RssFile (mapped libraries), in kB."""
        out = {}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0])
        except OSError:
            pass
        return out

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (the node exits 0 on Ctrl-C), then SIGKILL of its session if it hangs."""
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


class Client:
    """Publishes frames on /image and /image/compressed, collects /user_profile by header stamp."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        rclpy.init()
        self.node = rclpy.create_node(f"bench_client_{os.getpid()}")
        self.Image, self.CompressedImage = Image, CompressedImage
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.pubs = {"raw": self.node.create_publisher(Image, "/image", qos),
                     "compressed": self.node.create_publisher(CompressedImage, "/image/compressed", qos)}
        self.sub = self.node.create_subscription(String, "/user_profile", self._on_profile, 100)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.received: dict[tuple[int, int], tuple[float, dict[str, Any]]] = {}
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._counter = 0

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_profile(self, msg: Any) -> None:
        now = time.perf_counter()
        payload = json.loads(msg.data)
        stamp = payload["header"]["stamp"]
        with self._cond:
            self.received[(int(stamp["sec"]), int(stamp["nanosec"]))] = (now, payload)
            self._cond.notify_all()

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()) and self.sub.get_publisher_count():
                return True
            time.sleep(0.1)
        return False

    def message(self, frame, kind: str, jpeg_quality: int = 90) -> Any:
        from demoprof_ros.ros.image_conversion import bgr_to_compressed, bgr_to_image_fields
        if kind == "raw":
            return self.Image(**bgr_to_image_fields(frame))
        return self.CompressedImage(**bgr_to_compressed(frame, "jpeg", jpeg_quality))

    def send(self, msg: Any, kind: str) -> tuple[tuple[int, int], float]:
        """Publish with a fresh unique stamp; (stamp, perf_counter at publish)."""
        self._counter += 1
        sec, nanosec = divmod(self._counter, 1000)  # a sequence number in the stamp: unique, easy to match
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec * 1000
        msg.header.frame_id = "bench_camera"
        sent = time.perf_counter()
        self.pubs[kind].publish(msg)
        return (sec, nanosec * 1000), sent

    def wait_for(self, stamp: tuple[int, int], timeout: float) -> tuple[float, dict[str, Any]] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while stamp not in self.received:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.received[stamp]

    def close(self) -> None:
        import rclpy
        self._stop.set()
        self._thread.join(5)
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        rclpy.shutdown()


def node_params(args, checkpoint: Path) -> dict[str, Any]:
    return {"model": str(checkpoint), "device": args.device, "dtype": args.dtype, "detectors": args.detectors,
            "transport": "both", "publish_hri": False, "debug_image": False, "max_faces": 8,
            "tracking.min_hits": 1, "diagnostics_period": 1.0}


def start_node(args, checkpoint: Path, env: dict[str, str], log_dir: Path, name: str = "node"):
    """(node process, connected client, seconds from spawn to active)."""
    started = time.monotonic()
    node = NodeProcess(node_params(args, checkpoint), log_dir / f"{name}.log", env)
    if not node.wait_log("active:", args.start_timeout):
        log = node.log()
        node.stop()
        raise SystemExit(f"the node did not become active within {args.start_timeout} s; its log:\n{log[-3000:]}")
    active_s = time.monotonic() - started
    client = Client()
    if not client.wait_connected(30):
        client.close()
        node.stop()
        raise SystemExit("DDS discovery between the benchmark and the node did not complete within 30 s")
    return node, client, active_s


def serial_latency(client: Client, msg: Any, kind: str, frames: int, warmup: int, timeout: float) -> dict[str, Any]:
    """One frame in flight at a time."""
    e2e, node_ms, proc_ms, faces, lost = [], [], [], [], 0
    for i in range(warmup + frames):
        stamp, sent = client.send(msg, kind)
        got = client.wait_for(stamp, timeout)
        if got is None:
            lost += 1
            continue
        if i < warmup:
            continue
        received, payload = got
        e2e.append(received - sent)
        node_ms.append(payload["latency_ms"] / 1000.0)
        proc_ms.append(payload["processing_ms"] / 1000.0)
        faces.append(len(payload["faces"]))
    if not e2e:
        return {"lost": lost, "error": "no profile came back"}
    out = {"e2e": summary(e2e), "node": summary(node_ms), "processing": summary(proc_ms), "lost": lost,
           "faces_in_profile": sorted(set(faces))}
    out["outside_node_p50_ms"] = out["e2e"]["median_ms"] - out["node"]["median_ms"]
    return out


def sustained(client: Client, msg: Any, kind: str, rate: float, duration: float,
              sampler=None) -> dict[str, Any]:
    """Frames at `rate` Hz for `duration` s; what came back and how fast."""
    sent: dict[tuple[int, int], float] = {}
    period = 1.0 / rate
    start = time.perf_counter()
    next_t = start
    while time.perf_counter() - start < duration:
        stamp, t = client.send(msg, kind)
        sent[stamp] = t
        if sampler:
            sampler()
        next_t += period
        time.sleep(max(0.0, next_t - time.perf_counter()))
    end = time.perf_counter()
    time.sleep(min(5.0, max(1.0, duration * 0.05)))  # the frame in progress
    with client._lock:
        back = {s: client.received[s] for s in sent if s in client.received}
    times = sorted(r for r, _ in back.values() if r <= end)
    latencies = [back[s][0] - sent[s] for s in back]
    out: dict[str, Any] = {"sent": len(sent), "processed": len(back), "publish_rate_hz": len(sent) / (end - start)}
    if len(times) >= 2:
        out["profiles_per_s"] = (len(times) - 1) / (times[-1] - times[0])
    if latencies:
        out["latency"] = summary(latencies)
    return out


def measure(client: Client, frame, size: str, kind: str, args) -> dict[str, Any]:
    """Both studies for one frame size and transport."""
    msg = client.message(frame, kind, args.jpeg_quality)
    row: dict[str, Any] = {"size": size, "transport": kind, "message_bytes": len(msg.data)}
    row["latency"] = serial_latency(client, msg, kind, args.frames, args.warmup, args.frame_timeout)
    if args.duration > 0:
        row["sustained"] = sustained(client, msg, kind, args.rate, args.duration)
    lat = row["latency"]
    print(f"  {size} {kind}: p50 {lat.get('e2e', {}).get('median_ms', float('nan')):.1f} ms"
          + (f", sustained {row['sustained'].get('profiles_per_s', 0):.2f} profiles/s" if "sustained" in row else ""),
          flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="tiny-224",
                   help="random-weight architecture: tiny-224 (default here), ViT-B-16-quickgelu, tiny-64")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--transports", nargs="+", default=["raw", "compressed"], choices=("raw", "compressed"))
    p.add_argument("--faces", type=int, default=1, help="faces tiled into each frame")
    p.add_argument("--frames", type=int, default=30, help="timed frames of the one-at-a-time latency study")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames before each latency study")
    p.add_argument("--rate", type=float, default=30.0, help="publish rate of the sustained study (Hz)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of the sustained study (0 = skip)")
    p.add_argument("--detectors", nargs="+", default=["scrfd", "yunet", "haar"],
                   help="detector chain of the node (the first present is used; haar always is)")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--frame-timeout", type=float, default=60.0)
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--checkpoint-dir", default="")
    p.add_argument("--log-dir", default="", help="keep the node's log here (default: a temporary folder)")
    p.add_argument("--cpu-hogs", type=int, default=0,
                   help="busy processes run during the measurements (other software on the robot's CPU)")
    p.add_argument("--hog-kind", default="python", choices=("python", "torch"),
                   help="python: plain busy loop; torch: another PyTorch process (OpenMP threads)")
    p.add_argument("--node-env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra environment of the node process, e.g. OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    env = ros_env()
    for item in args.node_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--node-env: expected KEY=VALUE, got {item!r}")
        env[key] = value
    from bench_profiler import face_crops, tiled_frame

    print(f"bench_node: {args.arch} on {args.device} ({args.dtype}), ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}; "
          f"{RANDOM_WEIGHTS_NOTE}", flush=True)
    crops = face_crops()
    results: dict[str, Any] = {"benchmark": "node", "command": command_line(), "args": vars(args),
                               "machine": machine_info(args.device), "note": RANDOM_WEIGHTS_NOTE, "rows": []}
    with tempfile.TemporaryDirectory(prefix="demoprof-bench-node-") as tmp:
        checkpoint = random_checkpoint(args.arch, args.checkpoint_dir or Path(tmp) / args.arch)
        log_dir = Path(args.log_dir or tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        node, client, active_s = start_node(args, checkpoint, env, log_dir)
        results["node_start_to_active_s"] = active_s
        results["node_command"] = " ".join(node.command)
        detector = next((ln.split("detector ", 1)[1].split(",")[0] for ln in node.log().splitlines()
                         if "configured: model" in ln and "detector " in ln), "?")
        results["detector"] = detector
        try:
            with CpuHogs(args.cpu_hogs, args.hog_kind):
                for size in args.sizes:
                    frame, _ = tiled_frame(crops, args.faces, *SIZES[size])
                    for kind in args.transports:
                        results["rows"].append(measure(client, frame, size, kind, args))
            results["node_memory_kb"] = node.memory_kb()
        finally:
            client.close()
            results["node_exit_code"] = node.stop()
    print_report(results, args)
    write_json(args.out, results)
    return 0


def print_report(results: dict[str, Any], args) -> None:
    m = results["machine"]
    print(f"\n## Node end to end: {args.arch}, {args.device} {args.dtype}, detector {results['detector']}, "
          f"{args.faces} face(s) per frame\n")
    print(machine_line(m, with_threads=False))
    extra = " ".join(args.node_env)
    if args.cpu_hogs:
        print(f"{args.cpu_hogs} busy process(es) of kind '{args.hog_kind}' ran beside the node during the "
              f"measurements.")
    print(f"Note: {RANDOM_WEIGHTS_NOTE}. Node: {(extra + ' ') if extra else ''}{results['node_command']}\n")
    rows = []
    for r in results["rows"]:
        lat, sus = r["latency"], r.get("sustained", {})
        e2e = lat.get("e2e", {})
        rows.append([r["size"], r["transport"], f"{r['message_bytes'] / 1e6:.2f} MB", e2e.get("median_ms", "-"),
                     e2e.get("p95_ms", "-"), lat.get("node", {}).get("median_ms", "-"),
                     lat.get("processing", {}).get("median_ms", "-"), lat.get("outside_node_p50_ms", "-"),
                     lat.get("lost", "-"), sus.get("profiles_per_s", "-"),
                     sus.get("latency", {}).get("median_ms", "-"), sus.get("latency", {}).get("p95_ms", "-")])
    print(markdown_table(["frame", "transport", "message", "e2e p50 ms", "e2e p95 ms", "node p50 ms",
                          "pipeline p50 ms", "outside node p50 ms", "lost", "sustained profiles/s",
                          "sustained p50 ms", "sustained p95 ms"], rows))
    mem = results.get("node_memory_kb", {})
    print(f"\nlatency: {args.frames} frames one at a time after {args.warmup} warm-up; sustained: {args.rate:g} Hz "
          f"for {args.duration:g} s. 'node' = the node's own latency_ms (subscription callback -> profile "
          f"published), 'pipeline' = its processing_ms (conversion + detection + model). Node start to active: "
          f"{results['node_start_to_active_s']:.1f} s; node RSS {mem.get('VmRSS', 0) / 1024:.0f} MiB, "
          f"peak {mem.get('VmHWM', 0) / 1024:.0f} MiB; exit code {results['node_exit_code']}.")


if __name__ == "__main__":
    sys.exit(main())
