"""The node's counters and what /diagnostics says about them.

The level must not say OK while nothing comes out: ERROR when the inference thread is gone or every
frame since the last report was bad or failed, STALE when frames arrive but the worker finished none for
a while (stuck in the model), WARN when no frames arrive.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    bad_frames: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    last_received: float = 0.0  # monotonic
    last_done: float = 0.0      # monotonic: the worker last finished a frame (processed, bad or failed)


@dataclass
class DiagMark:
    """The counters at the previous /diagnostics report."""

    time: float
    received: int = 0
    processed: int = 0
    latency_sum: float = 0.0
    errors: int = 0
    bad_frames: int = 0


def diagnostic_status(values: dict[str, str], stall_s: float = 10.0) -> tuple[bytes, str]:
    """(DiagnosticStatus level, message) from diagnostics_values(): ERROR or STALE whenever frames arrive
    and none come out, whatever the reason (thread gone, every frame bad or failing, worker stuck)."""
    new_frames, new_processed = int(values["new_frames"]), int(values["new_processed"])
    new_errors, new_bad = int(values["new_errors"]), int(values["new_bad_frames"])
    since_frame, since_done = float(values["seconds_since_last_frame"]), float(values["seconds_since_last_done"])
    if values["worker_alive"] != "True":
        return DiagnosticStatus.ERROR, "the inference thread is not running: frames are not profiled"
    if new_errors:
        return DiagnosticStatus.ERROR, f"{new_errors} frame(s) failed; see the log"
    if new_frames and not new_processed and new_bad:
        return DiagnosticStatus.ERROR, f"no usable frame: {new_bad} bad frame(s) since the last report; see the log"
    if new_frames and not new_processed and since_done > stall_s:
        return DiagnosticStatus.STALE, f"frames arrive but none was processed for {since_done:.0f} s"
    if since_frame < 0 or since_frame > 5.0:
        return DiagnosticStatus.WARN, "no images received recently"
    if new_bad:
        return DiagnosticStatus.WARN, f"profiling at {values['rate_hz']} Hz; {new_bad} bad frame(s) skipped"
    return DiagnosticStatus.OK, f"profiling at {values['rate_hz']} Hz"


def snapshot(c: Counters, last: DiagMark, dropped: int, worker_alive: bool,
             now: float | None = None) -> tuple[dict[str, str], DiagMark]:
    """(diagnostics values as strings, the mark for the next call); the caller holds the counters' lock."""
    now = time.monotonic() if now is None else now
    window_n, window_sum = c.processed - last.processed, c.latency_sum_ms - last.latency_sum
    values: dict[str, Any] = {
        "frames_received": c.received, "frames_processed": c.processed,
        "frames_dropped": dropped, "bad_frames": c.bad_frames, "errors": c.errors,
        "rate_hz": round(window_n / max(now - last.time, 1e-6), 2),
        "latency_ms": round(window_sum / window_n, 1) if window_n else 0.0,
        "latency_max_ms": round(c.latency_max_ms, 1),
        "seconds_since_last_frame": round(now - c.last_received, 1) if c.received else -1,
        "seconds_since_last_done": round(now - c.last_done, 1),
        "new_frames": c.received - last.received, "new_processed": window_n,
        "new_errors": c.errors - last.errors, "new_bad_frames": c.bad_frames - last.bad_frames,
        "worker_alive": worker_alive,
    }
    mark = DiagMark(now, c.received, c.processed, c.latency_sum_ms, c.errors, c.bad_frames)
    return {k: str(v) for k, v in values.items()}, mark
