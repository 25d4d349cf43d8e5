"""A scorer with chosen probabilities and small labelled image sets, for evaluation / card tests.

`FakeScorer` has the ZeroShotScorer surface evaluate.py uses (attributes, descriptions, batch_size, device,
loaded, encode_images, attribute_probs, joint_probs, joint_head, encode_ensembles). Its "embedding" of the i-th
image encoded is the number i, and its probabilities for image i are the rows given to it, so a test decides
exactly what the model "predicts" for each row of a CSV.
"""
from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from demoprof_ros.core.taxonomy import ATTRIBUTE_NAMES, CLASSES, descriptions


def one_hot_rows(attribute: str, labels, confidence: float = 0.9) -> np.ndarray:
    """Distributions putting `confidence` on each given class and the rest spread evenly."""
    classes = CLASSES[attribute]
    out = np.full((len(labels), len(classes)), (1 - confidence) / (len(classes) - 1))
    for i, label in enumerate(labels):
        out[i, classes.index(label)] = confidence
    return out


class FakeScorer:
    def __init__(self, probs: dict[str, np.ndarray], attributes=ATTRIBUTE_NAMES, meta=None):
        self.attributes = tuple(a for a in ATTRIBUTE_NAMES if a in attributes)
        self.probs = {a: np.asarray(p, dtype=float) for a, p in probs.items()}
        self.descriptions = descriptions(self.attributes)
        self.batch_size = 4
        self.attribute_scoring = "prompts"
        self.device = torch.device("cpu")
        self.loaded = SimpleNamespace(meta=dict(meta or {}), name="fake", source=None, image_size=32,
                                      model_cfg={"embed_dim": 1})
        self.encode_calls = 0
        self._next = 0

    def encode_images(self, crops):
        self.encode_calls += 1
        idx = torch.arange(self._next, self._next + len(crops), dtype=torch.float32)[:, None]
        self._next += len(crops)
        return idx

    def _rows(self, embeddings):
        return embeddings[:, 0].long().numpy()

    def attribute_probs(self, embeddings):
        rows = self._rows(embeddings)
        return {a: torch.tensor(self.probs[a][rows], dtype=torch.float32) for a in self.attributes}

    def joint_probs(self, embeddings):
        """Independent attributes: P(description) = product of its classes' probabilities."""
        per = self.attribute_probs(embeddings)
        cols = []
        for d in self.descriptions:
            p = torch.ones(embeddings.shape[0])
            for a in self.attributes:
                p = p * per[a][:, CLASSES[a].index(getattr(d, a))]
            cols.append(p)
        joint = torch.stack(cols, dim=1)
        return joint / joint.sum(dim=1, keepdim=True)

    @property
    def joint_head(self):
        return torch.ones(len(self.descriptions), 1)


def write_images(folder: Path, n: int, size: int = 40, seed: int = 0) -> list[Path]:
    """n random-noise JPEGs (not faces; nothing personal) named img_00.jpg ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:02d}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def write_labels(path: Path, rows) -> Path:
    """labels.csv with rows (file, age, gender, race); file relative to the CSV's folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "age", "gender", "race"])
        writer.writerows(rows)
    return path
