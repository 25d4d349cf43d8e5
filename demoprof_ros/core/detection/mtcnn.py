"""MTCNN (Zhang et al. 2016) with the weights that the `facenet-pytorch` wheel ships: no download, 5 landmarks.

Accurate on small and tilted faces (a cascade of three small CNNs over an image pyramid), slow on a CPU
(hundreds of ms per 640x480 frame: docs/performance.md), hence the CLI's default and not the node's.
The wheel goes in with `pip install --no-deps -r requirements-detect.txt` (its metadata pins torch < 2.3);
only its weight files are read (mtcnn_nets.py says why its code is not imported).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from .base import DetectorUnavailable, FaceDetector, RawDetection
from .nms import nms

WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
_INSTALL = "pip install --no-deps -r requirements-detect.txt (make venv does)"


def find_mtcnn_weights() -> Path:
    """facenet_pytorch/data in the installed wheel, found without importing the package (see mtcnn_nets)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailable(f"facenet-pytorch is not installed ({_INSTALL})")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [name for name in WEIGHT_FILES if not (folder / name).is_file()]
    if missing:
        raise DetectorUnavailable(f"{folder}: MTCNN weights {', '.join(missing)} missing (reinstall: {_INSTALL})")
    return folder


class MtcnnDetector(FaceDetector):
    """MTCNN: P-Net proposals over a pyramid, R-Net and O-Net refine; O-Net gives the 5 landmarks.

    thresholds: face probability each stage needs (the paper's / facenet-pytorch's 0.6, 0.7, 0.7); the
    O-Net probability is the reported score, which score_threshold then filters. factor: pyramid step.
    Landmarks come in the ArcFace order crop.py uses (image-left eye, image-right eye, nose, mouth corners).
    """

    name = "mtcnn"
    has_landmarks = True

    def __init__(self, weights_dir: str | Path | None = None, *, thresholds: tuple[float, float, float] =
                 (0.6, 0.7, 0.6), factor: float = 0.709, **settings: Any) -> None:
        super().__init__(**settings)
        if not 0.0 < factor < 1.0 or len(thresholds) != 3:
            raise ValueError(f"factor must be in (0, 1) and thresholds 3 numbers, got {factor!r}, {thresholds!r}")
        folder = Path(weights_dir) if weights_dir else find_mtcnn_weights()
        try:
            import torch

            from .mtcnn_nets import load_networks
        except ImportError as error:
            raise DetectorUnavailable(f"torch is not installed ({error})") from error
        try:
            self.pnet, self.rnet, self.onet = load_networks(folder)
        except Exception as error:  # torch raises several types for a missing / truncated / foreign file
            raise DetectorUnavailable(f"{folder}: cannot load the MTCNN weights ({type(error).__name__}: "
                                      f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})"
                                      ) from error
        self._torch = torch
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.source = str(folder)

    def _run(self, net: Any, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        with self._torch.inference_mode():
            outputs = net(self._torch.from_numpy(batch))
        return tuple(o.numpy() for o in outputs)

    def _detect(self, image: np.ndarray, min_size: float) -> Iterable[RawDetection]:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32)
        rgb = (rgb - 127.5) * 0.0078125
        boxes = self._propose(rgb, max(float(min_size), 12.0))
        if len(boxes):
            boxes = self._refine(rgb, boxes)
        if not len(boxes):
            return []
        boxes, scores, points = self._output(rgb, boxes)
        return [(box, score, pts) for box, score, pts in zip(boxes, scores, points)]

    def _propose(self, rgb: np.ndarray, min_size: float) -> np.ndarray:
        """Stage 1: P-Net over the pyramid -> square candidate boxes (N, 4) in image pixels."""
        height, width = rgb.shape[:2]
        scale, found = 12.0 / min_size, []
        while min(height, width) * scale >= 12:
            size = (max(12, int(np.ceil(width * scale))), max(12, int(np.ceil(height * scale))))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            level = cv2.resize(rgb, size, interpolation=interpolation)
            offsets, probs = self._run(self.pnet, level.transpose(2, 0, 1)[None].copy())
            ys, xs = np.nonzero(probs[0, 1] >= self.thresholds[0])
            if ys.size:
                sx, sy = width / size[0], height / size[1]  # the true scale of this level, per axis
                cells = np.stack([xs * 2 * sx, ys * 2 * sy, (xs * 2 + 12) * sx, (ys * 2 + 12) * sy], axis=1)
                level_boxes = np.concatenate([cells, probs[0, 1, ys, xs, None],
                                              offsets[0][:, ys, xs].T], axis=1)
                found.append(level_boxes[nms(level_boxes[:, :4], level_boxes[:, 4], 0.5)])
            scale *= self.factor
        if not found:
            return np.zeros((0, 4))
        candidates = np.concatenate(found)
        candidates = candidates[nms(candidates[:, :4], candidates[:, 4], 0.7)]
        return _square(_regress(candidates[:, :4], candidates[:, 5:9]))

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24x24 crops keeps the faces and corrects their boxes."""
        offsets, probs = self._run(self.rnet, _crops(rgb, boxes, 24))
        keep = probs[:, 1] > self.thresholds[1]
        boxes, scores, offsets = boxes[keep], probs[keep, 1], offsets[keep]
        order = nms(boxes, scores, 0.7)
        return _square(_regress(boxes[order], offsets[order]))

    def _output(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: O-Net on 48x48 crops: final score, box and 5 landmarks; overlapping faces merged ("min")."""
        offsets, marks, probs = self._run(self.onet, _crops(rgb, boxes, 48))
        keep = probs[:, 1] > self.thresholds[2]
        boxes, offsets, marks, scores = boxes[keep], offsets[keep], marks[keep], probs[keep, 1]
        w, h = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
        points = np.stack([boxes[:, :1] + marks[:, :5] * w, boxes[:, 1:2] + marks[:, 5:] * h], axis=2)
        boxes = _regress(boxes, offsets)
        order = nms(boxes, scores, 0.7, mode="min")
        return boxes[order], scores[order], points[order].astype(np.float32)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply MTCNN's box offsets (fractions of the box side) to (N, 4) boxes."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes + offsets * size


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square on its centre, as the next stage's input is square."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _crops(rgb: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """(N, 3, side, side) crops of the normalised image; parts outside it are 0 (mid-grey), as in MTCNN."""
    height, width = rgb.shape[:2]
    out = np.zeros((len(boxes), 3, side, side), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
        w, h = max(x2 - x1, 1), max(y2 - y1, 1)
        patch = np.zeros((h, w, 3), np.float32)
        ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if ix2 > ix1 and iy2 > iy1:
            patch[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1] = rgb[iy1:iy2, ix1:ix2]
        interpolation = cv2.INTER_AREA if w > side else cv2.INTER_LINEAR
        out[i] = cv2.resize(patch, (side, side), interpolation=interpolation).transpose(2, 0, 1)
    return out
