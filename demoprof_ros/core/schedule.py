"""Recognise once, then track: which tracked faces the model scores on this frame.

The detector runs on every frame and the tracker keeps every face's fused profile, but the image tower is
the cost that grows with the number of faces. A face whose fused estimate has settled is re-scored only when
its box changed a lot since it was last scored (it turned, came closer) or as a periodic refresh; new faces
and faces whose estimate is still unsettled are scored sooner. A per-frame cap keeps the frame time flat when
several faces come due together: the most urgent go first, the rest wait a frame (their refreshes stagger).
`TrackedProfiler` is the loop the node and `demoprof profile` (videos) both run. Plain Python: no ROS.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from .results import FaceProfile
from .tracking import FaceTracker, ScoringState, _is_int, _is_num, iou

#: Why a face is scored, most urgent first (the order the per-frame cap serves them in).
REASONS = ("new", "moved", "unsettled", "refresh")


@dataclass
class ScheduleConfig:
    """When a tracked face is scored again (the node's `schedule.*` parameters).

    enabled: false = score every face on every frame (the behaviour before scheduling).
    refresh_frames: a settled face is re-scored at least every this many processed frames.
    min_scores: a face counts as unsettled until it has been scored this many times.
    stable_confidence: ... or while any fused attribute's top probability is below this,
        or while its last scoring changed a fused label.
    unsettled_frames: an unsettled face is re-scored every this many frames (1 = every frame). Consecutive frames
        of a face are largely redundant, and the tracker's fusion weighs a scoring by the frames since the one
        before (core/tracking.py), so every third frame carries most of what every frame would.
    rescore_iou: re-score when the box overlaps the box of the face's last scoring by less than this ...
    rescore_scale: ... or its side changed by more than this factor.
    max_scored_per_frame: at most this many already-scored faces are re-scored per frame (0 = no cap); faces
        never scored are always scored, since they have no profile to publish yet.
    """

    enabled: bool = True
    refresh_frames: int = 15
    min_scores: int = 3
    stable_confidence: float = 0.5
    unsettled_frames: int = 3
    rescore_iou: float = 0.6
    rescore_scale: float = 1.3
    max_scored_per_frame: int = 1

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"schedule.{name}: expected {expected}, got {getattr(self, name)!r}")

        check(isinstance(self.enabled, bool), "enabled", "true or false")
        check(_is_int(self.refresh_frames) and self.refresh_frames >= 1, "refresh_frames", "an integer >= 1")
        check(_is_int(self.min_scores) and self.min_scores >= 1, "min_scores", "an integer >= 1")
        check(_is_num(self.stable_confidence) and 0.0 <= self.stable_confidence <= 1.0, "stable_confidence",
              "a number in [0, 1]")
        check(_is_int(self.unsettled_frames) and self.unsettled_frames >= 1, "unsettled_frames",
              "an integer >= 1")
        check(_is_num(self.rescore_iou) and 0.0 <= self.rescore_iou <= 1.0, "rescore_iou", "a number in [0, 1]")
        check(_is_num(self.rescore_scale) and self.rescore_scale >= 1.0, "rescore_scale", "a number >= 1")
        check(_is_int(self.max_scored_per_frame) and self.max_scored_per_frame >= 0, "max_scored_per_frame",
              "an integer >= 0 (0 = no cap)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ScheduleConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown schedule settings {unknown}; known: {sorted(f.name for f in fields(cls))}")
        return cls(**data)


def _side(box: Sequence[float]) -> float:
    return math.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6))


def reason_to_score(cfg: ScheduleConfig, state: ScoringState | None, box: Sequence[float]) -> str | None:
    """Why this face should be scored now (one of REASONS), or None to reuse its fused profile."""
    if state is None or not cfg.enabled:
        return "new" if state is None else "refresh"
    ratio = _side(box) / _side(state.box)
    if iou(box, state.box) < cfg.rescore_iou or max(ratio, 1.0 / ratio) > cfg.rescore_scale:
        return "moved"
    unsettled = (state.times_scored < cfg.min_scores or state.label_changed
                 or state.min_top_probability < cfg.stable_confidence)
    if unsettled and state.frames_since >= cfg.unsettled_frames:
        return "unsettled"
    if state.frames_since >= cfg.refresh_frames:
        return "refresh"
    return None


def choose(cfg: ScheduleConfig, states: Sequence[ScoringState | None], boxes: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the faces to score this frame: every new face, then the most urgent (oldest first) up to the cap."""
    due = []
    for index, (state, box) in enumerate(zip(states, boxes)):
        reason = reason_to_score(cfg, state, box)
        if reason is not None:
            age = state.frames_since if state is not None else math.inf
            due.append((REASONS.index(reason), -age, index))
    due.sort()
    new = [i for rank, _, i in due if rank == 0]
    rest = [i for rank, _, i in due if rank > 0]
    if cfg.enabled and cfg.max_scored_per_frame:
        rest = rest[:cfg.max_scored_per_frame]
    return sorted(new + rest)


class TrackedProfiler:
    """Frame -> every tracked face's fused profile; the model scores only the faces the schedule picks.

    `faces_scored` / `faces_tracked` count crops scored and faces detected since construction (or reset).
    """

    def __init__(self, profiler: Any, tracker: FaceTracker, schedule: ScheduleConfig | None = None) -> None:
        self.profiler = profiler
        self.tracker = tracker
        self.schedule = schedule if schedule is not None else ScheduleConfig()
        self.faces_scored = 0
        self.faces_tracked = 0

    def reset(self) -> None:
        """Forget every track (activation, a new video); counters restart too."""
        self.tracker.reset()
        self.faces_scored = self.faces_tracked = 0

    def __call__(self, image: Any, now: float | None = None) -> list[FaceProfile]:
        """Detect, score what is due, fuse; `now` (seconds, default monotonic) dates each face's last scoring."""
        now = time.monotonic() if now is None else now
        frame, detections = self.profiler.detect(image)
        boxes = [d.box for d in detections]
        chosen = choose(self.schedule, self.tracker.scoring_states(boxes), boxes)
        scores = self.profiler.score(frame, [detections[i] for i in chosen]) if chosen else []
        by_index = dict(zip(chosen, scores))
        self.faces_scored += len(chosen)
        self.faces_tracked += len(detections)
        return self.tracker.update([FaceProfile(detection=d, scores=by_index.get(i))  # type: ignore[arg-type]
                                    for i, d in enumerate(detections)], now=now)
