"""The pipeline a robot runs per frame: detect faces, crop them, score them in one batch.

`ProfilerConfig` is the one place settings are named, typed and checked, so the CLI, the ROS node (whose
parameters map 1:1 onto these fields) and notebooks fail the same way on a bad value. Its defaults are the
node's (live video: a detector that keeps up with 30 Hz on a CPU, a few large faces); PHOTO_DEFAULTS is what
`demoprof profile` changes for photos, folders and videos (the most accurate detector, many small faces).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .detection import DEFAULT_CHAIN, DEFAULT_MAX_SIDE, PHOTO_CHAIN, available_backends, build_detector, crop_face
from .images import to_bgr8
from .model_meta import DEFAULT_CROP_MARGIN, MAX_CROP_MARGIN, crop_margin
from .models import load_model
from .prompts import load_prompts, prompts_from_dict
from .results import Detection, DetectionDrops, FaceProfile, FaceScores
from .scorer import ZeroShotScorer, validate_attributes
from .taxonomy import ATTRIBUTE_NAMES
from .text_cache import TextEmbeddingCache

DTYPES = ("fp32", "fp16", "bf16")
DETECTORS = available_backends()  # scrfd, yunet, mtcnn, blazeface, haar

#: What `demoprof profile` (photos, folders, videos) changes from the node's defaults. MTCNN: the most accurate
#: detector that needs no download; faces down to 12 px (a 29-person photo at 660 px has faces of 16-21 px),
#: up to 64 of them, on frames up to 1920 px (a 2400 px group photo keeps its ~35 px faces at ~28 px).
PHOTO_DEFAULTS: dict[str, Any] = {"detectors": PHOTO_CHAIN, "min_face_size": 12, "max_faces": 64,
                                  "max_side": 1920, "tiles": 2}
_log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A setting with a wrong name, type or value; the message names the setting."""


