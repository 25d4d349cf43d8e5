"""BlazeFace on LiteRT (the fast path) against OpenCV dnn (the reference and fallback): same faces on real
photos, a clear fallback when LiteRT is missing, threads that follow cv2.setNumThreads."""
from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from demoprof_ros.core.detection import BlazeFaceDetector, DetectorUnavailable, build_detector, find_blazeface
from demoprof_ros.core.detection.tflite_runner import LiteRTRunner, OpenCVRunner, load_tflite
from demoprof_ros.core.images import load_image

PHOTOS = Path(__file__).parent / "data" / "group_photos"
FACE_BOXES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "face_boxes" / "images"

try:
    MODEL = find_blazeface()
    MISSING = ""
except DetectorUnavailable as error:
    MISSING = str(error)
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"BlazeFace model not installed: {MISSING}")
needs_litert = pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert not installed (requirements-detect.txt)")


def _photos() -> list[tuple[str, int]]:
    found = [(str(PHOTOS / "obama_family_2011.jpg"), 0), (str(PHOTOS / "obama_family_2011.jpg"), 2),
             (str(PHOTOS / "solvay_conference_1927.jpg"), 2)]
    return found + [(str(p), 0) for p in sorted(FACE_BOXES.glob("*.jpg"))]  # the annotated set, where present


@needs_litert
@pytest.mark.parametrize("photo, tiles", _photos(), ids=lambda v: Path(str(v)).name)
def test_litert_finds_the_same_faces_as_opencv(photo, tiles):
    image = load_image(photo)
    settings = dict(min_face_size=12, max_faces=100, max_side=1920, tiles=tiles)
    fast = BlazeFaceDetector(runtime="litert", **settings).detect(image)
    reference = BlazeFaceDetector(runtime="opencv", **settings).detect(image)
    assert len(fast) == len(reference)
    if "obama" in photo:
        assert len(fast) == 4
    for a, b in zip(fast, reference):
        np.testing.assert_allclose(a.box, b.box, atol=0.05)  # pixels
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
        assert abs(a.score - b.score) < 1e-4


@needs_litert
def test_auto_picks_litert_and_says_so(capture_log):
    caplog = capture_log("demoprof_ros.core.detection", logging.INFO)
    detector = build_detector(("blazeface",))
    assert isinstance(detector.runner, LiteRTRunner)
    assert "face detector: blazeface" in caplog.text and "on LiteRT " in caplog.text


def test_falls_back_to_opencv_with_a_warning(monkeypatch, capture_log):
    caplog = capture_log("demoprof_ros.core.detection", logging.INFO)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails, as without the wheel
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    detector = build_detector(("blazeface", "haar"))
    assert detector.name == "blazeface" and isinstance(detector.runner, OpenCVRunner)
    assert "ai-edge-litert is not installed" in caplog.text and "on OpenCV dnn" in caplog.text
    assert any(r.levelno == logging.WARNING and "instead" in r.getMessage() for r in caplog.records)
    assert "ai-edge-litert is not installed" in detector.source
    assert len(detector.detect(load_image(PHOTOS / "obama_family_2011.jpg"))) == 4
    with pytest.raises(DetectorUnavailable, match="ai-edge-litert is not installed"):
        BlazeFaceDetector(runtime="litert")


@needs_litert
def test_threads_follow_opencv(monkeypatch):
    runner = load_tflite(MODEL, "litert")
    frame = np.random.default_rng(0).uniform(-1, 1, (1, 192, 192, 3)).astype(np.float32)
    before = cv2.getNumThreads()
    try:
        results = []
        for threads in (2, 1):
            cv2.setNumThreads(threads)
            results.append(runner(frame))
            assert runner._threads == threads
    finally:
        cv2.setNumThreads(before)
    for name in results[0]:
        np.testing.assert_allclose(results[0][name], results[1][name], atol=1e-4)


@pytest.mark.parametrize("runtime", ["litert", "opencv", "auto"])
def test_broken_model_is_unavailable_on_every_runtime(tmp_path, runtime):
    if runtime == "litert" and not HAS_LITERT:
        pytest.skip("ai-edge-litert not installed")
    bad = tmp_path / "face_detection_full_range.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(DetectorUnavailable, match="cannot load"):
        BlazeFaceDetector(bad, runtime=runtime)


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="runtime: expected one of auto, litert, opencv"):
        BlazeFaceDetector(runtime="tensorflow")
