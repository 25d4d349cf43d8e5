#!/usr/bin/env python3
"""Memory of the ROS node under a steady camera stream: peak RSS and whether RSS grows over time.

Starts `profiler_node` (random-weight checkpoint, CPU by default) exactly as bench_node.py does, publishes one
640x480 frame (real face crops) at --rate Hz for --duration seconds, and samples the node's /proc status
(VmRSS, RssAnon, RssFile, VmHWM) every --interval seconds. Growth is judged after a settling period
(--settle, default 10% of the run): least-squares slope of RSS in MiB per minute and the difference between the
medians of the first and last fifth of the remaining samples. On CUDA it also reads the node's GPU memory with
nvidia-smi when available.

    python benchmarks/bench_memory.py --arch ViT-B-16-quickgelu --duration 600     # the issue's 10 minutes
    python benchmarks/bench_memory.py --arch tiny-64 --duration 5                   # smoke
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RANDOM_WEIGHTS_NOTE, command_line, machine_info, machine_line, markdown_table,  # noqa: E402
                     random_checkpoint, write_json)
from bench_node import SIZES, ros_env, start_node  # noqa: E402


def gpu_memory_mib(pid: int) -> float | None:
    """The process's GPU memory from nvidia-smi (None without a GPU or the tool)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return None


