"""Track-aware scheduling (core/schedule.py): which faces the model scores, with constructed tracks (no model)."""
from __future__ import annotations

import numpy as np
import pytest

from demoprof_ros.core.results import AttributeResult, Detection, FaceScores
from demoprof_ros.core.schedule import ScheduleConfig, TrackedProfiler, choose, reason_to_score
from demoprof_ros.core.tracking import FaceTracker, ScoringState, TrackerConfig

BOX = (100.0, 100.0, 160.0, 160.0)


def state(frames_since: int = 1, times_scored: int = 5, label_changed: bool = False, top: float = 0.9,
          box=BOX) -> ScoringState:
    return ScoringState(box, frames_since, times_scored, label_changed, top)


@pytest.mark.parametrize("st, box, expected", [
    (None, BOX, "new"),
    (state(), BOX, None),  # settled, not moved, not due: its fused profile is reused
    (state(frames_since=14), BOX, None),
    (state(frames_since=15), BOX, "refresh"),  # refresh_frames = 15
    (state(), (130.0, 100.0, 190.0, 160.0), "moved"),  # moved half a box: IoU 0.33 < 0.6
    (state(), (95.0, 95.0, 175.0, 175.0), "moved"),  # 1.33x larger (came closer)
    (state(), (102.0, 101.0, 162.0, 161.0), None),  # jitter of a couple of pixels
    (state(times_scored=2, frames_since=3), BOX, "unsettled"),  # fewer than min_scores = 3
    (state(times_scored=2, frames_since=2), BOX, None),  # unsettled_frames = 3: not yet
    (state(top=0.45, frames_since=3), BOX, "unsettled"),  # below stable_confidence 0.5
    (state(label_changed=True, frames_since=3), BOX, "unsettled"),
])
def test_reason_to_score(st: ScoringState | None, box, expected: str | None) -> None:
    assert reason_to_score(ScheduleConfig(), st, box) == expected


def test_disabled_scores_every_face() -> None:
    cfg = ScheduleConfig(enabled=False, max_scored_per_frame=1)
    assert choose(cfg, [state(), state(), None], [BOX, BOX, BOX]) == [0, 1, 2]


@pytest.mark.parametrize("cap, expected", [(1, [0, 3]), (2, [0, 2, 3]), (0, [0, 1, 2, 3])])
def test_cap_serves_new_then_most_urgent_oldest_first(cap: int, expected: list[int]) -> None:
    cfg = ScheduleConfig(max_scored_per_frame=cap)
    states = [None, state(frames_since=15), state(frames_since=20), state()]
    boxes = [BOX, BOX, BOX, (130.0, 100.0, 190.0, 160.0)]  # 3 moved: more urgent than the two refreshes
    assert choose(cfg, states, boxes) == expected


def test_new_faces_are_scored_beyond_the_cap() -> None:
    assert choose(ScheduleConfig(max_scored_per_frame=1), [None, None, None], [BOX] * 3) == [0, 1, 2]


@pytest.mark.parametrize("settings, name", [
    ({"refresh_frames": 0}, "schedule.refresh_frames"),
    ({"max_scored_per_frame": -1}, "schedule.max_scored_per_frame"),
    ({"rescore_iou": 1.5}, "schedule.rescore_iou"),
    ({"rescore_scale": 0.5}, "schedule.rescore_scale"),
    ({"stable_confidence": float("nan")}, "schedule.stable_confidence"),
    ({"enabled": "yes"}, "schedule.enabled"),
    ({"min_scores": 1.5}, "schedule.min_scores"),
    ({"refesh_frames": 3}, "unknown schedule settings ['refesh_frames']"),
])
def test_bad_settings_named(settings: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name.replace(".", r"\.").replace("[", r"\[")):
        ScheduleConfig.from_dict(settings)


class FakeProfiler:
    """detect() returns the scripted boxes; score() counts the faces it is asked to score."""

    def __init__(self, frames: list[list[tuple[float, float, float, float]]], male: float = 0.9) -> None:
        self.frames = iter(frames)
        self.male = male
        self.scored: list[int] = []

    def detect(self, image):
        return image, [Detection(box, 0.9) for box in next(self.frames)]

    def score(self, frame, detections):
        self.scored.append(len(detections))
        dist = {"Male": self.male, "Female": 1.0 - self.male}
        return [FaceScores({"gender": AttributeResult.from_distribution(dist, 0.4)}) for _ in detections]


def shifted(box, dx: float):
    return (box[0] + dx, box[1], box[2] + dx, box[3])


