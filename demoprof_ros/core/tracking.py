"""Stable face ids across frames and temporal fusion of each face's attribute estimates.

A single frame's zero-shot estimate is noisy (pose, blur, expression); a robot looks at the same person for many
frames. Tracks are matched greedily by box overlap, then by centre distance (a face that moved more than its own
overlap allows), and each attribute's log-probabilities are averaged over the track (EMA or a sliding window),
i.e. a normalised geometric mean of the per-frame distributions, so the profile gets steadier as the robot keeps
looking. The memory is counted in camera frames, not in scorings: a scoring stands for the frames since the
track's previous one (from the time between them at `frame_rate`, so frames the node dropped or the schedule
(core/schedule.py) skipped count alike), and a scheduled track and an every-frame track fuse the same seconds.
The published label switches to another class only when that class beats it by `switch_margin`, so a face
between two classes does not flicker. Plain Python: no ROS.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .results import AttributeResult, Detection, FaceProfile, FaceScores

FUSION_MODES = ("ema", "window", "none")
_EPS = 1e-8


@dataclass
class TrackerConfig:
    """Tracking and fusion settings (the node's `tracking.*` parameters).

    min_hits: frames a face must be matched in before it is reported (1 = at once).
    max_misses: a track is dropped when it has gone unmatched in this many consecutive frames.
    iou_threshold: least box overlap for a match; below it, centres closer than
        max_center_distance x (the track's box diagonal) still match.
    fusion: "ema" (weight `alpha` on the newest frame), "window" (mean over the last `window` frames) or "none".
        Both count camera frames: a scoring k frames after the track's previous one stands for those k frames
        (the profile published in between is that previous estimate), whether the schedule skipped them or the
        node dropped them.
        The EMA is normalised (bias-corrected): until about 1 / alpha frames it is the mean of the frames so far,
        not the first frame's estimate.
    switch_margin: the published label (`top`) changes to another class only once that class's fused probability
        exceeds the current label's by more than this (0 = always the arg-max).
    frame_rate: the camera rate (Hz) that turns the seconds between two scorings into frames for the fusion
        (k = seconds x frame_rate, at least 1), so the memory spans the same time however many frames are
        processed; 0 = count processed frames instead.
    min_confidence: bar under which a fused attribute is reported as undetermined.
    """

    min_hits: int = 2
    max_misses: int = 5
    iou_threshold: float = 0.3
    max_center_distance: float = 0.5
    fusion: str = "ema"
    alpha: float = 0.02
    window: int = 60
    switch_margin: float = 0.02
    frame_rate: float = 30.0
    min_confidence: float = 0.4

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"tracking.{name}: expected {expected}, got {getattr(self, name)!r}")

        check(_is_int(self.min_hits) and self.min_hits >= 1, "min_hits", "an integer >= 1")
        check(_is_int(self.max_misses) and self.max_misses >= 1, "max_misses", "an integer >= 1")
        check(_is_num(self.iou_threshold) and 0.0 < self.iou_threshold <= 1.0, "iou_threshold", "a number in (0, 1]")
        check(_is_num(self.max_center_distance) and self.max_center_distance >= 0.0, "max_center_distance",
              "a number >= 0")
        check(self.fusion in FUSION_MODES, "fusion", f"one of {FUSION_MODES}")
        check(_is_num(self.alpha) and 0.0 < self.alpha <= 1.0, "alpha", "a number in (0, 1]")
        check(_is_int(self.window) and self.window >= 1, "window", "an integer >= 1")
        check(_is_num(self.switch_margin) and 0.0 <= self.switch_margin < 1.0, "switch_margin", "a number in [0, 1)")
        check(_is_num(self.frame_rate) and 0.0 <= self.frame_rate <= 1000.0, "frame_rate",
              "a number in [0, 1000] (0 = count processed frames)")
        check(_is_num(self.min_confidence) and 0.0 <= self.min_confidence <= 1.0, "min_confidence",
              "a number in [0, 1]")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrackerConfig":
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown tracking settings {unknown}; known: {sorted(known)}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def center_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Distance between box centres in units of box a's diagonal (scale-free)."""
    diag = math.hypot(a[2] - a[0], a[3] - a[1]) or 1.0
    dx = (a[0] + a[2] - b[0] - b[2]) / 2.0
    dy = (a[1] + a[3] - b[1] - b[3]) / 2.0
    return math.hypot(dx, dy) / diag


class _AttributeFusion:
    """Running log-probability state of one attribute of one track, and its published label."""

    def __init__(self, classes: tuple[str, ...], mode: str, alpha: float, window: int, margin: float) -> None:
        self.classes = classes
        self.mode = mode
        self.alpha = alpha
        self.window = window
        self.margin = margin
        self.history: deque[tuple[int, np.ndarray]] = deque(maxlen=window)  # (frames it stands for, log p)
        self.ema_sum: np.ndarray | None = None  # decayed sum of weighted log p ...
        self.ema_weight = 0.0  # ... and of the weights (their ratio is the normalised EMA)
        self.count = 0
        self.label: str | None = None

    def add(self, distribution: Mapping[str, float], frames: int = 1) -> None:
        """Fuse one scoring that stands for `frames` processed frames (those since the previous scoring)."""
        logp = np.log(np.clip(np.array([distribution[c] for c in self.classes], dtype=np.float64), _EPS, None))
        self.count += 1
        if self.mode == "ema":
            keep = (1.0 - self.alpha) ** frames
            self.ema_sum = (1.0 - keep) * logp if self.ema_sum is None else keep * self.ema_sum + (1.0 - keep) * logp
            self.ema_weight = keep * self.ema_weight + (1.0 - keep)
        else:
            self.history.append((frames, logp))
        dist = self.distribution()
        best = max(dist, key=dist.get)
        if self.label is None or dist[best] - dist[self.label] > self.margin:
            self.label = best

    @property
    def frames(self) -> int:
        return len(self.history) if self.mode != "ema" else self.count

    def top(self) -> tuple[str, float]:
        """(the published class, its fused probability): the arg-max, held until another beats it by the margin."""
        assert self.label is not None, "top() before any add()"
        return self.label, self.distribution()[self.label]

    def distribution(self) -> dict[str, float]:
        if self.mode == "ema":
            logp = self.ema_sum / self.ema_weight
        else:  # the newest scorings, each weighted by the frames it stands for, up to `window` frames in all
            left, weights = self.window, []
            for frames, entry in reversed(self.history):
                w = min(frames, left)
                weights.append((w, entry))
                left -= w
                if left <= 0:
                    break
            logp = sum(w * entry for w, entry in weights) / sum(w for w, _ in weights)
        p = np.exp(logp - logp.max())
        p /= p.sum()
        return {c: float(v) for c, v in zip(self.classes, p)}


@dataclass(frozen=True)
class ScoringState:
    """What the scheduler (core/schedule.py) knows about a track before this frame is scored."""

    box: tuple[float, float, float, float]  # the box at its last scoring
    frames_since: int  # processed frames since then (1 = scored on the previous frame)
    times_scored: int
    label_changed: bool  # its last scoring changed a fused top label
    min_top_probability: float  # the least top probability among its fused attributes


@dataclass
class _Track:
    track_id: int
    detection: Detection
    hits: int = 1
    misses: int = 0
    fusions: dict[str, _AttributeFusion] = field(default_factory=dict)
    latest: FaceScores | None = None
    confirmed: bool = False  # set once hits reach min_hits; stays set while the track lives
    scored_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    scored_frame: int = 0
    scored_at: float = 0.0
    times_scored: int = 0
    label_changed: bool = False
    min_top_probability: float = 0.0


class FaceTracker:
    """Frame-by-frame tracker: `update(profiles)` -> the fused profiles of confirmed faces seen in this frame.

    Ids are positive integers, never reused. A face is reported from the frame of its `min_hits`-th match on
    (and on every later frame it is matched in); a track unmatched in `max_misses` consecutive frames is dropped,
    so the same person returning later gets a new id. A profile passed with `scores=None` (not scored on this
    frame, core/schedule.py) keeps its track's fused estimate and ages it.
    """

    def __init__(self, config: TrackerConfig | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else TrackerConfig(**kwargs)
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame = 0  # update() calls so far: the index of the next frame

    def reset(self) -> None:
        """Forget every track (ids keep increasing)."""
        self._tracks.clear()

    @property
    def track_ids(self) -> list[int]:
        """Ids of the confirmed tracks still alive (seen now or missed fewer than max_misses times)."""
        return [t.track_id for t in self._tracks if t.confirmed]

    def scoring_states(self, boxes: Sequence[Sequence[float]]) -> list[ScoringState | None]:
        """For each box, the scoring state of the track update() would match it to (None: a new face)."""
        pairs = self._match(boxes)
        return [None if (t := pairs.get(i)) is None else
                ScoringState(t.scored_box, self._frame - t.scored_frame, t.times_scored, t.label_changed,
                             t.min_top_probability)
                for i in range(len(boxes))]

    def update(self, profiles: Sequence[FaceProfile], now: float | None = None) -> list[FaceProfile]:
        """Match this frame's faces to the tracks, fuse their attributes and return the confirmed ones.

        now: this frame's time in seconds (default monotonic), for `seconds_since_scored`.
        """
        cfg = self.config
        now = time.monotonic() if now is None else now
        pairs = self._match([p.detection.box for p in profiles])
        matched_tracks = set()
        out: list[FaceProfile] = []
        for det_index, profile in enumerate(profiles):
            track = pairs.get(det_index)
            if track is None:
                if profile.scores is None:
                    raise ValueError("a new face must be scored on its first frame (scores=None)")
                track = _Track(track_id=self._next_id, detection=profile.detection)
                self._next_id += 1
                self._tracks.append(track)
            else:
                track.hits += 1
                track.misses = 0
                track.detection = profile.detection
            matched_tracks.add(id(track))
            if profile.scores is not None:
                self._fuse(track, profile.scores, now)
                track.scored_box = tuple(float(v) for v in profile.detection.box)  # type: ignore[assignment]
                track.scored_frame, track.scored_at = self._frame, now
            if track.hits >= cfg.min_hits:
                track.confirmed = True
            if track.confirmed:
                out.append(self._profile(track, now))
        for track in self._tracks:
            if id(track) not in matched_tracks:
                track.misses += 1
        self._tracks = [t for t in self._tracks if t.misses < cfg.max_misses]
        self._frame += 1
        return out

    def _match(self, boxes: Sequence[Sequence[float]]) -> dict[int, _Track]:
        """Greedy assignment: best overlaps first, then the closest centres among what is left."""
        cfg = self.config
        by_iou = [(iou(t.detection.box, b), ti, di) for ti, t in enumerate(self._tracks) for di, b in enumerate(boxes)]
        by_iou = sorted((c for c in by_iou if c[0] >= cfg.iou_threshold), key=lambda c: -c[0])
        used_t: set[int] = set()
        pairs: dict[int, _Track] = {}
        for _, ti, di in by_iou:
            if ti not in used_t and di not in pairs:
                used_t.add(ti)
                pairs[di] = self._tracks[ti]
        by_dist = [(center_distance(t.detection.box, b), ti, di)
                   for ti, t in enumerate(self._tracks) if ti not in used_t
                   for di, b in enumerate(boxes) if di not in pairs]
        for dist, ti, di in sorted((c for c in by_dist if c[0] <= cfg.max_center_distance), key=lambda c: c[0]):
            if ti not in used_t and di not in pairs:
                used_t.add(ti)
                pairs[di] = self._tracks[ti]
        return pairs

    def _fuse(self, track: _Track, scores: FaceScores, now: float) -> None:
        cfg = self.config
        before = {name: state.top() for name, state in track.fusions.items()}
        # the frames this scoring stands for: those since the track's previous scoring (its own if new)
        if not track.times_scored:
            frames = 1
        elif cfg.frame_rate:
            seconds = now - track.scored_at
            frames = max(1, round(seconds * cfg.frame_rate)) if math.isfinite(seconds) else 1
        else:
            frames = self._frame - track.scored_frame
        track.latest = scores
        for name, result in scores.attributes.items():
            classes = tuple(result.distribution)
            state = track.fusions.get(name)
            if state is None or state.classes != classes:  # new attribute, or its classes changed: restart
                mode = "window" if cfg.fusion == "none" else cfg.fusion
                state = _AttributeFusion(classes, mode, cfg.alpha, 1 if cfg.fusion == "none" else cfg.window,
                                         cfg.switch_margin)
                track.fusions[name] = state
            state.add(result.distribution, frames)
        for name in set(track.fusions) - set(scores.attributes):
            del track.fusions[name]
        tops = {name: state.top() for name, state in track.fusions.items()}
        track.times_scored += 1
        track.label_changed = any(before.get(name, (label, 0.0))[0] != label for name, (label, _) in tops.items())
        track.min_top_probability = min((p for _, p in tops.values()), default=1.0)

    def _profile(self, track: _Track, now: float) -> FaceProfile:
        latest = track.latest
        assert latest is not None
        attributes = {name: AttributeResult.from_distribution(track.fusions[name].distribution(),
                                                              self.config.min_confidence, track.fusions[name].label)
                      for name in latest.attributes}
        frames = max((s.frames for s in track.fusions.values()), default=1)
        # Joint top-k candidates cover only k of all descriptions, so they are not fusable: the newest frame's.
        return FaceProfile(detection=track.detection, scores=FaceScores(attributes=attributes, joint=latest.joint),
                           face_id=track.track_id, frames_fused=frames,
                           frames_since_scored=self._frame - track.scored_frame,
                           seconds_since_scored=max(0.0, now - track.scored_at))