def slope_per_min(ts: list[float], values: list[float]) -> float:
    """Least-squares slope of values (MiB) over ts (s), in MiB per minute."""
    if len(ts) < 2:
        return 0.0
    mt, mv = statistics.fmean(ts), statistics.fmean(values)
    den = sum((t - mt) ** 2 for t in ts)
    return 60.0 * sum((t - mt) * (v - mv) for t, v in zip(ts, values)) / den if den else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="ViT-B-16-quickgelu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--size", default="640x480", choices=list(SIZES))
    p.add_argument("--transport", default="raw", choices=("raw", "compressed"))
    p.add_argument("--faces", type=int, default=1)
    p.add_argument("--rate", type=float, default=30.0, help="publish rate (Hz)")
    p.add_argument("--duration", type=float, default=180.0, help="seconds of streaming (the issue asks for 600)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds excluded from the growth check at the start (default 10%% of --duration)")
    p.add_argument("--max-growth", type=float, default=2.0,
                   help="MiB per minute above which the run is reported as growing")
    p.add_argument("--detectors", nargs="+", default=["scrfd", "yunet", "haar"])
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--checkpoint-dir", default="")
    p.add_argument("--log-dir", default="")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    settle = args.duration * 0.1 if args.settle is None else args.settle

    env = ros_env()
    from bench_profiler import face_crops, tiled_frame

    print(f"bench_memory: {args.arch} on {args.device} ({args.dtype}), {args.rate:g} Hz for {args.duration:g} s; "
          f"{RANDOM_WEIGHTS_NOTE}", flush=True)
    frame, _ = tiled_frame(face_crops(), args.faces, *SIZES[args.size])
    results: dict[str, Any] = {"benchmark": "memory", "command": command_line(), "args": vars(args),
                               "machine": machine_info(args.device), "note": RANDOM_WEIGHTS_NOTE}
    with tempfile.TemporaryDirectory(prefix="demoprof-bench-mem-") as tmp:
        checkpoint = random_checkpoint(args.arch, args.checkpoint_dir or Path(tmp) / args.arch)
        log_dir = Path(args.log_dir or tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        ns = argparse.Namespace(device=args.device, dtype=args.dtype, detectors=args.detectors,
                                start_timeout=args.start_timeout)
        node, client, active_s = start_node(ns, checkpoint, env, log_dir, name="memory_node")
        results["after_start_kb"] = node.memory_kb()
        samples: list[dict[str, Any]] = []
        msg = client.message(frame, args.transport)
        sent = 0
        try:
            start = time.perf_counter()
            next_send = next_sample = start
            period = 1.0 / args.rate
            while (now := time.perf_counter()) - start < args.duration:
                if now >= next_send:
                    client.send(msg, args.transport)
                    sent += 1
                    next_send += period
                if now >= next_sample:
                    mem = node.memory_kb()
                    if not mem:
                        raise SystemExit(f"the node exited during the run; log:\n{node.log()[-3000:]}")
                    with client._lock:
                        processed = len(client.received)
                    sample = {"t": now - start, "processed": processed, **mem}
                    gpu = gpu_memory_mib(node.proc.pid) if args.device.startswith("cuda") else None
                    if gpu is not None:
                        sample["gpu_mib"] = gpu
                    samples.append(sample)
                    next_sample += args.interval
                time.sleep(max(0.0, min(next_send, next_sample) - time.perf_counter()))
            results["final_kb"] = node.memory_kb()
        finally:
            client.close()
            results["node_exit_code"] = node.stop()
    results["node_start_to_active_s"] = active_s
    results["frames_sent"] = sent
    results["profiles_received"] = samples[-1]["processed"] if samples else 0
    results["samples"] = samples
    steady = [s for s in samples if s["t"] >= settle]
    ts = [s["t"] for s in steady]
    rss = [s["VmRSS"] / 1024 for s in steady]
    anon = [s.get("RssAnon", 0) / 1024 for s in steady]
    fifth = max(1, len(steady) // 5)
    results["growth"] = {
        "settle_s": settle, "samples": len(steady),
        "rss_slope_mib_per_min": slope_per_min(ts, rss), "anon_slope_mib_per_min": slope_per_min(ts, anon),
        "rss_first_fifth_mib": statistics.median(rss[:fifth]) if rss else None,
        "rss_last_fifth_mib": statistics.median(rss[-fifth:]) if rss else None,
    }
    g = results["growth"]
    g["growing"] = bool(rss) and g["rss_slope_mib_per_min"] > args.max_growth
    results["peak_rss_mib"] = results["final_kb"].get("VmHWM", 0) / 1024
    gpu = [s["gpu_mib"] for s in samples if "gpu_mib" in s]
    if gpu:
        results["gpu_mib_max"] = max(gpu)
    print_report(results, args)
    write_json(args.out, results)
    return 0


def print_report(results: dict[str, Any], args) -> None:
    m, g, fin = results["machine"], results["growth"], results["final_kb"]
    print(f"\n## Node memory: {args.arch}, {args.device} {args.dtype}, {args.size} {args.transport} at {args.rate:g} Hz "
          f"for {args.duration:g} s\n")
    print(machine_line(m, with_threads=False))
    print(f"Note: {RANDOM_WEIGHTS_NOTE}.\n")
    start = results["after_start_kb"]
    rows = [["after start (configured, warmed up)", start.get("VmRSS", 0) / 1024, start.get("RssAnon", 0) / 1024,
             start.get("RssFile", 0) / 1024],
            ["end of run", fin.get("VmRSS", 0) / 1024, fin.get("RssAnon", 0) / 1024, fin.get("RssFile", 0) / 1024],
            ["peak (VmHWM)", results["peak_rss_mib"], "-", "-"]]
    print(markdown_table(["node process", "RSS MiB", "anon MiB", "file-backed MiB"], rows))
    print(f"\nframes sent {results['frames_sent']}, profiles received {results['profiles_received']}; growth after "
          f"{g['settle_s']:.0f} s ({g['samples']} samples): RSS slope {g['rss_slope_mib_per_min']:+.2f} MiB/min "
          f"(anon {g['anon_slope_mib_per_min']:+.2f}), median first fifth {g['rss_first_fifth_mib']:.0f} MiB -> "
          f"last fifth {g['rss_last_fifth_mib']:.0f} MiB: "
          + ("GROWING" if g["growing"] else f"no growth above {args.max_growth:g} MiB/min")
          + (f"; GPU memory max {results['gpu_mib_max']:.0f} MiB" if "gpu_mib_max" in results else ""))


if __name__ == "__main__":
    sys.exit(main())
