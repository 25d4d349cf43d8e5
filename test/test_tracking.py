"""Face tracking and temporal fusion with constructed detections (no model, no images)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from demoprof_ros.core.results import UNDETERMINED, AttributeResult, Detection, FaceProfile, FaceScores, JointCandidate
from demoprof_ros.core.taxonomy import GENDERS, RACES
from demoprof_ros.core.tracking import FaceTracker, TrackerConfig, center_distance, iou


def face(x: float, y: float, size: float = 40.0, gender: dict | None = None, race: dict | None = None) -> FaceProfile:
    attributes = {}
    for name, dist in (("gender", gender), ("race", race)):
        if dist is not None:
            attributes[name] = AttributeResult.from_distribution(dist, 0.4)
    joint = [JointCandidate({"gender": "Male"}, "a man", 0.5)]
    return FaceProfile(Detection((x, y, x + size, y + size), 0.9), FaceScores(attributes, joint))


def even_gender() -> dict:
    return {"Male": 0.5, "Female": 0.5}


def test_box_geometry() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert center_distance((0, 0, 30, 40), (30, 40, 60, 80)) == pytest.approx(1.0)


def test_ids_stable_while_faces_move() -> None:
    tracker = FaceTracker(min_hits=1, max_misses=3)
    ids_a, ids_b = set(), set()
    for step in range(20):
        # two faces walking towards each other: A moves right 6 px/frame, B left; never overlapping
        out = tracker.update([face(10 + 6 * step, 50, gender=even_gender()),
                              face(400 - 6 * step, 60, gender=even_gender())])
        assert len(out) == 2
        ids_a.add(out[0].face_id)
        ids_b.add(out[1].face_id)
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_fast_move_matched_by_centre_distance() -> None:
    tracker = FaceTracker(min_hits=1, iou_threshold=0.5, max_center_distance=0.6)
    first = tracker.update([face(100, 100, gender=even_gender())])[0].face_id
    moved = tracker.update([face(125, 100, gender=even_gender())])[0]  # IoU 0.23 < 0.5, centre 0.44 diag
    assert moved.face_id == first
    jumped = tracker.update([face(300, 100, gender=even_gender())])[0]  # far away: somebody else
    assert jumped.face_id != first


def test_order_of_detections_does_not_swap_ids() -> None:
    tracker = FaceTracker(min_hits=1)
    out = tracker.update([face(0, 0, gender=even_gender()), face(200, 0, gender=even_gender())])
    left, right = out[0].face_id, out[1].face_id
    out = tracker.update([face(202, 1, gender=even_gender()), face(2, 1, gender=even_gender())])  # listed swapped
    assert [p.face_id for p in out] == [right, left]


@pytest.mark.parametrize("min_hits", [1, 2, 4])
def test_reported_from_the_min_hits_th_frame(min_hits: int) -> None:
    tracker = FaceTracker(min_hits=min_hits, max_misses=5)
    reported = [bool(tracker.update([face(50, 50, gender=even_gender())])) for _ in range(6)]
    assert reported == [i + 1 >= min_hits for i in range(6)]


@pytest.mark.parametrize("max_misses", [1, 2, 5])
def test_dropped_after_max_misses(max_misses: int) -> None:
    tracker = FaceTracker(min_hits=1, max_misses=max_misses)
    first = tracker.update([face(50, 50, gender=even_gender())])[0].face_id
    # absent for max_misses - 1 frames: still alive, comes back with the same id
    for _ in range(max_misses - 1):
        assert tracker.update([]) == []
        assert tracker.track_ids == [first]
    assert tracker.update([face(52, 50, gender=even_gender())])[0].face_id == first
    # absent for max_misses frames: gone, comes back as somebody new
    for _ in range(max_misses):
        tracker.update([])
    assert tracker.track_ids == []
    again = tracker.update([face(52, 50, gender=even_gender())])[0]
    assert again.face_id != first and again.frames_fused == 1


def test_unconfirmed_track_not_listed() -> None:
    tracker = FaceTracker(min_hits=3)
    tracker.update([face(0, 0, gender=even_gender())])
    assert tracker.track_ids == []


def noisy_gender(rng: np.random.Generator, p_male: float = 0.65, noise: float = 0.2) -> dict:
    p = float(np.clip(p_male + rng.normal(0, noise), 0.02, 0.98))
    return {"Male": p, "Female": 1 - p}


@pytest.mark.parametrize("mode, kwargs", [("ema", {"alpha": 0.2}), ("window", {"window": 8})])
def test_fusion_steadier_and_converges(mode: str, kwargs: dict) -> None:
    rng = np.random.default_rng(1)
    tracker = FaceTracker(min_hits=1, fusion=mode, **kwargs)
    raw, fused = [], []
    for step in range(200):
        obs = noisy_gender(rng)
        out = tracker.update([face(100 + step % 3, 100, gender=obs)])[0]
        raw.append(obs["Male"])
        fused.append(out.scores.attributes["gender"].distribution["Male"])
    raw_a, fused_a = np.array(raw[20:]), np.array(fused[20:])
    assert fused_a.std() < 0.5 * raw_a.std()
    # The fused (normalised geometric-mean) distribution sits where the per-frame log-odds average points.
    mean_logit = np.mean(np.log(np.clip(raw_a, 0.02, 0.98)) - np.log(np.clip(1 - raw_a, 0.02, 0.98)))
    assert abs(np.mean(fused_a) - 1 / (1 + math.exp(-mean_logit))) < 0.05
    # labels flip less often than the per-frame arg-max
    flips = lambda xs: int(np.sum(np.diff(np.array(xs) > 0.5)))  # noqa: E731
    assert flips(fused) < flips(raw)


def test_window_is_exact_mean_of_log_probs() -> None:
    tracker = FaceTracker(min_hits=1, fusion="window", window=2)
    tracker.update([face(0, 0, gender={"Male": 0.9, "Female": 0.1})])
    tracker.update([face(0, 0, gender={"Male": 0.2, "Female": 0.8})])
    out = tracker.update([face(0, 0, gender={"Male": 0.6, "Female": 0.4})])[0]  # window now holds 0.2 and 0.6
    male = math.sqrt(0.2 * 0.6)
    female = math.sqrt(0.8 * 0.4)
    assert out.scores.attributes["gender"].distribution["Male"] == pytest.approx(male / (male + female))
    assert out.frames_fused == 2


@pytest.mark.parametrize("alpha", [0.5, 0.1])
def test_ema_is_normalised_and_weights_newest_by_alpha(alpha: float) -> None:
    # Weights (1 - alpha) and 1 on the two frames: the mean of what was seen, not the first frame's estimate
    tracker = FaceTracker(min_hits=1, fusion="ema", alpha=alpha, switch_margin=0.0)
    tracker.update([face(0, 0, gender={"Male": 0.9, "Female": 0.1})])
    out = tracker.update([face(0, 0, gender={"Male": 0.3, "Female": 0.7})])[0]
    w = (1 - alpha) / (2 - alpha)
    male, female = 0.9 ** w * 0.3 ** (1 - w), 0.1 ** w * 0.7 ** (1 - w)
    assert out.scores.attributes["gender"].distribution["Male"] == pytest.approx(male / (male + female))
    assert out.frames_fused == 2


def unscored(x: float, y: float, size: float = 40.0) -> FaceProfile:
    return FaceProfile(Detection((x, y, x + size, y + size), 0.9), None)  # type: ignore[arg-type]


@pytest.mark.parametrize("frame_rate", [30.0, 0.0])
@pytest.mark.parametrize("skipped", [1, 5, 15])
@pytest.mark.parametrize("settings", [{"fusion": "ema", "alpha": 0.1}, {"fusion": "ema", "alpha": 0.02},
                                      {"fusion": "window", "window": 8}, {"fusion": "window", "window": 60}],
                         ids=["ema0.1", "ema0.02", "window8", "window60"])
def test_memory_counts_frames_not_scorings(settings: dict, skipped: int, frame_rate: float) -> None:
    # A scoring after `skipped` unscored frames stands for them: the same estimate as scoring every frame with
    # the newer distribution over those frames (what the schedule assumes when it reuses a profile).
    a, b = {"Male": 0.8, "Female": 0.2}, {"Male": 0.3, "Female": 0.7}
    sparse = FaceTracker(min_hits=1, frame_rate=frame_rate, **settings)
    dense = FaceTracker(min_hits=1, frame_rate=frame_rate, **settings)
    t = 0
    for _ in range(3):
        sparse.update([face(0, 0, gender=a)], now=t / 30)
        dense.update([face(0, 0, gender=a)], now=t / 30)
        t += 1
    for _ in range(skipped - 1):
        held = sparse.update([unscored(0, 0)], now=t / 30)[0]
        assert held.frames_since_scored > 0
        dense.update([face(0, 0, gender=b)], now=t / 30)
        t += 1
    got = sparse.update([face(0, 0, gender=b)], now=t / 30)[0].scores.attributes["gender"].distribution["Male"]
    want = dense.update([face(0, 0, gender=b)], now=t / 30)[0].scores.attributes["gender"].distribution["Male"]
    assert got == pytest.approx(want)


@pytest.mark.parametrize("settings", [{"fusion": "ema", "alpha": 0.1}, {"fusion": "window", "window": 12}],
                         ids=["ema", "window"])
def test_frames_the_node_dropped_count_at_frame_rate(settings: dict) -> None:
    # A node that keeps up with only every third frame of a 30 Hz camera should fuse the same seconds as one that
    # processes every frame; counting processed frames instead (frame_rate 0) remembers 3x longer.
    dists = [{"Male": 0.9, "Female": 0.1}] * 30 + [{"Male": 0.2, "Female": 0.8}] * 30  # a change 1 s in

    def male(tracker: FaceTracker, frames: range) -> float:
        for i in frames:
            out = tracker.update([face(0, 0, gender=dists[i])], now=i / 30)
        return out[0].scores.attributes["gender"].distribution["Male"]

    every = male(FaceTracker(min_hits=1, **settings), range(len(dists)))
    by_time = male(FaceTracker(min_hits=1, **settings), range(2, len(dists), 3))
    by_count = male(FaceTracker(min_hits=1, frame_rate=0.0, **settings), range(2, len(dists), 3))
    assert abs(by_time - every) < 0.5 * abs(by_count - every)


@pytest.mark.parametrize("fusion, lead, flips", [("ema", 0.505, 0), ("ema", 0.6, 0), ("window", 0.505, 0),
                                                 ("window", 0.6, 0), ("none", 0.505, 0), ("none", 0.6, 59)])
def test_borderline_face_label_does_not_flip_every_frame(fusion: str, lead: float, flips: int) -> None:
    # A face between two classes whose per-frame estimate alternates sides. With the default settings the fused
    # estimate stays within switch_margin of a tie, so the published label holds; only fusion "none" with a swing
    # wider than the margin follows the frames.
    tracker = FaceTracker(min_hits=1, fusion=fusion)
    tops = []
    for step in range(60):
        male = lead if step % 2 == 0 else 1 - lead
        tops.append(tracker.update([face(0, 0, gender={"Male": male, "Female": 1 - male})])[0]
                    .scores.attributes["gender"].top)
    assert sum(x != y for x, y in zip(tops, tops[1:])) == flips
    assert tops[0] == "Male"


def test_label_switches_once_another_class_beats_it_by_the_margin() -> None:
    tracker = FaceTracker(min_hits=1, fusion="none", switch_margin=0.1, min_confidence=0.5)
    res = lambda male: tracker.update([face(0, 0, gender={"Male": male, "Female": 1 - male})])[0] \
        .scores.attributes["gender"]  # noqa: E731
    assert res(0.6).top == "Male"
    held = res(0.46)  # Female ahead by 0.08 < 0.1: Male held, and below the confidence bar
    assert (held.top, held.label, held.undetermined) == ("Male", UNDETERMINED, True)
    assert held.probability == pytest.approx(0.46)
    switched = res(0.44)  # ahead by 0.12
    assert (switched.top, switched.label, switched.probability) == ("Female", "Female", pytest.approx(0.56))
    assert FaceTracker(min_hits=1, fusion="none", switch_margin=0.0).update(
        [face(0, 0, gender={"Male": 0.49, "Female": 0.51})])[0].scores.attributes["gender"].top == "Female"


def test_none_mode_passes_frames_through() -> None:
    tracker = FaceTracker(min_hits=1, fusion="none")
    tracker.update([face(0, 0, gender={"Male": 0.9, "Female": 0.1})])
    out = tracker.update([face(0, 0, gender={"Male": 0.3, "Female": 0.7})])[0]
    assert out.scores.attributes["gender"].distribution["Male"] == pytest.approx(0.3)
    assert out.frames_fused == 1


def test_confidence_bar_applies_to_fused_result() -> None:
    tracker = FaceTracker(min_hits=1, fusion="window", window=4, min_confidence=0.6)
    race = {r: (0.55 if r == "White" else 0.45 / (len(RACES) - 1)) for r in RACES}
    out = tracker.update([face(0, 0, race=race)])[0].scores.attributes["race"]
    assert out.undetermined and out.label == UNDETERMINED and out.top == "White"
    confident = {r: (0.9 if r == "White" else 0.1 / (len(RACES) - 1)) for r in RACES}
    for _ in range(3):
        out = tracker.update([face(0, 0, race=confident)])[0].scores.attributes["race"]
    assert not out.undetermined and out.label == "White"


def test_output_keeps_detection_joint_and_attribute_set() -> None:
    tracker = FaceTracker(min_hits=1)
    src = face(5, 6, gender={g: 1 / len(GENDERS) for g in GENDERS}, race={r: 1 / len(RACES) for r in RACES})
    out = tracker.update([src])[0]
    assert out.detection is src.detection and out.scores.joint == src.scores.joint
    assert set(out.scores.attributes) == {"gender", "race"}
    d = out.to_dict()
    assert d["id"] == out.face_id and d["frames_fused"] == 1
    # an attribute switched off later disappears from the fused output
    out = tracker.update([face(5, 6, gender=even_gender())])[0]
    assert set(out.scores.attributes) == {"gender"}


@pytest.mark.parametrize("bad", [{"min_hits": 0}, {"max_misses": 0}, {"fusion": "median"}, {"alpha": 0.0},
                                 {"window": 0}, {"iou_threshold": 1.5}, {"min_confidence": 2}, {"min_hits": True},
                                 {"switch_margin": 1.0}, {"switch_margin": -0.1}, {"switch_margin": "0.1"}])
def test_config_rejects_bad_values(bad: dict) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"tracking.{name}"):
        TrackerConfig(**bad)


def test_config_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown tracking settings \\['speed'\\]"):
        TrackerConfig.from_dict({"speed": 3})
    assert TrackerConfig.from_dict({"fusion": "window", "window": 3}).window == 3
