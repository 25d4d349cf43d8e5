"""Non-maximum suppression shared by the CNN back-ends: plain (MTCNN) and score-weighted (BlazeFace, tiles).

numpy only, so detection never needs torch for it; the box counts here (a few thousand at most) make a
vectorised loop over kept boxes fast enough.
"""
from __future__ import annotations

import numpy as np


def box_overlap(box: np.ndarray, boxes: np.ndarray, mode: str = "union") -> np.ndarray:
    """Overlap of one (x1, y1, x2, y2) box with each row of `boxes`: IoU ("union") or over the smaller ("min")."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 0.0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    denominator = np.minimum(area, areas) if mode == "min" else area + areas - inter
    return np.where(denominator > 0, inter / np.maximum(denominator, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices of the boxes kept, best score first; a box overlapping a kept one by more than `threshold` goes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[box_overlap(boxes[best], boxes[order], mode) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray | None,
                 threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MediaPipe's weighted NMS: each cluster (IoU > threshold with its best box) becomes the score-weighted
    mean of its boxes and key points, with the best score. Steadier boxes than plain NMS on a 48x48 anchor grid.

    boxes (N, 4), scores (N,), points (N, K, 2) or None -> the same, one row per cluster, best first.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_scores, out_points = [], [], []
    while order.size:
        inside = box_overlap(boxes[order[0]], boxes[order]) > threshold
        inside[0] = True  # a degenerate box still forms its own cluster
        cluster, order = order[inside], order[~inside]
        weights = scores[cluster] / scores[cluster].sum()
        out_boxes.append(weights @ boxes[cluster])
        out_scores.append(scores[cluster[0]])
        if points is not None:
            out_points.append(np.tensordot(weights, np.asarray(points, dtype=np.float64)[cluster], axes=1))
    n = len(out_scores)
    kept_points = None
    if points is not None:
        shape = np.asarray(points).shape[1:]
        kept_points = np.asarray(out_points).reshape((n, *shape))
    return np.asarray(out_boxes).reshape(n, 4), np.asarray(out_scores), kept_points