@dataclass
class ProfilerConfig:
    """Every setting of the per-frame pipeline (config/profiler.yaml documents each one)."""

    model: str = "auto"
    models_dir: str = ""
    device: str = "cpu"
    dtype: str = "fp32"
    attributes: tuple[str, ...] = ATTRIBUTE_NAMES
    min_confidence: float = 0.4
    joint_top_k: int = 3
    prompts_file: str = ""
    detectors: tuple[str, ...] = DEFAULT_CHAIN
    scrfd_path: str = ""
    yunet_path: str = ""
    detection_threshold: float = 0.5
    min_face_size: int = 24
    max_faces: int = 8
    max_side: int = DEFAULT_MAX_SIDE
    tiles: int = 0
    margin: float | str = "auto"
    align: bool = False
    batch_size: int = 16
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def check(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {getattr(self, name)!r}")

        check(isinstance(self.model, str) and self.model != "", "model",
              "'auto', 'farl', 'clip', 'tiny' or a checkpoint path")
        check(self.dtype in DTYPES, "dtype", f"one of {DTYPES}")
        check(isinstance(self.device, str) and (self.device == "cpu" or self.device.startswith("cuda")),
              "device", "'cpu', 'cuda' or 'cuda:N'")
        try:
            self.attributes = validate_attributes(list(self.attributes))
        except ValueError as exc:
            raise ConfigError(f"attributes: {exc}") from None
        self.detectors = tuple(self.detectors)
        check(bool(self.detectors) and all(d in DETECTORS for d in self.detectors), "detectors",
              f"a non-empty list drawn from {DETECTORS}")
        check(_is_number(self.min_confidence) and 0.0 <= self.min_confidence <= 1.0, "min_confidence",
              "a number in [0, 1]")
        check(_is_number(self.detection_threshold) and 0.0 <= self.detection_threshold <= 1.0,
              "detection_threshold", "a number in [0, 1]")
        check(_is_int(self.joint_top_k) and self.joint_top_k >= 0, "joint_top_k", "an integer >= 0")
        check(_is_int(self.min_face_size) and self.min_face_size >= 1, "min_face_size", "an integer >= 1")
        check(_is_int(self.max_faces) and self.max_faces >= 1, "max_faces", "an integer >= 1")
        check(_is_int(self.max_side) and self.max_side >= 64, "max_side", "an integer >= 64 (pixels)")
        check(_is_int(self.tiles) and self.tiles >= 0, "tiles", "an integer >= 0")
        check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        check(self.margin == "auto" or (_is_number(self.margin) and 0.0 <= self.margin <= MAX_CROP_MARGIN), "margin",
              f"'auto' (the model's own) or a number in [0, {MAX_CROP_MARGIN:g}]")
        check(isinstance(self.align, bool), "align", "true or false")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ProfilerConfig":
        """Config from a mapping (YAML, ROS parameters); unknown keys are an error naming them.

        `attributes` may be a list of names or a mapping name -> bool (how the YAML switches heads off).
        """
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown settings {unknown}; known: {sorted(names)}")
        attributes = data.get("attributes")
        if isinstance(attributes, Mapping):
            bad = [k for k, v in attributes.items() if not isinstance(v, bool)]
            if bad:
                raise ConfigError(f"attributes: expected true/false for {bad}")
            data["attributes"] = tuple(k for k, on in attributes.items() if on)
        elif isinstance(attributes, str):
            data["attributes"] = tuple(a.strip() for a in attributes.split(",") if a.strip())
        if isinstance(data.get("detectors"), str):
            data["detectors"] = tuple(d.strip() for d in data["detectors"].split(",") if d.strip())
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("extra")
        out["attributes"] = list(self.attributes)
        out["detectors"] = list(self.detectors)
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Profiler:
    """BGR frame -> one FaceProfile per detected face (largest first)."""

    #: seconds between two log lines about dropped faces (the node calls this 30 times a second)
    DROP_LOG_PERIOD = 10.0

    def __init__(self, detector: Any, scorer: ZeroShotScorer, margin: float = DEFAULT_CROP_MARGIN,
                 align: bool = False, logger: Any = None) -> None:
        self.detector = detector
        self.scorer = scorer
        self.margin = margin
        self.align = align
        self.log = logger if logger is not None else _log
        self.last_drops = DetectionDrops()  # faces the last frame's detection dropped (goes into the JSON)
        self.total_drops = DetectionDrops()
        self._unlogged = (DetectionDrops(), 0)  # drops and frames since the last log line
        self._logged_at: float | None = None

    @classmethod
    def from_config(cls, cfg: ProfilerConfig, logger: logging.Logger | None = None,
                    text_cache_dir: str | None = None) -> "Profiler":
        """Load the model and detector the config names (weights from local files only).

        text_cache_dir: keep caption embeddings on disk there (text_cache.py; the CLI's default), None = off.
        """
        loaded = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, models_dir=cfg.models_dir or None)
        text_cache = TextEmbeddingCache.for_model(loaded, text_cache_dir) if text_cache_dir is not None else None
        # A fine-tuned checkpoint was trained on its own captions: score with those unless told otherwise.
        prompts = (load_prompts(cfg.prompts_file) if cfg.prompts_file
                   else prompts_from_dict(loaded.meta.get("prompts")))
        scorer = ZeroShotScorer(loaded, prompts, attributes=cfg.attributes, min_confidence=cfg.min_confidence,
                                joint_top_k=cfg.joint_top_k, batch_size=cfg.batch_size, text_cache=text_cache)
        detector = build_detector(cfg.detectors, models_dir=cfg.models_dir or None, scrfd_path=cfg.scrfd_path,
                                  yunet_path=cfg.yunet_path, score_threshold=cfg.detection_threshold,
                                  min_face_size=cfg.min_face_size, max_faces=cfg.max_faces, logger=logger,
                                  device=cfg.device, max_side=cfg.max_side, tiles=cfg.tiles)
        if cfg.align and not detector.has_landmarks:
            (logger or _log).warning(f"align: true, but detector {detector.name} gives no landmarks: plain crops")
        return cls(detector, scorer, margin=crop_margin(cfg.margin, loaded.meta), align=cfg.align, logger=logger)

    @property
    def model_name(self) -> str:
        return self.scorer.loaded.name

    @property
    def detector_name(self) -> str:
        return self.detector.name

    def warmup(self, sizes: Sequence[int] | None = None) -> None:
        """Encode the prompts and run the image tower once so that the first real frame is not slow.

        sizes: batch sizes to run; default one face, or every fixed batch size of a compiled image tower
        (scorer.compile_image_encoder), which would otherwise compile on the first frame of each size.
        """
        size = self.scorer.loaded.image_size
        for n in sizes or self.scorer.buckets or (1,):
            embeddings = self.scorer.encode_images([np.zeros((size, size, 3), np.uint8)] * n)
            self.scorer.score_embeddings(embeddings)  # encodes the text heads this scorer uses

    def __call__(self, image: np.ndarray) -> list[FaceProfile]:
        """One FaceProfile per face kept; what min_face_size / max_faces dropped is in `last_drops` (and logged)."""
        frame, detections = self.detect(image)
        return [FaceProfile(detection=d, scores=s) for d, s in zip(detections, self.score(frame, detections))]

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, list[Detection]]:
        """(the frame as BGR uint8, the faces kept): the half of __call__ a tracked video runs on every frame."""
        frame = to_bgr8(image)
        counted = getattr(self.detector, "detect_counted", None)
        detections, drops = counted(frame) if counted else (self.detector.detect(frame), DetectionDrops())
        self._note_drops(drops)
        return frame, list(detections)

    def score(self, frame: np.ndarray, detections: Sequence[Detection]) -> list[FaceScores]:
        """The model's estimate for each of these faces of `frame` (from detect), in one batch."""
        if not detections:
            return []
        return self.scorer.score([crop_face(frame, d, margin=self.margin, align=self.align) for d in detections])

    def _note_drops(self, drops: DetectionDrops) -> None:
        """Count drops; log them at once the first time, then at most every DROP_LOG_PERIOD s (summed)."""
        self.last_drops = drops
        self.total_drops = self.total_drops + drops
        pending, frames = self._unlogged
        pending, frames = pending + drops, frames + (1 if drops.total else 0)
        now = time.monotonic()
        if pending.total and (self._logged_at is None or now - self._logged_at >= self.DROP_LOG_PERIOD):
            settings = getattr(self.detector, "min_face_size", "?"), getattr(self.detector, "max_faces", "?")
            where = "in this frame" if frames == 1 and drops.total else f"in {frames} frame(s)"
            self.log.warning(f"dropped {pending.min_face_size} face(s) smaller than min_face_size={settings[0]} px "
                             f"and {pending.max_faces} beyond max_faces={settings[1]} {where}")
            pending, frames, self._logged_at = DetectionDrops(), 0, now
        self._unlogged = (pending, frames)