@pytest.mark.parametrize("faces", [1, 4])
def test_every_face_published_every_frame_with_its_age(faces: int) -> None:
    boxes = [shifted(BOX, 200 * i) for i in range(faces)]
    frames = 40
    fake = FakeProfiler([[shifted(b, 0.5 * (f % 3)) for b in boxes] for f in range(frames)])
    pipeline = TrackedProfiler(fake, FaceTracker(TrackerConfig(min_hits=1)), ScheduleConfig())
    ages = []
    for f in range(frames):
        out = pipeline(None, now=f / 30.0)
        assert len(out) == faces and {p.face_id for p in out} == set(range(1, faces + 1))
        assert all(set(p.scores.attributes) == {"gender"} for p in out)
        ages += [p.frames_since_scored for p in out]
        for p in out:
            assert p.seconds_since_scored == pytest.approx(p.frames_since_scored / 30.0)
    assert fake.scored[0] == faces  # the first frame: every face is new
    assert max(fake.scored[1:]) <= 1  # then at most max_scored_per_frame = 1
    assert pipeline.faces_scored == sum(fake.scored) < frames * faces / 3
    assert pipeline.faces_tracked == frames * faces
    assert max(ages) <= 15 + faces and 0 in ages  # refreshes come round (staggered by the cap)


def test_disabled_pipeline_scores_every_face_every_frame() -> None:
    fake = FakeProfiler([[BOX, shifted(BOX, 200)]] * 10)
    pipeline = TrackedProfiler(fake, FaceTracker(TrackerConfig(min_hits=1)), ScheduleConfig(enabled=False))
    for f in range(10):
        assert [p.frames_since_scored for p in pipeline(None, now=float(f))] == [0, 0]
    assert fake.scored == [2] * 10


def test_big_box_change_rescores_at_once() -> None:
    frames = [[BOX]] * 20 + [[(90.0, 90.0, 180.0, 180.0)]]  # came 1.5x closer
    fake = FakeProfiler(frames)
    pipeline = TrackedProfiler(fake, FaceTracker(TrackerConfig(min_hits=1)), ScheduleConfig(refresh_frames=100))
    for _ in range(20):
        pipeline(None)
    before = pipeline.faces_scored
    assert pipeline(None)[0].frames_since_scored == 0 and pipeline.faces_scored == before + 1


@pytest.mark.parametrize("male, scored", [(0.9, 3), (0.45, 10)])  # 10 frames, unsettled_frames 2 -> every other
def test_unconfident_faces_are_scored_more_often(male: float, scored: int) -> None:
    fake = FakeProfiler([[BOX]] * 20, male=male)
    cfg = ScheduleConfig(refresh_frames=100, min_scores=3, unsettled_frames=2, stable_confidence=0.6)
    pipeline = TrackedProfiler(fake, FaceTracker(TrackerConfig(min_hits=1)), cfg)
    for _ in range(20):
        pipeline(None)
    assert pipeline.faces_scored == scored


class NoisyProfiler(FakeProfiler):
    """A face whose per-frame race estimate is softmax(`logits` + noise): the same draw for frame i in every run."""

    def __init__(self, frames, logits: list[float], noise: float, seed: int) -> None:
        super().__init__(frames)
        rng = np.random.default_rng(seed)
        z = np.array(logits) + rng.normal(0.0, noise, (len(frames), len(logits)))
        self.draws = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        self.index = -1

    def detect(self, image):
        self.index += 1
        return super().detect(image)

    def score(self, frame, detections):
        self.scored.append(len(detections))
        dist = {f"class{j}": float(p) for j, p in enumerate(self.draws[self.index])}
        return [FaceScores({"race": AttributeResult.from_distribution(dist, 0.4)}) for _ in detections]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("noise", [0.5, 0.8])
def test_scheduled_and_every_frame_labels_agree(noise: float, seed: int) -> None:
    # A face leaning to one of four classes but noisy frame to frame, its fused top probability under
    # stable_confidence (the shipped model's race head on some FairFace faces): both runs fuse the same span of
    # frames, so after the first second they publish the same label although the schedule scores a third of them.
    frames = 300
    boxes = [[shifted(BOX, 0.5 * (f % 3))] for f in range(frames)]
    tops = {}
    for enabled in (True, False):
        fake = NoisyProfiler(boxes, [0.6, 0.0, 0.0, 0.0], noise, seed)
        pipeline = TrackedProfiler(fake, FaceTracker(TrackerConfig(min_hits=1)), ScheduleConfig(enabled=enabled))
        tops[enabled] = [pipeline(None, now=f / 30.0)[0].scores.attributes["race"].top for f in range(frames)]
        assert pipeline.faces_scored <= (frames / 2.5 if enabled else frames)
    same = sum(a == b for a, b in zip(tops[True][30:], tops[False][30:])) / (frames - 30)
    assert same >= 0.99
    assert tops[False][30:].count("class0") == frames - 30


def test_unscored_new_face_is_refused() -> None:
    from demoprof_ros.core.results import FaceProfile

    with pytest.raises(ValueError, match="new face must be scored"):
        FaceTracker().update([FaceProfile(Detection(BOX, 0.9), None)])  # type: ignore[arg-type]
