"""The JSON lines `demoprof profile --json` prints: one record per frame, error or skipped file.

Each record names its kind in `schema` and is defined in docs/profile_schema.json (`$defs/cli_record`), next
to the node's /user_profile message whose `face` objects it shares.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..core.results import FaceProfile

VERSION = 1
FRAME = "demoprof_ros/cli_profile"
ERROR = "demoprof_ros/cli_error"
SKIPPED = "demoprof_ros/cli_skipped"


def frame_record(source: str, frame: int | None, size: tuple[int, int], model: str, detector: str,
                 latency_ms: float, faces: Sequence[FaceProfile],
                 faces_dropped: dict[str, int] | None = None) -> dict[str, Any]:
    """One profiled image (frame None) or video frame (its index in the video)."""
    record = {"schema": FRAME, "version": VERSION, "source": source, "frame": frame,
              "image": {"width": int(size[0]), "height": int(size[1])}, "model": model, "detector": detector,
              "latency_ms": round(float(latency_ms), 2), "faces": [p.to_dict() for p in faces]}
    if faces_dropped is not None:
        record["faces_dropped"] = faces_dropped
    return record


def error_record(source: str, frame: int | None, error: object) -> dict[str, Any]:
    """An input (file or video frame) that could not be read; it makes the exit status 1."""
    return {"schema": ERROR, "version": VERSION, "source": source, "frame": frame, "error": str(error)}


def skipped_record(source: str, reason: str) -> dict[str, Any]:
    """A file in a folder that is not an image or a video (e.g. .gif, .txt); not an error."""
    return {"schema": SKIPPED, "version": VERSION, "source": source, "reason": reason}
