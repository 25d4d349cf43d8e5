"""`build_detector`: the first back-end of a configurable chain that can run here, and the registry of back-ends.

A new back-end is one module with a FaceDetector subclass plus one `register_detector` entry here.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

from .base import DEFAULT_MAX_SIDE, DetectorUnavailable, FaceDetector, check_settings
from .haar import HaarDetector
from .scrfd import ScrfdDetector, find_scrfd
from .yunet import YuNetDetector, find_yunet

DEFAULT_CHAIN = ("scrfd", "yunet", "haar")

_log = logging.getLogger(__name__)

#: name -> builder(models_dir=, scrfd_path=, yunet_path=, device=, **detector settings) -> FaceDetector
_BUILDERS: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str, builder: Callable[..., FaceDetector]) -> None:
    """Make `name` usable in a detector chain; the builder raises DetectorUnavailable when it cannot run here."""
    _BUILDERS[name] = builder


def available_backends() -> tuple[str, ...]:
    """Registered back-end names, in registration order."""
    return tuple(_BUILDERS)


def build_detector(chain: Sequence[str] | str = DEFAULT_CHAIN, models_dir: str | os.PathLike | None = None,
                   scrfd_path: str | os.PathLike = "", yunet_path: str | os.PathLike = "",
                   score_threshold: float = 0.5, min_face_size: int = 32, max_faces: int = 8,
                   logger: Any = None, *, device: str = "cpu", max_side: int = DEFAULT_MAX_SIDE) -> FaceDetector:
    """The first back-end of `chain` ("scrfd", "yunet", "haar"; a list or "a,b,c") that can run here.

    Logs the pick and why each earlier one was unavailable (info; warning where the user named a path);
    raises DetectorUnavailable listing every reason when none can run, ValueError for bad settings.
    `logger` may be a logging.Logger or an rclpy logger (only .info/.warning with one string are used).
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
    explicit = {"scrfd": bool(scrfd_path), "yunet": bool(yunet_path)}
    reasons: list[str] = []
    for name in names:
        try:
            detector = _BUILDERS[name](models_dir=models_dir, scrfd_path=scrfd_path, yunet_path=yunet_path,
                                       device=device, **settings)
        except DetectorUnavailable as error:
            reasons.append(f"{name}: {error}")
            (log.warning if explicit.get(name) else log.info)(f"face detector {name} unavailable: {error}")
            continue
        skipped = f" - skipped {', '.join(r.split(':')[0] for r in reasons)} (unavailable)" if reasons else ""
        log.info(f"face detector: {detector.name} ({detector.source}){skipped}")
        return detector
    raise DetectorUnavailable("no face detector available: " + "; ".join(reasons))


register_detector("scrfd", lambda models_dir, scrfd_path, yunet_path, device, **s: ScrfdDetector(
    find_scrfd(scrfd_path, models_dir), device=device, **s))
register_detector("yunet", lambda models_dir, scrfd_path, yunet_path, device, **s: YuNetDetector(
    find_yunet(yunet_path, models_dir), **s))
register_detector("haar", lambda models_dir, scrfd_path, yunet_path, device, **s: HaarDetector(**s))
