#!/usr/bin/env python3
"""Recognise once, then track: the node with scheduled scoring vs every-frame scoring, over real DDS at 30 Hz.

A deterministic recorded sequence: a blurred group photo (no detectable faces left in it) as a background that
pans and zooms, with N real labelled face crops (../shared/data/fairface_val_sample; known identities) pasted
on it, each moving on its own smooth path and growing / shrinking, 640x480. The same sequence is replayed as
sensor_msgs/Image at --rate Hz to a profiler_node process (Fast DDS over loopback shared memory, random
ROS_DOMAIN_ID, as bench_node.py) once with `schedule.enabled: true` and once with `false`, one node after the
other; every /user_profile is matched to its frame by header stamp and each face to its identity by box.

Reported per setting: processed frames/s while the sequence plays, p50 / p95 publish -> /user_profile
latency, the share of published faces the model scored on that frame, the node's CPU time per processed frame
(utime + stime from /proc over the replay) and RSS; and, on the frames both runs processed, the agreement of
the fused labels per attribute after each face's first second (and each run's accuracy against the labels).

`--offline` also replays every frame through the same pipeline in this process (no DDS, nothing dropped), so
that the schedule is the only difference; `--offline-only` runs just that part (deterministic, no ROS needed,
a fraction of the time). `--param tracking.NAME=VALUE` applies to both the nodes and the in-process pipeline.

    python benchmarks/bench_schedule.py --faces 1 4                 # the shipped model, both face counts
    python benchmarks/bench_schedule.py --faces 4 --duration 5 --model tiny   # smoke
    python benchmarks/bench_schedule.py --faces 4 --duration 20 --offline-only   # the schedule's agreement alone
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, command_line, machine_info, machine_line, markdown_table, summary, write_json  # noqa: E402
from bench_node import Client, NodeProcess, ros_env  # noqa: E402

WIDTH, HEIGHT = 640, 480
FACE_SETS = (ROOT.parent / "shared" / "data" / "fairface_val_sample",)
BACKGROUND = ROOT / "test" / "data" / "group_photos" / "obama_family_2011.jpg"
ATTRIBUTES = ("age", "gender", "race")
FIRST_SECOND = 30  # frames of a face's first second at 30 Hz, left out of the agreement


# --- the recorded sequence ------------------------------------------------------------------------------------

def labelled_faces(folder: Path, n: int, seed: int) -> list[tuple[np.ndarray, dict[str, str]]]:
    """n FairFace crops (face centred, 1.25 padding) with their labels, a fixed pseudo-random pick."""
    rows = list(csv.DictReader((folder / "labels.csv").open(encoding="utf-8")))
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(rows))[:n]:
        image = cv2.imread(str(folder / rows[i]["file"]))
        if image is None:
            raise SystemExit(f"cannot read {folder / rows[i]['file']}")
        out.append((image, {a: rows[i][a] for a in ATTRIBUTES}))
    return out


class Sequence:
    """Frame i of the sequence and where each identity's crop is in it (deterministic, built on demand)."""

    def __init__(self, faces: list[tuple[np.ndarray, dict[str, str]]], frames: int, seed: int = 0) -> None:
        self.faces = faces
        self.frames = frames
        photo = cv2.imread(str(BACKGROUND))
        if photo is None:
            raise SystemExit(f"cannot read the background {BACKGROUND}")
        self.background = cv2.GaussianBlur(photo, (0, 0), 12)  # texture that moves, but no face left to detect
        rng = np.random.default_rng(seed)
        n = len(faces)
        cols = math.ceil(math.sqrt(n * 4 / 3))
        rows = math.ceil(n / cols)
        self.paths = []
        for k in range(n):
            r, c = divmod(k, cols)
            centre = ((c + 0.5) * WIDTH / cols, (r + 0.5) * HEIGHT / rows)
            cell = min(WIDTH / cols, HEIGHT / rows)
            self.paths.append({"centre": centre, "amp": (0.18 * cell, 0.12 * cell), "side": 0.55 * cell,
                               "phase": rng.uniform(0, 2 * math.pi, 3), "speed": rng.uniform(0.6, 1.0, 3)})

    def boxes(self, i: int) -> list[tuple[float, float, float, float]]:
        """The paste square of each identity in frame i (x1, y1, x2, y2)."""
        t = i / 30.0
        out = []
        for p in self.paths:
            cx = p["centre"][0] + p["amp"][0] * math.sin(0.9 * p["speed"][0] * t + p["phase"][0])
            cy = p["centre"][1] + p["amp"][1] * math.sin(0.7 * p["speed"][1] * t + p["phase"][1])
            side = p["side"] * (1.0 + 0.2 * math.sin(0.5 * p["speed"][2] * t + p["phase"][2]))  # zoom +-20 %
            out.append((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
        return out

    def frame(self, i: int) -> np.ndarray:
        t = i / 30.0
        h, w = self.background.shape[:2]
        zoom = 0.6 + 0.15 * math.sin(0.3 * t)  # pan and zoom over the photo
        cw, ch = w * zoom, w * zoom * HEIGHT / WIDTH
        x0 = (w - cw) * (0.5 + 0.5 * math.sin(0.2 * t))
        y0 = (h - ch) * (0.5 + 0.5 * math.cos(0.25 * t))
        scale = WIDTH / cw
        m = np.float32([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
        frame = cv2.warpAffine(self.background, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
        for (crop, _), (x1, y1, x2, y2) in zip(self.faces, self.boxes(i)):
            side = int(round(x2 - x1))
            xa, ya = int(round(x1)), int(round(y1))
            patch = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
            xs, ys = max(0, -xa), max(0, -ya)
            xe, ye = min(side, WIDTH - xa), min(side, HEIGHT - ya)
            frame[ya + ys:ya + ye, xa + xs:xa + xe] = patch[ys:ye, xs:xe]
        return frame


# --- one replay -----------------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replay(client: Client, node: NodeProcess, seq: Sequence, messages: list[Any], rate: float) -> dict[str, Any]:
    """Publish the sequence at `rate` Hz once; what came back, per frame index."""
    sent: dict[tuple[int, int], tuple[int, float]] = {}
    period = 1.0 / rate
    cpu0 = cpu_seconds(node.proc.pid)
    start = time.perf_counter()
    for i, msg in enumerate(messages):
        stamp, t = client.send(msg, "raw")
        sent[stamp] = (i, t)
        time.sleep(max(0.0, start + (i + 1) * period - time.perf_counter()))
    end = time.perf_counter()
    time.sleep(2.0)  # the frame in progress
    cpu = cpu_seconds(node.proc.pid) - cpu0
    with client._lock:
        back = {sent[s][0]: (r - sent[s][1], p) for s, (r, p) in client.received.items() if s in sent}
    latencies = [lat for lat, _ in back.values()]
    faces = [f for _, p in back.values() for f in p["faces"]]
    return {"sent": len(sent), "processed": len(back), "seconds": end - start,
            "frames_per_s": len(back) / (end - start), "latency": summary(latencies) if latencies else {},
            "cpu_s_per_frame_ms": 1000.0 * cpu / max(1, len(back)), "cpu_share": cpu / (end - start),
            "faces_published": len(faces),
            "faces_scored_share": (sum(f.get("frames_since_scored", 0) == 0 for f in faces) / len(faces)
                                   if faces else 0.0),
            "max_frames_since_scored": max((f.get("frames_since_scored", 0) for f in faces), default=0),
            "memory_kb": node.memory_kb(), "labels": labels_by_identity(seq, back)}


def labels_by_identity(seq: Sequence, back: dict[int, tuple[float, dict]]) -> dict[int, dict[int, dict]]:
    """frame index -> identity -> fused top labels, matching each face to the nearest paste centre."""
    out: dict[int, dict[int, dict]] = {}
    for i, (_, payload) in back.items():
        truth = seq.boxes(i)
        for face in payload["faces"]:
            b = face["box"]
            cx, cy = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
            dist = [math.hypot(cx - (t[0] + t[2]) / 2, cy - (t[1] + t[3]) / 2) / (t[2] - t[0]) for t in truth]
            k = int(np.argmin(dist))
            if dist[k] < 0.5:
                out.setdefault(i, {})[k] = {a: face["attributes"][a]["top"] for a in face["attributes"]}
    return out


def first_seen(labels: dict[int, dict[int, dict]]) -> dict[int, int]:
    seen: dict[int, int] = {}
    for i in sorted(labels):
        for k in labels[i]:
            seen.setdefault(k, i)
    return seen


def agreement(on: dict, off: dict, truth: list[dict[str, str]]) -> dict[str, Any]:
    """Per attribute: share of (frame, identity) pairs both runs published, past the identity's first second
    in both, with the same fused label; and each run's accuracy against the dataset labels on those pairs."""
    start_on, start_off = first_seen(on), first_seen(off)
    out: dict[str, Any] = {}
    for a in ATTRIBUTES:
        same = n = right_on = right_off = 0
        for i in sorted(set(on) & set(off)):
            for k in set(on[i]) & set(off[i]):
                if i - max(start_on[k], start_off[k]) < FIRST_SECOND or a not in on[i][k]:
                    continue
                n += 1
                same += on[i][k][a] == off[i][k][a]
                right_on += on[i][k][a] == truth[k][a]
                right_off += off[i][k][a] == truth[k][a]
        out[a] = {"pairs": n, "agreement": same / n if n else None,
                  "accuracy_on": right_on / n if n else None, "accuracy_off": right_off / n if n else None}
    return out


def offline_agreement(args, seq: Sequence, truth: list[dict[str, str]], schedules: dict[str, dict]) -> dict:
    """Every frame of the sequence through the node's pipeline in this process (no DDS, nothing dropped):
    each named schedule against every-frame scoring on identical frames, so only the schedule differs."""
    from demoprof_ros.core.profiler import Profiler, ProfilerConfig
    from demoprof_ros.core.schedule import ScheduleConfig, TrackedProfiler
    from demoprof_ros.core.tracking import FaceTracker, TrackerConfig

    cfg = ProfilerConfig(model=args.model, dtype=args.dtype, **({"detectors": tuple(args.detectors)}
                                                              if args.detectors else {}))
    profiler = Profiler.from_config(cfg)
    profiler.warmup()
    frames = [seq.frame(i) for i in range(seq.frames)]

    tracking = TrackerConfig.from_dict(tracking_settings(args))

    def run(schedule: ScheduleConfig) -> tuple[dict, int]:
        pipeline = TrackedProfiler(profiler, FaceTracker(tracking), schedule)
        back = {i: (0.0, {"faces": [p.to_dict() for p in pipeline(f, now=i / 30.0)]}) for i, f in enumerate(frames)}
        return labels_by_identity(seq, back), pipeline.faces_scored

    off, scored_off = run(ScheduleConfig(enabled=False))
    out = {}
    for name, settings in schedules.items():
        on, scored_on = run(ScheduleConfig(**settings))
        out[name] = {"settings": settings, "tracking": dataclasses.asdict(tracking), "faces_scored": scored_on,
                     "faces_scored_every_frame": scored_off,
                     "agreement": agreement(on, off, truth)}
    return out


def tracking_settings(args) -> dict[str, Any]:
    """The `--param tracking.NAME=VALUE` items as TrackerConfig settings (with their YAML types)."""
    return dict(_setting(item.split(".", 1)[1]) for item in args.param if item.startswith("tracking."))


# --- main -----------------------------------------------------------------------------------------------------

def node_params(args, schedule: bool) -> dict[str, Any]:
    params = {"model": args.model, "device": "cpu", "dtype": args.dtype, "transport": "both", "publish_hri": False,
              "debug_image": False, "schedule.enabled": schedule}
    if args.detectors:
        params["detectors"] = args.detectors
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = value
    return params


def run_setting(args, env, log_dir: Path, seq: Sequence, messages: list[Any], schedule: bool, faces: int):
    name = f"{faces}faces_{'schedule' if schedule else 'every_frame'}"
    node = NodeProcess(node_params(args, schedule), log_dir / f"{name}.log", env)
    client = None
    try:
        if not node.wait_log("active:", args.start_timeout):
            raise SystemExit(f"the node did not become active within {args.start_timeout} s; its log:\n"
                             f"{node.log()[-3000:]}")
        client = Client()
        if not client.wait_connected(30):
            raise SystemExit("DDS discovery between the benchmark and the node did not complete within 30 s")
        for msg in messages[:args.warmup]:  # the node's first frames (allocations, first model calls); untimed
            stamp, _ = client.send(msg, "raw")
            client.wait_for(stamp, 30)
        with client._lock:
            client.received.clear()
        result = replay(client, node, seq, messages, args.rate)
        detector = next((ln.split("detector ", 1)[1].split(",")[0] for ln in node.log().splitlines()
                         if "configured: model" in ln and "detector " in ln), "?")
        model = next((ln.split("configured: model ", 1)[1].split(",")[0] for ln in node.log().splitlines()
                      if "configured: model " in ln), "?")
        result.update(detector=detector, model=model, schedule=schedule, faces=faces)
    finally:
        if client is not None:
            client.close()
        code = node.stop()
    result["node_exit_code"] = code
    print(f"  {name}: {result['frames_per_s']:.1f} frames/s, p50 {result['latency'].get('median_ms', 0):.0f} ms, "
          f"scored {100 * result['faces_scored_share']:.0f} % of published faces", flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, nargs="+", default=[1, 4], help="faces in the sequence (one run each)")
    p.add_argument("--model", default=str(ROOT / "models" / "demoprof-mobilenetv2-112"),
                   help="the node's model parameter (default: the shipped model)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--detectors", nargs="*", default=None, help="the node's detector chain (default: its own)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of the sequence")
    p.add_argument("--rate", type=float, default=30.0, help="replay rate, Hz (the sequence is made for 30)")
    p.add_argument("--warmup", type=int, default=5, help="frames sent one at a time before the replay (untimed)")
    p.add_argument("--face-set", default="", help="labelled face crops (default ../shared/data/fairface_val_sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--log-dir", default="", help="keep the nodes' logs here (default: a temporary folder)")
    p.add_argument("--param", nargs="*", default=[], metavar="NAME=VALUE",
                   help="more node parameters for both runs, e.g. schedule.refresh_frames=30")
    p.add_argument("--node-env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra environment of the node process, e.g. OMP_NUM_THREADS=1")
    p.add_argument("--offline", action="store_true",
                   help="also replay every frame in this process (no DDS, no drops): agreement due to the schedule alone")
    p.add_argument("--offline-only", action="store_true",
                   help="only the in-process replay of --offline: no DDS, no node processes")
    p.add_argument("--offline-schedules", nargs="*", default=[], metavar="K=V[,K=V]",
                   help="more schedules for --offline besides the default, e.g. refresh_frames=8,max_scored_per_frame=2")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    for item in args.param + args.node_env:
        if "=" not in item or item.startswith("="):
            p.error(f"expected NAME=VALUE, got {item!r}")

    folder = Path(args.face_set) if args.face_set else next((f for f in FACE_SETS if f.is_dir()), None)
    if folder is None or not (folder / "labels.csv").is_file():
        raise SystemExit(f"no labelled face set at {args.face_set or FACE_SETS[0]} (--face-set FOLDER with labels.csv)")
    results: dict[str, Any] = {"benchmark": "schedule", "command": command_line(), "args": vars(args),
                               "machine": machine_info("cpu"), "face_set": str(folder), "runs": []}
    if args.offline_only:
        print(f"bench_schedule: model {args.model}, in process only", flush=True)
    else:
        env = ros_env()
        env.update(item.split("=", 1) for item in args.node_env)
        print(f"bench_schedule: model {args.model}, ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}", flush=True)
        from sensor_msgs.msg import Image

        from demoprof_ros.ros.image_conversion import bgr_to_image_fields
    with tempfile.TemporaryDirectory(prefix="demoprof-bench-schedule-") as tmp:
        log_dir = Path(args.log_dir or tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        for n in args.faces:
            faces = labelled_faces(folder, n, args.seed)
            seq = Sequence(faces, int(args.duration * 30), seed=args.seed)
            run: dict[str, Any] = {"faces": n}
            if not args.offline_only:
                messages = [Image(**bgr_to_image_fields(seq.frame(i))) for i in range(seq.frames)]
                on = run_setting(args, env, log_dir, seq, messages, True, n)
                off = run_setting(args, env, log_dir, seq, messages, False, n)
                agree = agreement(on.pop("labels"), off.pop("labels"), [labels for _, labels in faces])
                run.update(schedule=on, every_frame=off, agreement=agree,
                           speedup=on["frames_per_s"] / off["frames_per_s"] if off["frames_per_s"] else None)
            if args.offline or args.offline_only:
                schedules = {"default": {}, **{item: dict(_setting(kv) for kv in item.split(","))
                                               for item in args.offline_schedules}}
                try:
                    run["offline"] = offline_agreement(args, seq, [labels for _, labels in faces], schedules)
                except Exception as exc:  # noqa: BLE001 - keep the DDS figures of this run
                    import traceback
                    traceback.print_exc()
                    run["offline_error"] = f"{type(exc).__name__}: {exc}"
            results["runs"].append(run)
    print_report(results)
    write_json(args.out, results)
    return 0


def _setting(item: str) -> tuple[str, Any]:
    """'refresh_frames=8' -> ('refresh_frames', 8): a schedule setting with its YAML type."""
    import yaml
    key, _, value = item.partition("=")
    return key.strip(), yaml.safe_load(value)


def print_report(results: dict[str, Any]) -> None:
    m = results["machine"]
    dds = [run for run in results["runs"] if "schedule" in run]
    first = dds[0]["schedule"] if dds else {}
    print(f"\n## Scheduled vs every-frame scoring: {first.get('model', results['args']['model'])}, detector "
          f"{first.get('detector', '?')}, 640x480 at {results['args']['rate']:g} Hz for "
          f"{results['args']['duration']:g} s\n")
    print(machine_line(m, with_threads=False) + "\n")
    pct = (lambda x: "-" if x is None else f"{100 * x:.1f} %")  # noqa: E731
    if dds:
        rows = []
        for run in dds:
            for key in ("schedule", "every_frame"):
                r = run[key]
                lat = r["latency"]
                rows.append([run["faces"], "scheduled" if key == "schedule" else "every frame", r["frames_per_s"],
                             lat.get("median_ms", "-"), lat.get("p95_ms", "-"), r["cpu_s_per_frame_ms"],
                             f"{100 * r['cpu_share']:.0f} %", f"{100 * r['faces_scored_share']:.0f} %",
                             r["max_frames_since_scored"], f"{r['memory_kb'].get('VmRSS', 0) / 1024:.0f}",
                             f"{r['processed']}/{r['sent']}"])
        print(markdown_table(["faces", "scoring", "frames/s", "p50 ms", "p95 ms", "CPU ms/frame", "CPU",
                              "faces scored", "max age (frames)", "RSS MiB", "processed/sent"], rows))
        print()
        rows = []
        for run in dds:
            for a, v in run["agreement"].items():
                rows.append([run["faces"], a, v["pairs"], pct(v["agreement"]), pct(v["accuracy_on"]),
                             pct(v["accuracy_off"])])
        print(markdown_table(["faces", "attribute", "(frame, face) pairs", "agreement on/off", "accuracy scheduled",
                              "accuracy every frame"], rows))
    rows = [[run["faces"], name, f"{o['faces_scored']}/{o['faces_scored_every_frame']}",
             *(pct(o["agreement"][a]["agreement"]) for a in ATTRIBUTES),
             *(f"{pct(o['agreement'][a]['accuracy_on'])} / {pct(o['agreement'][a]['accuracy_off'])}"
               for a in ATTRIBUTES)]
            for run in results["runs"] for name, o in run.get("offline", {}).items()]
    if rows:
        print("\nIn this process, every frame, nothing dropped (the schedule is the only difference):\n")
        print(markdown_table(["faces", "schedule", "faces scored / every frame",
                              *(f"{a} agreement" for a in ATTRIBUTES),
                              *(f"{a} accuracy sched. / every" for a in ATTRIBUTES)], rows))
    if dds:
        speed = ", ".join(f"{r['faces']} face(s): {r['speedup']:.1f}x" for r in dds if r["speedup"])
        print(f"\nspeed-up of scheduled over every-frame scoring (processed frames/s): {speed}.", end=" ")
    print(f"Agreement: fused labels of the frames both runs processed, after each face's first {FIRST_SECOND} "
          f"frames.")


if __name__ == "__main__":
    sys.exit(main())
