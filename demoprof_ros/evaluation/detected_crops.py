"""Scoring the face the product sees: detect, keep the largest face, crop it with the model's margin.

`demoprof eval` scores each test image whole, because the evaluation sets are already face crops. With
`--detect`, each image first goes through the detector chain and settings of `demoprof profile`
(PHOTO_DEFAULTS), and the crop of its largest face is scored. That is the picture the CLI and the node score.
The test crops of UTKFace and FairFace are framed differently (tight vs padded), and a model trained on one
framing can look good on it whole and still be poor on the detected crop (docs/evaluation.md, "Framing").
An image with no face found is not scored; evaluate.py counts it per group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..core.detection import PHOTO_CHAIN, build_detector, crop_face
from ..core.model_meta import crop_margin
from ..core.profiler import PHOTO_DEFAULTS


@dataclass
class FaceCropper:
    """image -> the crop of its largest face, or None where the detector finds none."""

    detector: Any
    margin: float

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        faces = self.detector.detect(image)
        if not faces:
            return None
        return crop_face(image, max(faces, key=lambda d: d.area), margin=self.margin)

    def describe(self) -> dict[str, Any]:
        return {"detector": self.detector.name, "margin": self.margin}


def build_cropper(chain: str, margin: float | str, meta: Mapping[str, Any] | None) -> FaceCropper:
    """A cropper for `chain` ('photo' = the CLI's PHOTO_CHAIN, else names as build_detector takes them).

    margin: 'auto' (the model's declared crop margin, as the profiler's default) or a number.
    """
    settings = {k: v for k, v in PHOTO_DEFAULTS.items() if k != "detectors"}
    detector = build_detector(PHOTO_CHAIN if chain == "photo" else chain, **settings)
    return FaceCropper(detector, crop_margin(margin, meta))
