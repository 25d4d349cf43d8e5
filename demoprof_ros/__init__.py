"""demoprof_ros: perceived demographic user modelling for social robots with CLIP / FaRL.

From Python (a notebook, a script)::

    import demoprof_ros
    faces = demoprof_ros.profile("photo.jpg", model="auto")   # or a BGR uint8 array
    faces[0]["attributes"]["age"]["label"]

`profile` returns one dict per face, largest first, as `demoprof profile --json` prints them under "faces"
and /user_profile carries them (docs/profile_schema.json, $defs/face). For more control, build the pipeline
once: `Profiler.from_config(ProfilerConfig(...))`, or load a model alone with `load_model`.

The parts: `core` (the ROS-free inference library), `training`, `evaluation` and `ros` (the only part that
imports rclpy); docs/architecture.md. Importing this package is cheap: torch and the models load on first
use (PEP 562 lazy attributes).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Profiler", "ProfilerConfig", "__version__", "load_model", "profile"]

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .core.models import load_model
    from .core.profiler import Profiler, ProfilerConfig

#: Public names loaded on first access, and the module each lives in.
_LAZY = {"Profiler": ".core.profiler", "ProfilerConfig": ".core.profiler", "load_model": ".core.models"}

_last: tuple[str, Any] | None = None  # (settings, Profiler) of the latest profile() call


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def profile(image: str | Path | np.ndarray, model: str = "auto", **config: Any) -> list[dict[str, Any]]:
    """Profile the faces in one image: a path, or an HxWx3 BGR (or HxW grey) array.

    `config`: any ProfilerConfig setting (attributes=("age", "gender"), detectors=("haar",), device="cuda",
    min_confidence=0.5, ...); a bad name or value raises profiler.ConfigError. Returns FaceProfile.to_dict()
    per face, largest first: id (1, 2, ... in that order: a single image has no tracks), box {x, y, width, height},
    detection_score, attributes {name: {label, confidence, undetermined, top, distribution}}, joint [{text,
    probability, ...}], frames_fused, frames_since_scored (0), seconds_since_scored (0.0). The model and
    detector are loaded once and kept for the next call with the same settings.
    """
    global _last
    from .core.images import load_image
    from .core.profiler import Profiler, ProfilerConfig

    cfg = ProfilerConfig.from_dict({**config, "model": model})
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if _last is None or _last[0] != key:
        _last = None  # let the previous model go before the next one loads
        _last = (key, Profiler.from_config(cfg))
    frame = load_image(image) if isinstance(image, (str, Path)) else image
    faces = [face.to_dict() for face in _last[1](frame)]
    for number, face in enumerate(faces, start=1):
        face["id"] = number  # docs/profile_schema.json: every face has an integer id, as the CLI gives stills
    return faces
